"""The record every camjax data set yields, and the build-time checks behind it.

Every builder (``camjax_shapes``, ``ilsvrc2012_loc``, ``cub200_2011``) stores the
same features so the input pipeline treats them alike. Decoded by
``builder.as_data_source(split)`` or ``tfds.data_source`` a record is a dict:

- ``"image"``: uint8 (H, W, 3). Stored as the original JPEG bytes where the
  source has them (ILSVRC, CUB), PNG for the built-in data set.
- ``"label"``: int64 class index; ``builder.info.features["label"].names`` are
  the class names.
- ``"bboxes"``: float32 (N, 4) normalized ``(ymin, xmin, ymax, xmax)`` (TFDS
  convention), every ground-truth box of the image; N may be 0 (ILSVRC training
  images without boxes). ``normalized_to_pixel`` turns them into inclusive pixel
  boxes ``(x0, y0, x1, y1)``.
- ``"mask"``: uint8 (H, W, 1) with values 0 or 255, the object's pixels. Present
  in the built-in data set and in CUB's ``masks`` config only: check
  ``"mask" in record``.
- ``"id"``: bytes/str, a stable image id (``"train/000123"``, or the image's path
  relative to the data set root, as the WSOL evaluation metadata writes it).

Pixel <-> normalized convention: the inclusive pixel box ``(x0, y0, x1, y1)``
covers the continuous interval ``[x0, x1 + 1)``, so ``xmin = x0 / W`` and
``xmax = (x1 + 1) / W``; the two conversions below are exact inverses on integer
boxes.

Bad data met while building (an undecodable image, an impossible box, a listed
file that is missing) is counted per split with the image id, logged as a
warning, written to ``bad_examples.json`` beside the prepared data, and either
skipped or refused (``on_bad_data="skip"|"fail"``; by default training splits
skip and evaluation splits fail).
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import os
from typing import Any, Iterable

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

log = logging.getLogger("camjax.data")

ON_BAD_DATA = ("skip", "fail")
BAD_EXAMPLES_FILE = "bad_examples.json"


def features(*, with_mask: bool, names: list[str] | None = None) -> Any:
  """The shared TFDS feature dict; label names may be set later (at generation)."""
  spec = {
      "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      "label": tfds.features.ClassLabel(names=names) if names else tfds.features.ClassLabel(),
      "bboxes": tfds.features.Sequence(tfds.features.BBoxFeature()),
      "id": tfds.features.Text(),
  }
  if with_mask:
    spec["mask"] = tfds.features.Image(shape=(None, None, 1), dtype=np.uint8, encoding_format="png")
  return tfds.features.FeaturesDict(spec)


# ---------------------------------------------------------------- boxes


def pixel_to_normalized(boxes: Any, height: int, width: int) -> np.ndarray:
  """Inclusive pixel boxes (..., 4) ``(x0, y0, x1, y1)`` -> normalized ``(ymin, xmin, ymax, xmax)``."""
  b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
  out = np.stack([b[:, 1] / height, b[:, 0] / width, (b[:, 3] + 1) / height, (b[:, 2] + 1) / width], axis=-1)
  return np.clip(out, 0.0, 1.0).astype(np.float32).reshape(np.shape(boxes)[:-1] + (4,))


def normalized_to_pixel(boxes: Any, height: int, width: int) -> np.ndarray:
  """Normalized ``(ymin, xmin, ymax, xmax)`` (..., 4) -> inclusive int pixel boxes ``(x0, y0, x1, y1)``."""
  b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
  x0 = np.round(b[:, 1] * width)
  y0 = np.round(b[:, 0] * height)
  x1 = np.round(b[:, 3] * width) - 1
  y1 = np.round(b[:, 2] * height) - 1
  out = np.stack([x0, y0, np.maximum(x1, x0), np.maximum(y1, y0)], axis=-1)
  out = np.clip(out, 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.int64)
  return out.reshape(np.shape(boxes)[:-1] + (4,))


# ---------------------------------------------------------------- bad data


class BadExample(Exception):
  """One example that cannot be built; ``kind`` is one of corrupt_image, bad_box, missing_file, ..."""

  def __init__(self, kind: str, detail: str):
    super().__init__(f"{kind}: {detail}")
    self.kind = kind
    self.detail = detail


class BadDataError(RuntimeError):
  """Raised when a split built with ``on_bad_data="fail"`` meets bad data."""


def default_policy(split: str) -> str:
  """Training splits skip bad examples (with a warning); evaluation splits refuse them."""
  return "skip" if split == "train" else "fail"


class BadDataLog:
  """Counts the bad examples of one build, per split, and applies the skip/fail policy."""

  def __init__(self, dataset: str, on_bad_data: str | None = None):
    if on_bad_data is not None and on_bad_data not in ON_BAD_DATA:
      raise ValueError(f"on_bad_data must be one of {ON_BAD_DATA} or None (skip for train, fail otherwise), got {on_bad_data!r}")
    self.dataset = dataset
    self.on_bad_data = on_bad_data
    self.examples: dict[str, list[dict[str, str]]] = {}

  def policy(self, split: str) -> str:
    return self.on_bad_data or default_policy(split)

  def report(self, split: str, example_id: str, error: BadExample) -> None:
    """Record one bad example; raise ``BadDataError`` if the split's policy is fail."""
    entry = {"id": example_id, "kind": error.kind, "detail": error.detail}
    self.examples.setdefault(split, []).append(entry)
    policy = self.policy(split)
    if policy == "fail":
      raise BadDataError(
          f"{self.dataset} split {split!r}: bad example {example_id!r} ({error}); "
          "fix or remove it, or build with on_bad_data='skip' to leave it out")
    log.warning("%s split %r: skipping bad example %r (%s)", self.dataset, split, example_id, error)

  def counts(self) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split, entries in self.examples.items():
      per_kind: dict[str, int] = {}
      for e in entries:
        per_kind[e["kind"]] = per_kind.get(e["kind"], 0) + 1
      out[split] = per_kind
    return out

  def write(self, directory: str | os.PathLike) -> str:
    """Write ``bad_examples.json`` (counts and ids per split) and log a summary line per split."""
    path = os.path.join(os.fspath(directory), BAD_EXAMPLES_FILE)
    payload = {"dataset": self.dataset, "counts": self.counts(), "examples": self.examples}
    with open(path, "w") as f:
      json.dump(payload, f, indent=1, sort_keys=True)
    for split, per_kind in self.counts().items():
      log.warning("%s split %r: %d bad examples skipped %s; ids in %s",
                  self.dataset, split, sum(per_kind.values()), per_kind, path)
    return path


def read_bad_examples(builder: Any) -> dict[str, Any]:
  """The ``bad_examples.json`` of a prepared builder (empty counts if it has none)."""
  path = os.path.join(os.fspath(builder.data_dir), BAD_EXAMPLES_FILE)
  if not os.path.exists(path):
    return {"dataset": builder.name, "counts": {}, "examples": {}}
  with open(path) as f:
    return json.load(f)


class BuilderMixin:
  """What every camjax builder adds to ``tfds.core.GeneratorBasedBuilder`` (put it first in the bases).

  - ``on_bad_data`` as a constructor argument; generators build each record
    through ``self._emit(split, id, make)``, which reports a ``BadExample``
    and yields None for it, and ``bad_examples.json`` is written beside the
    prepared data.
  - ArrayRecord as the default file format, so ``tfds.data_source(name)``
    can prepare the data set without TensorFlow.
  - ``code_path`` from the class's file: TFDS's own lookup needs the
    ``importlib_resources`` backport, which Python >= 3.9 installs do not have.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:
    try:
      return epath.Path(inspect.getfile(cls))
    except (TypeError, OSError):
      return None

  def __init__(self, *, on_bad_data: str | None = None, **kwargs):
    self._bad_data = BadDataLog(self.name, on_bad_data)
    # ArrayRecord by default: random access for grain, and TFRecord writing needs TensorFlow.
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _emit(self, split: str, example_id: str, make):
    """``make()``, or None after reporting it when it raises ``BadExample`` (the policy may raise instead)."""
    try:
      return make()
    except BadExample as e:
      self._bad_data.report(split, example_id, e)
      return None

  def download_and_prepare(self, *args, **kwargs):
    already = self.data_path.exists() and os.path.exists(os.path.join(os.fspath(self.data_path), "dataset_info.json"))
    self._bad_data.examples.clear()
    result = super().download_and_prepare(*args, **kwargs)
    if not already or self._bad_data.examples:
      self._bad_data.write(self.data_dir)
    return result


# ---------------------------------------------------------------- images and boxes


def encode_png(array: np.ndarray) -> bytes:
  """PNG bytes of a uint8 (H, W), (H, W, 1) or (H, W, 3) array (deterministic for a given zlib)."""
  a = np.asarray(array, dtype=np.uint8)
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format="PNG", compress_level=6)
  return buf.getvalue()


def check_image(data: bytes) -> tuple[bytes, int, int]:
  """Decode ``data`` fully to prove it is an image; return (bytes to store, height, width).

  RGB or greyscale JPEG/PNG bytes are kept unchanged; other modes (CMYK, palette,
  alpha, 16 bit) are converted to RGB and stored as PNG, losslessly, so every
  stored image decodes to 3 channels. Raises ``BadExample("corrupt_image")``.
  """
  try:
    with Image.open(io.BytesIO(data)) as img:
      fmt, mode, (width, height) = img.format, img.mode, img.size
      keep = fmt in ("JPEG", "PNG") and mode in ("RGB", "L")
      if keep and fmt == "JPEG":
        # Decode at 1/8 scale: every byte is still read (truncation and corruption
        # still raise), at a fraction of the cost of a full decode.
        img.draft(mode, (max(1, width // 8), max(1, height // 8)))
      img.load()
      if keep:
        return data, height, width
      rgb = np.asarray(img.convert("RGB"))
  except Exception as e:  # PIL raises many types for broken files
    raise BadExample("corrupt_image", f"cannot decode image ({type(e).__name__}: {e})") from None
  if width < 1 or height < 1:
    raise BadExample("corrupt_image", f"empty image {width}x{height}")
  return encode_png(rgb), height, width


def _round(v: float) -> int:
  """Round half up, so shifting a coordinate by 1 shifts its pixel by 1 (``round`` rounds half to even)."""
  return int(np.floor(v + 0.5))


def check_box(box: Iterable[float], height: int, width: int) -> tuple[int, int, int, int]:
  """Validate an inclusive pixel box against the image size; return it as ints clipped to the image.

  One pixel of slack is allowed at the far edges (annotations that are 1-based or
  write ``x + w``); anything else outside the image, or with x1 < x0 or y1 < y0,
  raises ``BadExample("bad_box")``.
  """
  x0, y0, x1, y1 = (float(v) for v in box)
  if not all(np.isfinite([x0, y0, x1, y1])):
    raise BadExample("bad_box", f"non-finite box {(x0, y0, x1, y1)}")
  if x1 < x0 or y1 < y0:
    raise BadExample("bad_box", f"box {(x0, y0, x1, y1)} has x1 < x0 or y1 < y0")
  if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
    raise BadExample("bad_box", f"box {(x0, y0, x1, y1)} outside the {width}x{height} image")
  xs = _round(x0), min(_round(x1), width - 1)
  ys = _round(y0), min(_round(y1), height - 1)
  if xs[0] > width - 1 or ys[0] > height - 1:
    raise BadExample("bad_box", f"box {(x0, y0, x1, y1)} outside the {width}x{height} image")
  return xs[0], ys[0], max(xs[1], xs[0]), max(ys[1], ys[0])


def binary_mask_png(data: bytes, height: int, width: int) -> bytes:
  """A stored 0/255 mask from any greyscale PNG (foreground where value > 127); sizes must match."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      a = np.asarray(img.convert("L"))
  except Exception as e:
    raise BadExample("corrupt_mask", f"cannot decode mask ({type(e).__name__}: {e})") from None
  if a.shape != (height, width):
    raise BadExample("corrupt_mask", f"mask is {a.shape[1]}x{a.shape[0]}, image is {width}x{height}")
  return encode_png(np.where(a > 127, 255, 0).astype(np.uint8))


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
  """Inclusive pixel box ``(x0, y0, x1, y1)`` of the nonzero pixels of a 2-D mask, or None if empty."""
  m = np.asarray(mask)
  if m.ndim == 3:
    m = m[..., 0]
  rows = np.flatnonzero(m.any(axis=1))
  cols = np.flatnonzero(m.any(axis=0))
  if rows.size == 0:
    return None
  return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def checked_example(data: bytes, label: int | None, boxes_px: Iterable[Iterable[float]], example_id: str, *,
                    num_classes: int, declared_size: tuple[int, int] | None = None,
                    mask: bytes | None = None) -> dict[str, Any]:
  """Validate one source example and make its record; raise ``BadExample`` if it cannot be used.

  ``boxes_px`` are inclusive pixel boxes checked against, and normalized by,
  ``declared_size`` (width, height) from the annotation when given, else the
  decoded image size. ``mask`` is raw mask file bytes (binarized here).
  """
  image, height, width = check_image(data)
  if label is None or not 0 <= int(label) < num_classes:
    raise BadExample("bad_label", f"label {label!r} not in [0, {num_classes})")
  bw, bh = declared_size if declared_size and min(declared_size) > 0 else (width, height)
  boxes = [check_box(b, bh, bw) for b in boxes_px]
  if mask is not None:
    mask = binary_mask_png(mask, height, width)
  return example(image, int(label), boxes, bh, bw, example_id, mask=mask)


def example(image: bytes, label: int, boxes_px: list[tuple[int, int, int, int]], height: int, width: int,
            example_id: str, mask: bytes | None = None) -> dict[str, Any]:
  """One record ready for TFDS from pixel boxes (converted to normalized here)."""
  norm = pixel_to_normalized(np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4), height, width)
  rec = {
      "image": image,
      "label": int(label),
      "bboxes": [tfds.features.BBox(*map(float, b)) for b in norm],
      "id": example_id,
  }
  if mask is not None:
    rec["mask"] = mask
  return rec
