"""Launch scripts: --help, argument errors, and the commands their dry runs print."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from _train_helpers import ROOT

LAUNCH = os.path.join(ROOT, "launch")
FLAGS = ["--config=configs/googlenet_gap.py", "--workdir=gs://bucket/runs/g"]


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
  ssh = [l for l in lines if l[4] == "ssh"]
  assert len(ssh) == 3 and all("--worker=all" in l for l in ssh)
  assert "pip install" in ssh[1][-1] and ".camjax-req" in ssh[1][-1]  # setup skips unchanged workers
  run = ssh[2][-1]
  assert run.startswith("--command=cd ~/camjax && CAMJAX_DISTRIBUTED=1 ~/camjax-venv/bin/python -m camjax.main ")
  assert shlex.split(run.split("camjax.main ", 1)[1]) == FLAGS
  assert lines[-1][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod"]


def test_tpu_pod_requires_zone_and_flags_for_run():
  assert sh("tpu_pod.sh", "--dry-run", "run", "--", *FLAGS).returncode == 2
  assert sh("tpu_pod.sh", "--dry-run", "--zone", "z", "run").returncode == 2


def test_slurm_dry_run_submits_and_the_job_runs_one_process_per_gpu(tmp_path):
  out = sh("slurm_gpu.sh", "--dry-run", "-N", "2", "-g", "4", "-p", "gpu", "--", *FLAGS)
  assert out.returncode == 0, out.stderr
  sbatch = shlex.split(out.stdout.splitlines()[0])
  assert sbatch[0] == "sbatch" and "--nodes=2" in sbatch and "--ntasks-per-node=4" in sbatch
  assert "--partition=gpu" in sbatch and "--inside-job" in sbatch and sbatch[-2:] == FLAGS
  # Inside the allocation (SLURM environment faked, scontrol stubbed): the coordinator is the first node.
  stub = tmp_path / "scontrol"
  stub.write_text("#!/bin/sh\necho node7\necho node8\n")
  stub.chmod(0o755)
  env = {"SLURM_JOB_NODELIST": "node[7-8]", "SLURM_NTASKS": "8", "PATH": f"{tmp_path}:{os.environ['PATH']}"}
  inner = sh("slurm_gpu.sh", "--inside-job", "--dry-run", "-N", "2", "-g", "4", "--", *FLAGS, env=env)
  assert inner.returncode == 0, inner.stderr
  srun = shlex.split(inner.stdout.strip())
  assert srun[:4] == ["srun", "--ntasks=8", "--ntasks-per-node=4", "--kill-on-bad-exit=1"]
  assert srun[4:6] == ["bash", "-c"]
  body = srun[6]
  assert "CUDA_VISIBLE_DEVICES=$SLURM_LOCALID" in body
  assert "--coordinator_address=node7:12355 --num_processes=8 --process_id=$SLURM_PROCID" in body
  # One process per node: no per-GPU visibility, one task per node.
  per_node = sh("slurm_gpu.sh", "--inside-job", "--dry-run", "-N", "2", "-g", "4", "--per", "node", "--", *FLAGS,
                env=dict(env, SLURM_NTASKS="2"))
  srun = shlex.split(per_node.stdout.strip())
  assert per_node.returncode == 0, per_node.stderr
  assert srun[1:3] == ["--ntasks=2", "--ntasks-per-node=1"] and "CUDA_VISIBLE_DEVICES" not in srun[6]
