"""Box conventions of every camjax data set, in one place.

Two forms of the same box:

- normalized ``(ymin, xmin, ymax, xmax)`` in [0, 1], the TFDS convention, as
  records store them (``camjax.data.examples``);
- inclusive pixel ``(x0, y0, x1, y1)``, as batches, transforms and the
  localization metrics use them.

The inclusive pixel box covers the continuous extent ``[x0, x1 + 1)``, so
``xmin = x0 / W`` and ``xmax = (x1 + 1) / W``, and the whole image is
``(0, 0, 1, 1)``. The conversions are exact inverses on integer boxes inside
the image. Both keep the leading shape of their input: (4,) -> (4,),
(n, 4) -> (n, 4); an empty list gives (0, 4).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_boxes(boxes: Any) -> tuple[np.ndarray, tuple[int, ...]]:
  """Float64 (n, 4) boxes and the shape to give the result back in."""
  b = np.asarray(boxes, dtype=np.float64)
  shape = b.shape if b.ndim and b.shape[-1] == 4 else (-1, 4)
  return b.reshape(-1, 4), shape


def pixel_to_normalized(boxes: Any, height: int, width: int) -> np.ndarray:
  """Inclusive pixel boxes ``(x0, y0, x1, y1)`` -> normalized ``(ymin, xmin, ymax, xmax)``, float32."""
  b, shape = _as_boxes(boxes)
  out = np.stack([b[:, 1] / height, b[:, 0] / width, (b[:, 3] + 1) / height, (b[:, 2] + 1) / width], axis=-1)
  return out.astype(np.float32).reshape(shape)


def normalized_to_pixel_unchecked(boxes: Any, height: int, width: int) -> np.ndarray:
  """Normalized boxes -> inclusive pixel boxes, float64, as they are.

  Impossible boxes (NaN, inverted, outside the image) stay visible so that the
  input pipeline can report them (``transforms.check_boxes``); round with
  ``astype(np.int64)`` after checking.
  """
  b, shape = _as_boxes(boxes)
  x0 = np.round(b[:, 1] * width)
  y0 = np.round(b[:, 0] * height)
  x1 = np.round(b[:, 3] * width) - 1
  y1 = np.round(b[:, 2] * height) - 1
  return np.stack([x0, y0, x1, y1], axis=-1).reshape(shape)


def normalized_to_pixel(boxes: Any, height: int, width: int) -> np.ndarray:
  """Normalized boxes -> inclusive int64 pixel boxes, at least one pixel wide and clipped to the image."""
  raw = normalized_to_pixel_unchecked(boxes, height, width)
  b = raw.reshape(-1, 4)
  out = np.stack([b[:, 0], b[:, 1], np.maximum(b[:, 2], b[:, 0]), np.maximum(b[:, 3], b[:, 1])], axis=-1)
  out = np.clip(out, 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.int64)
  return out.reshape(raw.shape)


def tight_box(mask: Any) -> np.ndarray | None:
  """Inclusive int64 pixel box around the nonzero pixels of an (H, W) or (H, W, 1) mask; None if there are none."""
  m = np.asarray(mask)
  if m.ndim == 3:
    m = m[..., 0]
  rows = np.flatnonzero(m.any(axis=1))
  cols = np.flatnonzero(m.any(axis=0))
  if rows.size == 0:
    return None
  return np.array([cols[0], rows[0], cols[-1], rows[-1]], np.int64)
