"""Metrics to a JSON-lines file and TensorBoard events in the workdir (process 0 only).

Each line of ``metrics.jsonl`` is one record ``{"step": int, "split": str, name: value, ...}``
so runs can be read back with nothing but ``json``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import numpy as np

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
  """Python scalars for JSON from numpy / jax scalars (NaN and Inf are written as JSON's NaN / Infinity)."""
  if hasattr(value, "item") and np.ndim(value) == 0:
    return value.item()
  return value


class MetricsWriter:
  """Writes scalars to ``metrics.jsonl`` and TensorBoard; a no-op when ``enabled`` is False."""

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._file = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._file = open(self.path, "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # imported lazily: slow to import
      self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, Any], *, split: str = "train") -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split, "time": time.time()}
    record.update({k: _plain(v) for k, v in scalars.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for name, value in record.items():
        if name in ("step", "split", "time") or not isinstance(value, (int, float)):
          continue
        self._tb.add_scalar(f"{split}/{name}", value, int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
  """All records of ``metrics.jsonl`` (optionally one split), in file order."""
  path = os.path.join(workdir, METRICS_FILE)
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if line:
        record = json.loads(line)
        if split is None or record.get("split") == split:
          records.append(record)
  return records
