"""The record every camjax data set yields: what a source returns, key by key.

A source is anything with ``__len__`` and ``__getitem__(index)`` returning one
record (``Source``): ``builder.as_data_source(split)`` and
``tfds.data_source(...)`` for the TFDS builders (``camjax_shapes``,
``ilsvrc2012_loc``, ``cub200_2011``, which all store the same ``features``),
and ``camjax.data.synthetic.SyntheticSource``. A record is a dict:

- ``"image"``: uint8 (H, W, 3). Stored as the original JPEG bytes where the
  data set has them (ILSVRC, CUB), PNG for the built-in data set. The synthetic
  source alone gives float32 (S, S, 3) in [0, 1], already at the model's input
  size, and is batched as it is.
- ``"label"``: int64 class index; ``camjax.data.label_names(builder)`` are the
  class names.
- ``"bboxes"``: float32 (N, 4) normalized ``(ymin, xmin, ymax, xmax)`` (TFDS
  convention), every ground-truth box of the image; N may be 0 (ILSVRC training
  images without boxes). ``camjax.data.boxes`` converts them to inclusive pixel
  boxes ``(x0, y0, x1, y1)``.
- ``"mask"``: uint8 (H, W, 1) with values 0 or 255, the object's pixels. Present
  in the built-in data set and in CUB's ``masks`` config only: check
  ``"mask" in record`` (or ``source_has_mask``). OpenImages30k's records carry
  it too (the union of the image's listed masks).
- ``"ignore"``: uint8 (H, W, 1) 0/255, the WSOL standard's ignore region, left
  out of PxAP (``openimages30k`` only).
- ``"id"``: bytes/str, a stable image id (``"train/000123"``, or the image's path
  relative to the data set root, as the WSOL evaluation metadata writes it).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from camjax.data import boxes as box_lib
from camjax.errors import UserError

KEYS = ("image", "label", "bboxes", "id")  # in every record
OPTIONAL_KEYS = ("mask", "ignore")
ENDLESS = 1 << 40  # the length of a source that never runs out (it has no epochs)


class Source(Protocol):
  """Random access to the records of one split."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> dict[str, Any]: ...


def features(*, with_mask: bool, names: list[str] | None = None) -> Any:
  """The TFDS feature dict every builder stores; label names may be set later (at generation)."""
  import tensorflow_datasets as tfds

  spec = {
      "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      "label": tfds.features.ClassLabel(names=names) if names else tfds.features.ClassLabel(),
      "bboxes": tfds.features.Sequence(tfds.features.BBoxFeature()),
      "id": tfds.features.Text(),
  }
  if with_mask:
    spec["mask"] = tfds.features.Image(shape=(None, None, 1), dtype=np.uint8, encoding_format="png")
  return tfds.features.FeaturesDict(spec)


def stored_record(image: bytes, label: int, boxes_px: Any, height: int, width: int, example_id: str,
                  mask: bytes | None = None) -> dict[str, Any]:
  """One record ready for TFDS to store, from encoded image bytes and inclusive pixel boxes."""
  import tensorflow_datasets as tfds

  norm = box_lib.pixel_to_normalized(np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4), height, width)
  rec = {
      "image": image,
      "label": int(label),
      "bboxes": [tfds.features.BBox(*map(float, b)) for b in norm],
      "id": example_id,
  }
  if mask is not None:
    rec["mask"] = mask
  return rec


def record_id(record: Any, index: int) -> str:
  """The record's id as text, or ``"index N"`` when it has none."""
  rid = record.get("id") if isinstance(record, dict) else None
  if rid is None:
    return f"index {index}"
  if isinstance(rid, np.ndarray):
    rid = rid.item() if rid.shape == () else rid.tolist()
  if isinstance(rid, bytes):
    return rid.decode("utf-8", "replace")
  return str(rid)


def source_has_mask(source: Source) -> bool:
  """Whether records carry "mask": from TFDS features if known, else the first readable record."""
  info = getattr(source, "dataset_info", None)
  feats = getattr(info, "features", None)
  if feats is not None:
    try:
      return "mask" in feats
    except TypeError:
      pass
  for i in range(min(len(source), 16)):
    try:
      record = source[i]
    except Exception:  # pylint: disable=broad-except  (a bad record; try the next)
      continue
    return isinstance(record, dict) and "mask" in record
  return False


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  """The rows of a global batch one process reads: the batch must split evenly over the processes."""
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise UserError(f"global batch size {global_batch_size} must be a positive multiple of the {process_count} "
                    "processes; change the batch size")
  return global_batch_size // process_count
