"""Two processes x 2 CPU devices (jax.distributed on 127.0.0.1) match one process x 4 devices.

The two processes are started by launch/local_multiprocess.sh, the launcher users run.
Their checkpoint then restores in this (single-device) process. With the kernels split over
``mesh.model`` on two processes, the report still draws its pictures from the whole model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import portpicker

import _train_helpers as h
from camjax import train
import tiny_config

STEPS = ["--config.training.num_steps=4", "--config.training.checkpoint_every=4"]


def launch_two_processes(workdir: str, logs: str, *flags: str, devices: int = 2) -> subprocess.Popen:
  """Two processes x ``devices`` CPU devices running the tiny config in train_and_eval mode, logs in ``logs``."""
  launcher = [os.path.join(h.ROOT, "launch", "local_multiprocess.sh"), "-n", "2", "-d", str(devices),
              "-p", str(portpicker.pick_unused_port()), "-l", logs, "--python", sys.executable,
              "--", f"--config={h.TINY}", f"--workdir={workdir}", "--mode=train_and_eval", *flags]
  return subprocess.Popen(launcher, cwd=h.ROOT, env=h.env(1))


def test_two_processes_match_one_process_and_restore_in_one(tmp_path):
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  launched = launch_two_processes(multi, str(tmp_path / "logs"), *STEPS)
  reference = h.run(h.cli(single, *STEPS, mode="train_and_eval"), devices=4)
  assert launched.wait(timeout=240) == 0, open(tmp_path / "logs" / "process_0.log").read()[-3000:]
  assert reference.returncode == 0, reference.stderr[-3000:]

  # Same global batches, same program: the same losses (collectives may reorder float sums).
  multi_losses, single_losses = h.losses(multi), h.losses(single)
  assert sorted(multi_losses) == [1, 2, 3, 4]
  np.testing.assert_allclose([multi_losses[s] for s in range(1, 5)], [single_losses[s] for s in range(1, 5)],
                             rtol=1e-5)
  # Only process 0 writes metrics: one record per step, then one eval record.
  assert len(open(os.path.join(multi, "metrics.jsonl")).read().splitlines()) == 5
  # Each process scored its half of the eval split; the counts were summed.
  multi_eval = json.load(open(os.path.join(multi, "eval_results.json")))
  single_eval = json.load(open(os.path.join(single, "eval_results.json")))
  assert multi_eval["num_images"] == single_eval["num_images"] == 16
  assert multi_eval["classification"] == single_eval["classification"]
  assert multi_eval["paper"]["num_images"] == multi_eval["wsol"]["num_images"] == 16
  assert h.checkpoint_steps(multi) == [4]

  # The checkpoint the two processes wrote restores in one process with one device.
  c = tiny_config.get_config()
  c.training.num_steps = 4
  restored = train.restore_for_eval(c, multi)
  assert restored.step == 4 and restored.mesh.devices.size == jax.device_count()
  saved = h.read_state(multi)
  for path, leaf in jax.tree_util.tree_flatten_with_path(restored.state["params"])[0]:
    key = "params/" + "/".join(str(getattr(k, "key", k)) for k in path)
    np.testing.assert_array_equal(np.asarray(leaf), saved[key])
  single_state = h.read_state(single)
  for key, value in saved.items():
    if key.startswith("params/"):
      np.testing.assert_allclose(value, single_state[key], rtol=1e-4, atol=1e-6)


def test_report_gathers_kernels_split_over_model_on_two_processes(tmp_path):
  # mesh (data=2, model=2) over 2 processes x 2 devices: kernels split over 'model' are global arrays
  # that are not fully addressable on process 0, so every process takes part in gathering them
  # before process 0 draws. (A model axis across processes is refused by validate_config: each
  # process reads its own batch rows.)
  workdir, logs = tmp_path / "run", tmp_path / "logs"
  launched = launch_two_processes(str(workdir), str(logs), "--config.training.num_steps=1",
                                  "--config.training.checkpoint_every=1", "--config.mesh.model=2",
                                  "--config.report.enabled=True", "--config.report.num_images=4", devices=2)
  assert launched.wait(timeout=240) == 0, "".join(
      f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("*.log")))
  for name in ("metrics.json", "report.html", "cam_grid.png", "top5.png", "class_units.png"):
    assert (workdir / name).is_file(), name
  summary = json.load(open(workdir / "metrics.json"))
  assert summary["step"] == 1 and summary["num_images"] == 16
