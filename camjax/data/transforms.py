"""Box-aware image transforms for one example, in NumPy and PIL.

An example is an image (H, W, 3) uint8, its boxes (n, 4) int64 in inclusive
pixel coordinates (x0, y0, x1, y1) and an optional mask (H, W) uint8. Every
geometric transform here is "take a rectangle of the input (in continuous
coordinates, the pixel (i, j) covering [j, j+1) x [i, i+1)) and resample it to
an output grid", so the image, the mask and the boxes move together:

- The image is resampled with PIL's bilinear filter (antialiased when
  shrinking) and the mask with nearest neighbour, both with pixel-centre
  alignment: output pixel u samples input position l + (u + 0.5) / s. The
  mask follows exactly the rule the boxes follow, ties included.
- A box covers the extent [x0, x1 + 1). It maps to [(x0 - l) s, (x1 + 1 - l) s)
  and back to inclusive integers by keeping the output pixels whose centres fall
  inside that extent: x0' = ceil(lo - 1/2), x1' = ceil(hi - 1/2) - 1. That is
  the rule a thresholded, resampled filled rectangle follows, so a box and the
  rectangle drawn from it stay aligned (within one pixel) through any chain of
  these transforms.
- A box cut by the output window is clipped to it; it is dropped only when no
  part of its extent is left inside the window. A sliver thinner than a pixel
  that survives is kept as one pixel.

Conversions to and from normalized TFDS boxes, and the tight box around a
mask, are in ``camjax.data.boxes``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image

from camjax.data import boxes as box_lib

# ImageNet statistics on the 0..1 scale (the convention of every camjax config).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_EPS = 1e-6


class Example(NamedTuple):
  """One decoded example on the host."""

  image: np.ndarray  # (H, W, 3) uint8
  boxes: np.ndarray  # (n, 4) int64 inclusive pixel (x0, y0, x1, y1)
  mask: np.ndarray | None = None  # (H, W) uint8 or None


# ----------------------------------------------------------------------------
# Box checks (conventions: ``camjax.data.boxes``).


# The old name of ``boxes.pixel_to_normalized``, kept for callers outside the package (benchmarks).
pixel_to_normalized_boxes = box_lib.pixel_to_normalized


def check_boxes(boxes: np.ndarray, height: int, width: int):
  """Sorts pixel boxes into usable and impossible ones.

  Returns (boxes int64 clipped to the image, number clipped, list of problems).
  A box with a non-finite coordinate, x1 < x0 or y1 < y0, or lying entirely
  outside the image is a problem (the caller treats the record as bad data). A
  box partly outside the image is clipped to it and counted; this happens in
  real annotations (a box drawn to the border, off by one) and the part inside
  is still meaningful.
  """
  b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
  problems = []
  for i, (x0, y0, x1, y1) in enumerate(b):
    if not np.all(np.isfinite((x0, y0, x1, y1))):
      problems.append(f"box {i} has a non-finite coordinate")
    elif x1 < x0 or y1 < y0:
      problems.append(f"box {i} {_fmt(b[i])} has x1 < x0 or y1 < y0")
    elif x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
      problems.append(f"box {i} {_fmt(b[i])} lies outside the {width}x{height} image")
  if problems:
    return np.zeros((0, 4), np.int64), 0, problems
  limits = np.array([width - 1, height - 1, width - 1, height - 1], np.float64)
  clipped = np.clip(b, 0, limits)
  num_clipped = int(np.sum(np.any(clipped != b, axis=1)))
  return clipped.astype(np.int64), num_clipped, problems


def _fmt(box) -> str:
  return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def _map_axis(lo_in, hi_in, offset: float, scale: float, size: int):
  """Maps extents [lo_in, hi_in) through x -> (x - offset) * scale on one axis.

  Returns inclusive integer (start, end) of the output pixels whose centres lie
  inside the mapped extent, clipped to [0, size - 1], and whether anything of
  the extent is left inside [0, size).
  """
  lo = (lo_in - offset) * scale
  hi = (hi_in - offset) * scale
  alive = (hi > _EPS) & (lo < size - _EPS)
  start = np.ceil(lo - 0.5 - _EPS)
  end = np.ceil(hi - 0.5 - _EPS) - 1
  start = np.clip(start, 0, size - 1)
  end = np.clip(end, 0, size - 1)
  # A sliver thinner than a pixel keeps the pixel holding its middle.
  thin = end < start
  mid = np.clip(np.floor((np.maximum(lo, 0) + np.minimum(hi, size)) / 2), 0, size - 1)
  start = np.where(thin, mid, start)
  end = np.where(thin, mid, end)
  return start, end, alive


def map_boxes(boxes: np.ndarray, region: Sequence[float],
              out_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Boxes through "resample `region` = (left, top, right, bottom) to `out_size` = (h, w)".

  Returns (kept boxes (m, 4) int64, indices of the kept input boxes).
  """
  b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
  left, top, right, bottom = (float(v) for v in region)
  out_h, out_w = out_size
  sx = out_w / (right - left)
  sy = out_h / (bottom - top)
  x0, x1, ok_x = _map_axis(b[:, 0], b[:, 2] + 1, left, sx, out_w)
  y0, y1, ok_y = _map_axis(b[:, 1], b[:, 3] + 1, top, sy, out_h)
  keep = np.nonzero(ok_x & ok_y)[0]
  out = np.stack([x0, y0, x1, y1], axis=1)[keep].astype(np.int64)
  return out, keep


# ----------------------------------------------------------------------------
# Geometric transforms of a whole example.


def crop_resize(ex: Example, region: Sequence[float], out_size: tuple[int, int]) -> Example:
  """Resamples the `region` (left, top, right, bottom; continuous coords) to `out_size` (h, w)."""
  out_h, out_w = out_size
  box = tuple(float(v) for v in region)
  image = np.asarray(Image.fromarray(ex.image).resize(
      (out_w, out_h), Image.BILINEAR, box=box))
  mask = None
  if ex.mask is not None:
    rows = _nearest(box[1], box[3], out_h, ex.mask.shape[0])
    cols = _nearest(box[0], box[2], out_w, ex.mask.shape[1])
    mask = ex.mask[rows[:, None], cols[None, :]]
  boxes, _ = map_boxes(ex.boxes, box, out_size)
  return Example(image, boxes, mask)


def _nearest(start: float, stop: float, n_out: int, n_in: int) -> np.ndarray:
  """Source pixel of each output pixel centre: floor(start + (u + 1/2) (stop - start) / n_out).

  Ties go to the pixel on the right, matching the half-open extents of `map_boxes`.
  """
  centres = start + (np.arange(n_out) + 0.5) * (stop - start) / n_out
  return np.clip(np.floor(centres + _EPS), 0, n_in - 1).astype(np.int64)


def horizontal_flip(ex: Example) -> Example:
  """Mirrors left-right: x -> W - 1 - x for pixels, (x0, x1) -> (W-1-x1, W-1-x0)."""
  width = ex.image.shape[1]
  b = ex.boxes
  boxes = np.stack([width - 1 - b[:, 2], b[:, 1], width - 1 - b[:, 0], b[:, 3]], axis=1)
  mask = None if ex.mask is None else np.ascontiguousarray(ex.mask[:, ::-1])
  return Example(np.ascontiguousarray(ex.image[:, ::-1]), boxes.astype(np.int64), mask)


def sample_crop(rng: np.random.Generator, height: int, width: int, *,
                scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                attempts: int = 10) -> tuple[int, int, int, int]:
  """Inception-style crop: area fraction ~ U(scale), log aspect ratio ~ U(log ratio).

  Returns (top, left, h, w) in integer pixels. After `attempts` misses, falls
  back to the largest centred crop whose aspect ratio is within `ratio`.
  """
  area = height * width
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(attempts):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  aspect = width / height
  if aspect < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif aspect > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    h, w = height, width
  h, w = max(1, min(h, height)), max(1, min(w, width))
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(ex: Example, rng: np.random.Generator, size: int, *,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        attempts: int = 10) -> Example:
  """Random crop (see `sample_crop`) resized to size x size."""
  height, width = ex.image.shape[:2]
  top, left, h, w = sample_crop(rng, height, width, scale=scale, ratio=ratio,
                                attempts=attempts)
  return crop_resize(ex, (left, top, left + w, top + h), (size, size))


def resize(ex: Example, size: int) -> Example:
  """The WSOL evaluation resize: the whole image straight to size x size."""
  height, width = ex.image.shape[:2]
  return crop_resize(ex, (0, 0, width, height), (size, size))


def resize_center_crop(ex: Example, size: int, resize_size: int | None = None) -> Example:
  """Shorter side to `resize_size` (default size * 256 / 224), then the centre size x size.

  Done as one resampling of the matching input region, which samples exactly
  the pixels that resize-then-crop would.
  """
  if resize_size is not None and resize_size < size:
    raise ValueError(f"resize_size ({resize_size}) must be >= size ({size})")
  return crop_resize(ex, center_crop_region(*ex.image.shape[:2], size, resize_size), (size, size))


def center_crop_region(height: int, width: int, size: int, resize_size: int | None = None) -> tuple[float, ...]:
  """(left, top, right, bottom) of a (height, width) image that ``resize_center_crop`` shows."""
  if resize_size is None:
    resize_size = int(round(size * 256 / 224))
  if height <= width:
    new_h, new_w = resize_size, int(resize_size * width / height)
  else:
    new_h, new_w = int(resize_size * height / width), resize_size
  top = int(round((new_h - size) / 2))
  left = int(round((new_w - size) / 2))
  sy, sx = new_h / height, new_w / width
  return left / sx, top / sy, (left + size) / sx, (top + size) / sy


def wsol_scale_boxes(boxes: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
  """Box scaling of the WSOL evaluation code: int(x * size / W) on each coordinate.

  Matches published numbers exactly; `resize` gives the pixel-aligned boxes.
  """
  b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
  s = np.array([size / width, size / height, size / width, size / height])
  return np.floor(b * s).astype(np.int64)


# ----------------------------------------------------------------------------
# Pixel values.


def normalize(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
  """(x / 255 - mean) / std per channel, float32; mean and std on the 0..1 scale, as configs give them."""
  mean = np.asarray(mean, np.float32)
  inv_std = 1.0 / np.asarray(std, np.float32)
  return image.astype(np.float32) * (inv_std / 255.0) - mean * inv_std


def as_rgb(image: np.ndarray) -> np.ndarray:
  """(H, W), (H, W, 1) or (H, W, 3) uint8 -> (H, W, 3) uint8; anything else raises."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"image dtype is {image.dtype}, expected uint8")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[2] not in (1, 3) or min(image.shape[:2]) < 1:
    raise ValueError(f"image shape is {image.shape}, expected (H, W, 3)")
  if image.shape[2] == 1:
    image = np.repeat(image, 3, axis=2)
  return np.ascontiguousarray(image)

