"""grain input pipelines over random-access sources (TFDS data sources).

A source is anything with ``__len__`` and ``__getitem__`` returning a record
in the schema of ``camjax.data.examples``: "image" uint8 (H, W, 3), "label"
int, "bboxes" normalized TFDS boxes (ymin, xmin, ymax, xmax), optional "mask"
uint8 (H, W, 1) 0/255, "id". ``tfds.data_source(...)`` and
``builder.as_data_source(split)`` are such sources.

Layout of the work:

- Each process reads a disjoint part of the split: training takes the records
  ``process_index::process_count``; evaluation gives global batch k the records
  ``[k G, (k + 1) G)``, process p holding the slice ``[p b, (p + 1) b)`` of it
  (b = G / P), so every record is scored once and every process yields
  ``ceil(N / G)`` batches (the tail is padding with ``valid == False``).
- Reading, decoding and transforming run in grain (thread prefetch, and
  ``worker_count`` worker processes); bad records come back as markers and the
  main process counts, logs and skips them (or raises ``BadDataError``) through a
  ``camjax.data.bad_data.BadDataLog``, then stacks batches.
  Batching outside the workers keeps the batches identical for any
  ``worker_count``, and keeps the iterator state one integer.
- Training state: the number of elements of this process's (shuffled,
  augmented, infinitely repeated) stream consumed so far. Restoring rebuilds
  the stream from there, so a restored iterator yields bitwise the batches an
  uninterrupted one would, whatever ``worker_count`` it runs with.

Batches are dicts of host-local NumPy arrays::

  image     float32 (b, S, S, 3)  normalized (x - mean) / std
  label     int32   (b,)          0 where invalid
  boxes     float32 (b, max_boxes, 4)  inclusive pixel (x0, y0, x1, y1), -1 padded
  num_boxes int32   (b,)
  mask      uint8   (b, S, S)     0/1; only when the source has masks
  valid     bool    (b,)          False for padding and skipped bad records
  index     int64   (b,)          record index in the split; -1 for padding
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterator, Sequence

import numpy as np

from camjax.data import boxes as box_lib, transforms as T
from camjax.data.bad_data import ON_BAD_DATA, BadDataError, BadDataLog, check_policy  # noqa: F401  (re-exported)
from camjax.data.examples import local_batch_size, record_id, source_has_mask

EVAL_MODES = ("resize", "resize_crop")
BOX_ROUNDINGS = ("pixel", "wsol")
AUGMENT_DEFAULTS = {
    "scale": (0.08, 1.0),  # area fraction of the random crop
    "ratio": (3 / 4, 4 / 3),  # aspect ratio range of the random crop
    "flip": True,  # random horizontal flip with probability 1/2
    "attempts": 10,  # crop samples before the centred fallback
}
STATE_FORMAT = "camjax.train_iterator.v1"
# Bad kinds: unreadable, bad_record, bad_image, bad_box, bad_mask; notes: bad_data.NOTE_KINDS.
_MAX_LISTED = 100  # bad records listed by id in the report


# ----------------------------------------------------------------------------
# Argument checks.


def _resolve_processes(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top  (only when not given)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index ({process_index}) must be in [0, process_count={process_count})")
  return int(process_index), int(process_count)


def _check_common(image_size, max_boxes, on_bad_data, worker_count, mean, std):
  if int(image_size) <= 0:
    raise ValueError(f"image_size must be positive, got {image_size}")
  if int(max_boxes) <= 0:
    raise ValueError(f"max_boxes must be positive, got {max_boxes}")
  check_policy(on_bad_data)
  if int(worker_count) < 0:
    raise ValueError(f"worker_count must be >= 0, got {worker_count}")
  if np.asarray(mean).shape != (3,) or np.asarray(std).shape != (3,) or np.any(np.asarray(std) <= 0):
    raise ValueError(f"mean and std must be 3 numbers (std > 0), got {mean!r}, {std!r}")


def _augment_config(augment: dict | None) -> dict:
  cfg = dict(AUGMENT_DEFAULTS)
  unknown = set(augment or {}) - set(cfg)
  if unknown:
    raise ValueError(f"unknown augment keys {sorted(unknown)}; allowed: {sorted(cfg)}")
  cfg.update(augment or {})
  lo, hi = cfg["scale"]
  if not 0 < lo <= hi <= 1:
    raise ValueError(f"augment scale must satisfy 0 < lo <= hi <= 1, got {cfg['scale']}")
  lo, hi = cfg["ratio"]
  if not 0 < lo <= hi:
    raise ValueError(f"augment ratio must satisfy 0 < lo <= hi, got {cfg['ratio']}")
  cfg["scale"] = tuple(float(v) for v in cfg["scale"])
  cfg["ratio"] = tuple(float(v) for v in cfg["ratio"])
  cfg["flip"] = bool(cfg["flip"])
  cfg["attempts"] = int(cfg["attempts"])
  return cfg


def num_eval_batches(num_examples: int, global_batch_size: int, process_count: int) -> int:
  """Batches every process yields in evaluation: ceil(N / global batch)."""
  local_batch_size(global_batch_size, process_count)
  return -(-int(num_examples) // int(global_batch_size))


# ----------------------------------------------------------------------------
# Per-example work (runs in grain threads / worker processes; must pickle).


class HeadSource:
  """The first ``n`` records of a random-access source (0 = all)."""

  def __init__(self, source: Any, n: int = 0):
    self._source = source
    self._n = len(source) if n <= 0 else min(int(n), len(source))
    self.dataset_info = getattr(source, "dataset_info", None)

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> Any:
    if not 0 <= index < self._n:
      raise IndexError(index)
    return self._source[index]


@dataclasses.dataclass(frozen=True)
class _Prepare:
  """Record index -> fixed-shape example dict, or a bad-data marker."""

  source: Any
  mode: str  # "train", "resize" or "resize_crop"
  image_size: int
  max_boxes: int
  has_mask: bool
  mean: tuple
  std: tuple
  augment: dict | None = None
  box_rounding: str = "pixel"
  resize_size: int | None = None

  def __call__(self, index, rng: np.random.Generator | None = None) -> dict:
    index = int(index)
    if index < 0:
      return {"_pad": True}
    try:
      record = self.source[index]
    except Exception as e:  # pylint: disable=broad-except  (decode errors vary by source)
      return _bad(index, f"index {index}", "unreadable", f"{type(e).__name__}: {e}")
    rid = record_id(record, index)
    ex, notes, problem = self._decode(record)
    if problem is not None:
      return _bad(index, rid, *problem)
    if self.mode == "train":
      ex = T.random_resized_crop(ex, rng, self.image_size, scale=self.augment["scale"],
                                 ratio=self.augment["ratio"], attempts=self.augment["attempts"])
      if self.augment["flip"] and rng.random() < 0.5:
        ex = T.horizontal_flip(ex)
    elif self.mode == "resize":
      height, width = ex.image.shape[:2]
      original = ex.boxes
      ex = T.resize(ex, self.image_size)
      if self.box_rounding == "wsol":
        ex = ex._replace(boxes=T.wsol_scale_boxes(original, height, width, self.image_size))
    else:
      ex = T.resize_center_crop(ex, self.image_size, self.resize_size)
    boxes = ex.boxes
    if len(boxes) > self.max_boxes:
      notes.append(("too_many_boxes", f"{len(boxes)} boxes, kept the first {self.max_boxes}"))
      boxes = boxes[: self.max_boxes]
    padded = np.full((self.max_boxes, 4), -1, np.float32)
    padded[: len(boxes)] = boxes
    out = {
        "image": T.normalize(ex.image, self.mean, self.std),
        "label": np.int32(record["label"]),
        "boxes": padded,
        "num_boxes": np.int32(len(boxes)),
        "valid": np.bool_(True),
        "index": np.int64(index),
        "_notes": json.dumps([(kind, rid, detail) for kind, detail in notes]),
    }
    if self.has_mask:
      out["mask"] = (ex.mask > 127).astype(np.uint8)
    return out

  def _decode(self, record):
    """-> (Example, notes, None) or (None, None, (kind, detail))."""
    if not isinstance(record, dict) or "image" not in record or "label" not in record:
      keys = sorted(record) if isinstance(record, dict) else type(record).__name__
      return None, None, ("bad_record", f"record lacks image or label (has {keys})")
    try:
      np.int32(record["label"])
    except (TypeError, ValueError, OverflowError) as e:
      return None, None, ("bad_record", f"label {record['label']!r} is not an integer: {e}")
    try:
      image = T.as_rgb(record["image"])
    except ValueError as e:
      return None, None, ("bad_image", str(e))
    height, width = image.shape[:2]
    raw = box_lib.normalized_to_pixel_unchecked(record.get("bboxes", []), height, width)
    boxes, num_clipped, problems = T.check_boxes(raw, height, width)
    if problems:
      return None, None, ("bad_box", "; ".join(problems))
    notes = []
    if num_clipped:
      notes.append(("clipped_box", f"{num_clipped} box(es) partly outside the image, clipped"))
    mask = None
    if self.has_mask:
      mask = record.get("mask")
      if mask is None:
        return None, None, ("bad_mask", "record has no mask but the source has masks")
      mask = np.asarray(mask)
      if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
      if mask.shape != (height, width):
        return None, None, ("bad_mask", f"mask shape {mask.shape} != image {height}x{width}")
      mask = np.ascontiguousarray(mask.astype(np.uint8))
    return T.Example(image, boxes, mask), notes, None


def _bad(index: int, rid: str, kind: str, detail: str) -> dict:
  return {"_bad": json.dumps([kind, rid, detail]), "index": np.int64(index)}


# ----------------------------------------------------------------------------
# Bad-data bookkeeping (main process).


def _log_bad(bad_log: BadDataLog, marker: dict) -> None:
  """Count a bad-record marker from ``_bad`` (raises ``BadDataError`` under on_bad_data='fail')."""
  kind, rid, detail = json.loads(marker["_bad"])
  bad_log.bad(rid, kind, detail, index=int(marker["index"]))


def _log_notes(bad_log: BadDataLog, notes_json: str) -> None:
  for kind, rid, detail in json.loads(notes_json):
    bad_log.note(rid, kind, detail)


# ----------------------------------------------------------------------------
# Batching (main process).


def _pad_example(image_size: int, max_boxes: int, has_mask: bool) -> dict:
  out = {
      "image": np.zeros((image_size, image_size, 3), np.float32),
      "label": np.int32(0),
      "boxes": np.full((max_boxes, 4), -1, np.float32),
      "num_boxes": np.int32(0),
      "valid": np.bool_(False),
      "index": np.int64(-1),
  }
  if has_mask:
    out["mask"] = np.zeros((image_size, image_size), np.uint8)
  return out


def _stack(examples: Sequence[dict]) -> dict:
  keys = [k for k in examples[0] if not k.startswith("_")]
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in keys}


def _ensure_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app they are unparsed."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _grain_iterator(dataset, worker_count: int, buffer: int, read_threads: int):
  import grain  # pylint: disable=g-import-not-at-top
  ds = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=read_threads, prefetch_buffer_size=max(buffer, read_threads)))
  if worker_count > 0:
    _ensure_flags_parsed()
    # Only images and masks are worth a shared-memory segment; small arrays pickle.
    ds = grain.experimental.WithOptionsIterDataset(
        ds, grain.experimental.DatasetOptions(min_shm_size=16384))
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=max(2, buffer // worker_count)))
  return iter(ds)


def _close(it) -> None:
  close = getattr(it, "close", None)
  if close is not None:
    close()


# ----------------------------------------------------------------------------
# Training.


class TrainIterator:
  """Infinite iterator of training batches with a JSON-serialisable state."""

  def __init__(self, source, *, local_batch_size: int, image_size: int, seed: int,
               process_index: int, process_count: int, augment: dict, mean, std,
               max_boxes: int, on_bad_data: str, worker_count: int, read_threads: int, masks: bool = True):
    import grain  # pylint: disable=g-import-not-at-top
    self.local_batch_size = local_batch_size
    self.seed = int(seed)
    self.process_index = process_index
    self.process_count = process_count
    self.num_records = len(source)
    self.worker_count = int(worker_count)
    self._read_threads = int(read_threads)
    self._shard_size = len(range(process_index, self.num_records, process_count))
    if self._shard_size == 0:
      raise ValueError(f"the split has {self.num_records} records, fewer than "
                       f"process_count ({process_count}); use a larger split")
    self.has_mask = masks and source_has_mask(source)
    self._log = BadDataLog(f"train[{process_index}/{process_count}]", on_bad_data, max_listed=_MAX_LISTED)
    prepare = _Prepare(source=source, mode="train", image_size=int(image_size),
                       max_boxes=int(max_boxes), has_mask=self.has_mask,
                       mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
                       augment=augment)
    # Different (but fixed) shuffles and augmentation streams on each process.
    shuffle_seed, augment_seed = (int(v) for v in np.random.SeedSequence(
        [self.seed, process_index, process_count]).generate_state(2))
    self._dataset = (grain.MapDataset.range(self.num_records)
                     .slice(slice(process_index, None, process_count))
                     .shuffle(seed=shuffle_seed)
                     .random_map(prepare, seed=augment_seed)
                     .repeat())
    self._next_index = 0
    self._iter = None

  # Iteration.
  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> dict:
    if self._iter is None:
      self._iter = _grain_iterator(self._dataset[self._next_index:], self.worker_count,
                                   2 * self.local_batch_size, self._read_threads)
    examples = []
    consecutive_bad = 0
    while len(examples) < self.local_batch_size:
      element = next(self._iter)
      self._next_index += 1
      if "_bad" in element:
        _log_bad(self._log, element)
        consecutive_bad += 1
        if consecutive_bad >= self._shard_size:
          raise BadDataError(f"{self._log.what}: a whole pass over the shard "
                             f"({self._shard_size} records) found no usable record")
        continue
      consecutive_bad = 0
      _log_notes(self._log, element["_notes"])
      examples.append(element)
    return _stack(examples)

  # State.
  def get_state(self) -> dict:
    """JSON-serialisable position of this process's stream (plus the bad-data counters)."""
    return {
        "format": STATE_FORMAT,
        "next_index": self._next_index,
        "seed": self.seed,
        "process_index": self.process_index,
        "process_count": self.process_count,
        "local_batch_size": self.local_batch_size,
        "num_records": self.num_records,
        "bad_data": self._log.state(),
    }

  def set_state(self, state: dict | bytes | str) -> None:
    """Continues from a `get_state()` result (a dict, or its JSON as str/bytes)."""
    if isinstance(state, (bytes, str)):
      state = json.loads(state)
    if state.get("format") != STATE_FORMAT:
      raise ValueError(f"not a training iterator state (format {state.get('format')!r}, "
                       f"expected {STATE_FORMAT!r})")
    for key in ("seed", "process_index", "process_count", "local_batch_size", "num_records"):
      if state[key] != getattr(self, key):
        raise ValueError(f"iterator state has {key}={state[key]} but this iterator has "
                         f"{key}={getattr(self, key)}; restore with the same data settings")
    self.close()
    self._next_index = int(state["next_index"])
    self._log.load(state.get("bad_data", {}))

  def checkpointable(self) -> "_GrainCheckpointView":
    """A view for orbax through grain's handler: `grain.checkpoint.CheckpointSave(it.checkpointable())`.

    grain's handler writes one JSON file per process, which is what this state needs.
    """
    return _GrainCheckpointView(self)

  # Diagnostics and cleanup.
  def bad_data_report(self) -> dict:
    return self._log.report()

  def close(self) -> None:
    """Stops grain's prefetch threads and worker processes (restarted on the next batch)."""
    if self._iter is not None:
      _close(self._iter)
      self._iter = None

  def __enter__(self) -> "TrainIterator":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except  (interpreter shutdown)
      pass


class _GrainCheckpointView:
  """get_state/set_state as JSON bytes, the protocol of grain.checkpoint's handler."""

  def __init__(self, iterator: TrainIterator):
    self._iterator = iterator

  def get_state(self) -> bytes:
    return json.dumps(self._iterator.get_state()).encode()

  def set_state(self, state: bytes) -> None:
    self._iterator.set_state(state)

  def start_prefetch(self) -> None:
    pass


def train_iterator(source, *, global_batch_size: int, image_size: int, seed: int,
                   process_index: int | None = None, process_count: int | None = None,
                   augment: dict | None = None, mean=T.IMAGENET_MEAN, std=T.IMAGENET_STD,
                   max_boxes: int = 16, on_bad_data: str = "skip", worker_count: int = 0,
                   read_threads: int = 4, masks: bool = True) -> TrainIterator:
  """Shuffled, augmented, infinitely repeated batches of this process's share of `source`.

  Local batch size is global_batch_size // process_count; `augment` overrides
  `AUGMENT_DEFAULTS` (random-resized crop and horizontal flip). Batches do not
  depend on `worker_count` (grain worker processes) or `read_threads` (grain
  reader threads per process); a state saved with one value restores with any.
  ``masks=False`` leaves out the source's masks (nothing else changes: the crops
  and flips are drawn the same), for training that does not read them.
  """
  process_index, process_count = _resolve_processes(process_index, process_count)
  local = local_batch_size(global_batch_size, process_count)
  _check_common(image_size, max_boxes, on_bad_data, worker_count, mean, std)
  if len(source) == 0:
    raise ValueError("the training source is empty")
  return TrainIterator(source, local_batch_size=local, image_size=int(image_size), seed=seed,
                       process_index=process_index, process_count=process_count,
                       augment=_augment_config(augment), mean=mean, std=std,
                       max_boxes=int(max_boxes), on_bad_data=on_bad_data,
                       worker_count=int(worker_count), read_threads=read_threads, masks=masks)


# ----------------------------------------------------------------------------
# Evaluation.


class EvalBatches:
  """Finite, re-iterable evaluation batches of one process; `len()` is the same on all."""

  def __init__(self, source, *, local_batch_size: int, global_batch_size: int, image_size: int,
               mode: str, process_index: int, process_count: int, mean, std, max_boxes: int,
               on_bad_data: str, worker_count: int, box_rounding: str, resize_size: int | None,
               read_threads: int, records: Sequence[int] | None = None):
    import grain  # pylint: disable=g-import-not-at-top
    self.local_batch_size = local_batch_size
    records = np.arange(len(source)) if records is None else np.asarray(records, np.int64).reshape(-1)
    self.num_records = len(records)
    self.num_batches = num_eval_batches(self.num_records, global_batch_size, process_count)
    self.image_size = image_size
    self.max_boxes = max_boxes
    self.worker_count = worker_count
    self.has_mask = source_has_mask(source)
    self._read_threads = read_threads
    self._what = f"eval[{process_index}/{process_count}]"
    self._log = BadDataLog(self._what, on_bad_data, max_listed=_MAX_LISTED)
    prepare = _Prepare(source=source, mode=mode, image_size=image_size, max_boxes=max_boxes,
                       has_mask=self.has_mask, mean=tuple(float(v) for v in mean),
                       std=tuple(float(v) for v in std), box_rounding=box_rounding,
                       resize_size=resize_size)
    # Position j of this process -> global position k G + p b + s -> record or padding.
    batch = np.arange(self.num_batches)[:, None]
    slot = np.arange(local_batch_size)[None, :]
    positions = (batch * global_batch_size + process_index * local_batch_size + slot).reshape(-1)
    self.indices = np.append(records, -1)[np.minimum(positions, self.num_records)]  # past the end: padding
    self._dataset = grain.MapDataset.source(self.indices.tolist()).map(prepare)

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[dict]:
    self._log = BadDataLog(self._what, self._log.on_bad_data, max_listed=_MAX_LISTED)
    it = _grain_iterator(self._dataset, self.worker_count, 2 * self.local_batch_size,
                         self._read_threads)
    pad = _pad_example(self.image_size, self.max_boxes, self.has_mask)
    try:
      for _ in range(self.num_batches):
        examples = []
        for _ in range(self.local_batch_size):
          element = next(it)
          if "_pad" in element:
            examples.append(pad)
          elif "_bad" in element:
            _log_bad(self._log, element)
            examples.append(dict(pad, index=element["index"]))
          else:
            _log_notes(self._log, element["_notes"])
            examples.append(element)
        yield _stack(examples)
    finally:
      _close(it)

  def bad_data_report(self) -> dict:
    """Bad-data counts of the current (or last) pass."""
    return self._log.report()


def eval_batches(source, *, global_batch_size: int, image_size: int, mode: str = "resize",
                 process_index: int | None = None, process_count: int | None = None,
                 mean=T.IMAGENET_MEAN, std=T.IMAGENET_STD, max_boxes: int = 16,
                 on_bad_data: str = "fail", worker_count: int = 0,
                 box_rounding: str = "pixel", resize_size: int | None = None,
                 read_threads: int = 4, records: Sequence[int] | None = None) -> EvalBatches:
  """Every record of `source` (or only its ``records``, by index) once across processes, in padded batches.

  A batch's ``valid`` marks its real rows and ``index`` their record indices in ``source``.

  mode "resize": the image straight to image_size^2 (the WSOL standard);
  "resize_crop": shorter side to resize_size (default image_size * 256 / 224),
  centre crop. box_rounding "wsol" scales boxes as the WSOL evaluation code
  does (int(x * S / W), mode "resize" only); "pixel" keeps them aligned with
  the resampled pixels.
  """
  process_index, process_count = _resolve_processes(process_index, process_count)
  local = local_batch_size(global_batch_size, process_count)
  _check_common(image_size, max_boxes, on_bad_data, worker_count, mean, std)
  if mode not in EVAL_MODES:
    raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
  if box_rounding not in BOX_ROUNDINGS:
    raise ValueError(f"box_rounding must be one of {BOX_ROUNDINGS}, got {box_rounding!r}")
  if box_rounding == "wsol" and mode != "resize":
    raise ValueError("box_rounding='wsol' is defined for mode='resize' only")
  if resize_size is not None and resize_size < image_size:
    raise ValueError(f"resize_size ({resize_size}) must be >= image_size ({image_size})")
  return EvalBatches(source, local_batch_size=local, global_batch_size=global_batch_size,
                     image_size=int(image_size), mode=mode, process_index=process_index,
                     process_count=process_count, mean=mean, std=std, max_boxes=int(max_boxes),
                     on_bad_data=on_bad_data, worker_count=int(worker_count),
                     box_rounding=box_rounding, resize_size=resize_size,
                     read_threads=int(read_threads), records=records)
