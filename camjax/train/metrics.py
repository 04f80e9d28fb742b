"""Metrics to a JSON-lines file and TensorBoard events in the workdir (process 0 only).

Each line of ``metrics.jsonl`` is one record ``{"step": int, "split": str, name: value, ...}``
so runs can be read back with nothing but ``json``. A run that resumes from step S
opens its writer with ``resume_step=S``: the records and TensorBoard events of the
steps after S, which the resumed run writes again, are dropped first, so every
curve has one value per step.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any, Mapping

import numpy as np

METRICS_FILE = "metrics.jsonl"

log = logging.getLogger("camjax.metrics")


def _plain(value: Any) -> Any:
  """Python scalars for JSON from numpy / jax scalars (NaN and Inf are written as JSON's NaN / Infinity)."""
  if hasattr(value, "item") and np.ndim(value) == 0:
    return value.item()
  return value


def drop_records_after(path: str, step: int) -> int:
  """Remove the records of ``path`` whose step is past ``step``; returns how many lines went.

  A line that is not JSON (a write cut short by a killed process) goes too. The
  file is replaced atomically: a crash leaves either the old or the new file.
  """
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8") as f:
    lines = [line for line in f.read().splitlines() if line.strip()]
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(record, dict) and int(record.get("step", 0)) <= step:
      kept.append(line)
  if len(kept) == len(lines):
    return 0
  handle, tmp = tempfile.mkstemp(prefix=f".{METRICS_FILE}.", dir=os.path.dirname(os.path.abspath(path)))
  try:
    with os.fdopen(handle, "w", encoding="utf-8") as f:
      f.write("".join(line + "\n" for line in kept))
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  return len(lines) - len(kept)


class MetricsWriter:
  """Writes scalars to ``metrics.jsonl`` and TensorBoard; a no-op when ``enabled`` is False.

  ``resume_step=S`` first drops what an earlier run wrote for steps after S: the
  records of ``metrics.jsonl`` and (through tensorboardX's ``purge_step``) the
  TensorBoard events.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True,
               resume_step: int | None = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._file = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None:
      dropped = drop_records_after(self.path, resume_step)
      if dropped:
        log.info("dropped %d records past step %d from %s", dropped, resume_step, self.path)
    self._file = open(self.path, "a", encoding="utf-8")
    if self._file.tell() > 0 and not _ends_with_newline(self.path):
      self._file.write("\n")  # the last line was cut short: start a new one
    if tensorboard:
      from tensorboardX import SummaryWriter  # imported lazily: slow to import

      # Events with step >= purge_step in older event files are hidden from TensorBoard.
      purge = None if resume_step is None else int(resume_step) + 1
      self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"), purge_step=purge)

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


def _ends_with_newline(path: str) -> bool:
  with open(path, "rb") as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


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
