"""Build-time checks: every builder turns a source file into a record through these.

The record schema itself is ``camjax.data.examples``; boxes follow
``camjax.data.boxes``; bad data is counted, reported and skipped or refused by
``camjax.data.bad_data`` (by default training splits skip and evaluation splits
fail), and each build writes ``bad_examples.json`` beside the prepared data.
"""

from __future__ import annotations

import inspect
import io
import os
from typing import Any, Callable, Iterable

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from camjax.data import bad_data, examples
from camjax.data.bad_data import BadDataLog, BadExample
from camjax.errors import MissingFileError


class LayoutConfig(tfds.core.BuilderConfig):
  """A builder config of a manual download: its ``layout`` ("official" or "wsol") and where WSOL metadata is."""

  dataset = ""  # the data set's name, for the error message

  def __init__(self, *, layout: str = "official", metadata_dir: str | None = None, image_root: str | None = None,
               **kwargs):
    super().__init__(**kwargs)
    if layout not in ("official", "wsol"):
      raise ValueError(f"{self.dataset} layout must be 'official' or 'wsol', got {layout!r}")
    self.layout = layout
    self.metadata_dir = metadata_dir
    self.image_root = image_root


class BuilderMixin:
  """What every camjax builder adds to ``tfds.core.GeneratorBasedBuilder`` (put it first in the bases).

  - ``on_bad_data`` as a constructor argument; generators build each record
    through ``self._emit(split, id, make)``, which reports a ``BadExample``
    and yields None for it (or report one with ``self._report_bad``), and
    ``bad_examples.json`` is written beside the prepared data.
  - ArrayRecord as the default file format, so ``tfds.data_source(name)``
    can prepare the data set without TensorFlow.
  - ``code_path`` from the class's file: TFDS's own lookup needs the
    ``importlib_resources`` backport, which Python >= 3.9 installs do not have.
  """

  def require_manual_files(self, manual: str, find_missing: Callable[[str], list[str]], *, layout: str) -> None:
    """One line naming what the user's download folder lacks (``find_missing``), or that it does not exist.

    ``layout`` names the README section that shows the expected files.
    """
    if not os.path.isdir(manual):
      raise MissingFileError(f"{self.name}: manual folder {manual} does not exist; set manual_dir to the folder "
                             f"holding the downloads (see the README: {layout} layout)")
    missing = find_missing(manual)
    if missing:
      raise MissingFileError(f"{self.name}/{self.builder_config.name}: missing in {manual}: {', '.join(missing)} "
                             f"(see the README: {layout} layout)")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:
    try:
      return epath.Path(inspect.getfile(cls))
    except (TypeError, OSError):
      return None

  def __init__(self, *, on_bad_data: str | None = None, **kwargs):
    bad_data.check_policy(on_bad_data, allow_default=True)
    self._on_bad_data = on_bad_data
    self._bad_logs: dict[str, BadDataLog] = {}
    # ArrayRecord by default: random access for grain, and TFRecord writing needs TensorFlow.
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _bad_log(self, split: str) -> BadDataLog:
    if split not in self._bad_logs:
      self._bad_logs[split] = BadDataLog(
          f"{self.name} split {split!r}", self._on_bad_data or bad_data.default_policy(split),
          fix="fix or remove it, or build with on_bad_data='skip' to leave it out")
    return self._bad_logs[split]

  def _report_bad(self, split: str, example_id: str, error: BadExample) -> None:
    """Count one bad example of ``split``; raises ``BadDataError`` if the split's policy is fail."""
    self._bad_log(split).bad(example_id, error.kind, error.detail)

  def _emit(self, split: str, example_id: str, make):
    """``make()``, or None after reporting it when it raises ``BadExample`` (the policy may raise instead)."""
    try:
      return make()
    except BadExample as e:
      self._report_bad(split, example_id, e)
      return None

  def download_and_prepare(self, *args, **kwargs):
    already = self.data_path.exists() and os.path.exists(os.path.join(os.fspath(self.data_path), "dataset_info.json"))
    self._bad_logs.clear()
    result = super().download_and_prepare(*args, **kwargs)
    if not already or any(lg.records for lg in self._bad_logs.values()):
      bad_data.write_bad_examples(self.data_dir, self.name, self._bad_logs)
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
  return examples.stored_record(image, int(label), boxes, bh, bw, example_id, mask=mask)

