"""Launch scripts: --help, argument errors, and the commands their dry runs print."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

from _train_helpers import ROOT

LAUNCH = os.path.join(ROOT, "launch")
FLAGS = ["--config=configs/googlenet_gap.py", "--workdir=gs://bucket/runs/g"]


def fake(directory, name: str, body: str) -> str:
  """An executable bash script ``directory/name`` with ``body``; returns its path."""
  path = directory / name
  path.write_text("#!/usr/bin/env bash\n" + body)
  path.chmod(0o755)
  return str(path)


def recorded(path) -> list[str]:
  """The argv a fake wrote with printf '%s\\0'."""
  return path.read_bytes().decode().split("\0")[:-1]


def sh(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  e = dict(os.environ, **(env or {}))
  return subprocess.run(["bash", os.path.join(LAUNCH, script), *args], capture_output=True, text=True, env=e,
                        timeout=60)


@pytest.mark.parametrize("script", ["tpu_pod.sh", "slurm_gpu.sh", "local_multiprocess.sh"])
def test_help_and_unknown_option(script):
  ok = sh(script, "--help")
  assert ok.returncode == 0 and ok.stdout.startswith("Usage: launch/" + script)
  bad = sh(script, "--no-such-option")
  assert bad.returncode == 2 and "unknown" in bad.stderr


def test_local_multiprocess_dry_run_starts_one_process_per_id():
  out = sh("local_multiprocess.sh", "--dry-run", "-n", "3", "-d", "2", "-p", "4321", "--python", "py",
           "--", *FLAGS)
  assert out.returncode == 0, out.stderr
  lines = [shlex.split(line) for line in out.stdout.splitlines()]
  assert len(lines) == 3
  for i, cmd in enumerate(lines):
    assert cmd[:3] == ["env", "JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=2"]
    assert cmd[3:6] == ["py", "-m", "camjax.main"]
    assert cmd[6:9] == ["--coordinator_address=127.0.0.1:4321", "--num_processes=3", f"--process_id={i}"]
    assert cmd[9:] == FLAGS


def test_tpu_pod_dry_run_all_steps_in_order():
  out = sh("tpu_pod.sh", "--dry-run", "--zone", "us-central2-b", "--type", "v4-32", "--name", "pod", "--spot",
           "all", "--", *FLAGS)
  assert out.returncode == 0, out.stderr
  lines = [shlex.split(line) for line in out.stdout.splitlines()]
  assert lines[0][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod"]
  assert "--accelerator-type=v4-32" in lines[0] and "--spot" in lines[0] and "--zone=us-central2-b" in lines[0]
  assert lines[1][:2] == ["git", "-C"] and "archive" in lines[1]
  assert lines[2][4] == "scp" and "--worker=all" in lines[2]
  ssh = [line for line in lines if line[4] == "ssh"]
  assert len(ssh) == 3 and all("--worker=all" in line for line in ssh)
  assert "pip install" in ssh[1][-1] and ".camjax-req" in ssh[1][-1]  # setup skips unchanged workers
  run = ssh[2][-1]
  assert run.startswith("--command=cd ~/camjax && CAMJAX_DISTRIBUTED=1 ~/camjax-venv/bin/python -m camjax.main ")
  assert shlex.split(run.split("camjax.main ", 1)[1]) == FLAGS
  assert lines[-1][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod"]


def test_tpu_pod_requires_zone_and_flags_for_run():
  assert sh("tpu_pod.sh", "--dry-run", "run", "--", *FLAGS).returncode == 2
  assert sh("tpu_pod.sh", "--dry-run", "--zone", "z", "run").returncode == 2


def coordinator_port(stderr: str) -> str:
  """The port the launcher announced on stderr."""
  ports = re.findall(r"^local_multiprocess\.sh: coordinator 127\.0\.0\.1:(\d+)", stderr, re.M)
  assert len(ports) == 1, stderr
  return ports[0]


def test_local_multiprocess_dry_run_prints_the_port_and_the_commands_a_run_executes(tmp_path):
  record = tmp_path / "record"
  record.mkdir()
  # An interpreter that records what it is started with (and picks ports with the real one).
  py = fake(tmp_path, "py", f'if [ "$1" = -c ]; then exec {shlex.quote(sys.executable)} "$@"; fi\n'
            f'printf "%s\\0" env "JAX_PLATFORMS=$JAX_PLATFORMS" "XLA_FLAGS=$XLA_FLAGS" "$0" "$@" '
            f'> {shlex.quote(str(record))}/"$$"\n')

  def ran() -> list[list[str]]:
    argvs = [recorded(f) for f in record.iterdir()]
    for f in record.iterdir():
      f.unlink()
    return sorted(argvs, key=lambda argv: [a for a in argv if a.startswith("--process_id=")])

  dry = sh("local_multiprocess.sh", "--dry-run", "-n", "2", "-d", "2", "--python", py, "--", *FLAGS)
  assert dry.returncode == 0, dry.stderr
  port = coordinator_port(dry.stderr)
  assert f"give -p {port}" in dry.stderr
  printed = [shlex.split(line) for line in dry.stdout.splitlines()]
  assert len(printed) == 2 and all(f"--coordinator_address=127.0.0.1:{port}" in cmd for cmd in printed)
  with socket.socket() as s:  # picked free, not a fixed number
    s.bind(("127.0.0.1", int(port)))
  assert ran() == []  # a dry run starts nothing

  # On that port, a real run executes exactly the printed commands.
  real = sh("local_multiprocess.sh", "-n", "2", "-d", "2", "-p", port, "--python", py, "--", *FLAGS)
  assert real.returncode == 0, real.stderr
  assert coordinator_port(real.stderr) == port
  assert ran() == printed
  # Without -p a real run picks its own port, says which, and its processes use it.
  picked = sh("local_multiprocess.sh", "-n", "2", "--python", py, "--", *FLAGS)
  assert picked.returncode == 0, picked.stderr
  port = coordinator_port(picked.stderr)
  assert [a for cmd in ran() for a in cmd if a.startswith("--coordinator")] == [
      f"--coordinator_address=127.0.0.1:{port}"] * 2


def test_slurm_dry_run_prints_the_sbatch_and_srun_commands_the_job_executes(tmp_path):
  record = tmp_path / "record"
  record.mkdir()
  rec = shlex.quote(str(record))
  # sbatch starts the script as the job on node7 and node8; srun starts task 5 (local GPU 1) there.
  fake(tmp_path, "sbatch", f'printf "%s\\0" sbatch "$@" > {rec}/sbatch\n'
       'while [[ "$1" == --* ]]; do [[ "$1" == --chdir=* ]] && cd "${1#--chdir=}"; shift; done\n'
       'SLURM_JOB_NODELIST="node[7-8]" exec bash "$@"\n')
  fake(tmp_path, "scontrol", "echo node7\necho node8\n")
  fake(tmp_path, "srun", f'printf "%s\\0" srun "$@" > {rec}/srun\n'
       'while [[ "$1" == --* ]]; do shift; done\n'
       'SLURM_PROCID=5 SLURM_LOCALID=1 exec "$@"\n')
  py = fake(tmp_path, "py", f'printf "%s\\0" "$@" > {rec}/python\necho "$CUDA_VISIBLE_DEVICES" > {rec}/gpu\n')
  env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
  flags = [*FLAGS, "--config.model.name=it's a name"]  # survives both levels of quoting
  args = ["-N", "2", "-g", "4", "-p", "gpu", "--python", py, "--", *flags]

  dry = sh("slurm_gpu.sh", "--dry-run", *args, env=env)
  assert dry.returncode == 0, dry.stderr
  sbatch, srun = (shlex.split(line) for line in dry.stdout.splitlines())
  assert not (record / "sbatch").exists()
  real = sh("slurm_gpu.sh", *args, env=env)
  assert real.returncode == 0, real.stderr
  assert recorded(record / "sbatch") == sbatch
  assert recorded(record / "srun") == srun
  assert srun[:5] == ["srun", "--ntasks=8", "--ntasks-per-node=4", "--kill-on-bad-exit=1", "--export=ALL"]
  assert "CUDA_VISIBLE_DEVICES=$SLURM_LOCALID" in srun[-1]
  # What each process finally runs: the first node as coordinator, its rank, the user's flags intact.
  assert recorded(record / "python") == ["-m", "camjax.main", "--coordinator_address=node7:12355",
                                         "--num_processes=8", "--process_id=5", *flags]
  assert (record / "gpu").read_text().strip() == "1"

  # One process per node: one task per node, every GPU visible; the job's own dry run prints the same line.
  per_node = sh("slurm_gpu.sh", "--dry-run", "--per", "node", *args, env=env)
  srun = shlex.split(per_node.stdout.splitlines()[1])
  assert srun[1:3] == ["--ntasks=2", "--ntasks-per-node=1"] and "CUDA_VISIBLE_DEVICES" not in srun[-1]
  inside = sh("slurm_gpu.sh", "--inside-job", "--dry-run", "--per", "node", *args,
              env=dict(env, SLURM_JOB_NODELIST="node[7-8]"))
  assert inside.returncode == 0, inside.stderr
  assert shlex.split(inside.stdout) == srun and "coordinator node7:12355" in inside.stderr


@pytest.mark.parametrize("script, args, says", [
    ("local_multiprocess.sh", ["-n"], "-n needs a value"),
    ("local_multiprocess.sh", ["-n", "two", "--", *FLAGS], "-n must be a positive whole number"),
    ("local_multiprocess.sh", ["-d", "0", "--", *FLAGS], "-d must be a positive whole number"),
    ("local_multiprocess.sh", ["-p", "99999", "--", *FLAGS], "-p must be a port number from 1 to 65535"),
    ("local_multiprocess.sh", ["-l", "--dry-run", "--", *FLAGS], "-l needs a value, got the option --dry-run"),
    ("slurm_gpu.sh", ["--nodes=", "--", *FLAGS], "--nodes needs a value"),
    ("slurm_gpu.sh", ["-N", "2x", "--", *FLAGS], "-N must be a positive whole number"),
    ("slurm_gpu.sh", ["-g", "-1", "--", *FLAGS], "-g needs a value"),
    ("slurm_gpu.sh", ["--per", "socket", "--", *FLAGS], "--per must be gpu or node"),
    ("slurm_gpu.sh", ["--inside-job", "--", *FLAGS], "SLURM_JOB_NODELIST is not set"),
    ("tpu_pod.sh", ["run", "--zone"], "--zone needs a value"),
    ("tpu_pod.sh", ["--zone", "z", "lunch", "--", *FLAGS], "unknown step lunch"),
])
def test_bad_input_fails_with_one_line_saying_what_to_change(script, args, says):
  out = sh(script, *args, env={"SLURM_JOB_NODELIST": ""})
  assert out.returncode == 2 and out.stdout == ""
  assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"{script}: "), out.stderr
  assert says in out.stderr and "(see --help)" in out.stderr
