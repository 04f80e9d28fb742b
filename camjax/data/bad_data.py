"""Bad data, met while building a data set or while reading it: one error, one log.

An example that cannot be used (an undecodable image, an impossible box, a
listed file that is missing, a record without a label) is counted by kind, listed
with its id, logged as a warning, and then skipped or refused according to the
``on_bad_data`` policy ("skip" or "fail"). Refusing raises ``BadDataError``, a
``UserError``, so the commands print it on one line.

Where the policy is not given, training splits skip and evaluation splits fail
(``default_policy``): a training set loses a few images, a score never silently
covers fewer images than the split has.

Notes (a box clipped to the image, boxes beyond ``max_boxes``) are counted and
logged too, but the example is used.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from typing import Any, Mapping

from camjax.errors import UserError

log = logging.getLogger("camjax.data")

ON_BAD_DATA = ("skip", "fail")
BAD_EXAMPLES_FILE = "bad_examples.json"
NOTE_KINDS = ("clipped_box", "too_many_boxes")  # counted and logged, the example is still used
_MAX_LOGGED_NOTES = 20  # per kind and log; counting continues


class BadExample(Exception):
  """One example that cannot be used; ``kind`` is one of corrupt_image, bad_box, missing_file, ..."""

  def __init__(self, kind: str, detail: str):
    super().__init__(f"{kind}: {detail}")
    self.kind = kind
    self.detail = detail


class BadDataError(UserError):
  """Bad data met with ``on_bad_data="fail"``; the message names the example and how to go on."""


def default_policy(split: str) -> str:
  """Training splits skip bad examples (with a warning); evaluation splits refuse them."""
  return "skip" if split == "train" else "fail"


def check_policy(on_bad_data: str | None, *, allow_default: bool = False) -> None:
  """Refuse a policy other than "skip" or "fail" (or None, where the split's default applies)."""
  if on_bad_data is None and allow_default:
    return
  if on_bad_data not in ON_BAD_DATA:
    default = " or None (skip for train, fail otherwise)" if allow_default else ""
    raise ValueError(f"on_bad_data must be one of {ON_BAD_DATA}{default}, got {on_bad_data!r}")


class BadDataLog:
  """Counts, lists and logs the bad examples of one pass over one split, and applies the skip/fail policy.

  ``what`` names the pass in messages ("camjax_shapes split 'train'", "eval[0/2]");
  ``fix`` ends the error message; ``max_listed`` bounds the listed examples
  (None: all of them). Counting never stops.
  """

  def __init__(self, what: str, on_bad_data: str = "skip", *,
               fix: str = "set on_bad_data='skip' to skip such examples", max_listed: int | None = None):
    check_policy(on_bad_data)
    self.what = what
    self.on_bad_data = on_bad_data
    self.fix = fix
    self.max_listed = max_listed
    self.counts: collections.Counter = collections.Counter()
    self.records: list[dict[str, Any]] = []
    self._logged: collections.Counter = collections.Counter()

  def bad(self, example_id: str, kind: str, detail: str, *, index: int | None = None) -> None:
    """Record one bad example; raise ``BadDataError`` if the policy is fail, else log that it is skipped."""
    self.counts[kind] += 1
    entry: dict[str, Any] = {"id": example_id, "kind": kind, "detail": detail}
    if index is not None:
      entry["index"] = int(index)
    if self.max_listed is None or len(self.records) < self.max_listed:
      self.records.append(entry)
    where = kind if index is None else f"index {index}, {kind}"
    if self.on_bad_data == "fail":
      raise BadDataError(f"{self.what}: bad example {example_id!r} ({where}): {detail}; {self.fix}")
    log.warning("%s: skipping bad example %r (%s): %s", self.what, example_id, where, detail)

  def note(self, example_id: str, kind: str, detail: str) -> None:
    """Count a usable example worth a warning (``NOTE_KINDS``); the first few of each kind are logged."""
    self.counts[kind] += 1
    self._logged[kind] += 1
    if self._logged[kind] <= _MAX_LOGGED_NOTES:
      suffix = " (further ones are only counted)" if self._logged[kind] == _MAX_LOGGED_NOTES else ""
      log.warning("%s: record %r: %s%s", self.what, example_id, detail, suffix)

  @property
  def skipped(self) -> int:
    return sum(n for kind, n in self.counts.items() if kind not in NOTE_KINDS)

  def report(self) -> dict:
    """{"skipped": n, "counts": {kind: n}, "records": [{id, kind, detail[, index]}, ...]}."""
    return {"skipped": self.skipped, "counts": dict(self.counts), "records": list(self.records)}

  def state(self) -> dict:
    """JSON-serialisable counts and list (saved with a training iterator's position)."""
    return {"counts": dict(self.counts), "records": list(self.records)}

  def load(self, state: dict) -> None:
    self.counts = collections.Counter(state.get("counts", {}))
    self.records = list(state.get("records", []))


def write_bad_examples(directory: str | os.PathLike, dataset: str, logs: Mapping[str, BadDataLog]) -> str:
  """Write ``bad_examples.json`` (counts and examples per split) and log a summary line per split."""
  path = os.path.join(os.fspath(directory), BAD_EXAMPLES_FILE)
  used = {split: lg for split, lg in logs.items() if lg.records}
  payload = {"dataset": dataset, "counts": {split: dict(lg.counts) for split, lg in used.items()},
             "examples": {split: list(lg.records) for split, lg in used.items()}}
  with open(path, "w") as f:
    json.dump(payload, f, indent=1, sort_keys=True)
  for split, lg in used.items():
    log.warning("%s split %r: %d bad examples skipped %s; ids in %s", dataset, split, lg.skipped, dict(lg.counts), path)
  return path


def read_bad_examples(builder: Any) -> dict[str, Any]:
  """The ``bad_examples.json`` of a prepared builder (empty counts if it has none)."""
  path = os.path.join(os.fspath(builder.data_dir), BAD_EXAMPLES_FILE)
  if not os.path.exists(path):
    return {"dataset": builder.name, "counts": {}, "examples": {}}
  with open(path) as f:
    return json.load(f)
