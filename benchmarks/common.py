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
