"""Timing helpers shared by the benchmarks: warm-up, repeats, median, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable


def median_seconds(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
  """Median wall time of ``fn()`` after ``warmup`` calls; ``fn`` must block until its result is ready."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def alternating_medians(fns: dict[str, Callable[[], Any]], *, repeats: int = 5, warmup: int = 2,
                        settle: int = 2) -> dict[str, float]:
  """Median wall time of each blocking ``fn``, the functions taking turns so that all see the same machine load.

  Each turn first makes ``settle`` untimed calls: a library whose threads spin after
  their work (PyTorch's OpenMP pool does) would otherwise slow the first call of the next one.
  """
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      for _ in range(settle):
        fn()
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def machine() -> dict[str, Any]:
  """What the numbers were measured on."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}
  try:
    import jax

    info["jax"] = jax.__version__
    info["backend"] = jax.default_backend()
    info["devices"] = len(jax.devices())
  except ImportError:
    pass
  return info
