"""Host-side map preparation shared by the evaluators and the figures: one min-max, one resize.

Both are NumPy/OpenCV (no JAX), so saved maps, eval-loop maps and report pictures are
normalised and resized the same way. OpenCV is the resizer because it already defines
the WSOL standard's protocol (``cv2.INTER_CUBIC`` to 224 x 224); on-device resizing of
CAMs stays in ``camjax.cam.upsample_maps``.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from camjax.errors import UserError

INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                  "area": cv2.INTER_AREA}


def min_max(maps: Any, *, dtype: Any = np.float32, clip: bool = False) -> np.ndarray:
  """Each map (last two axes) scaled to ``(S - min) / (max - min)``, computed and returned in ``dtype``.

  A map with no positive span (constant, or NaN in it) becomes zeros. ``clip`` clamps the result to
  [0, 1], as the WSOL standard's inference code does after resizing. The arithmetic is in ``dtype``
  throughout, so float32 callers (eval loop, figures) and float64 ones (saved maps) keep their digits.
  """
  maps = np.asarray(maps, dtype)
  lo = maps.min(axis=(-2, -1), keepdims=True)
  span = maps.max(axis=(-2, -1), keepdims=True) - lo
  ok = span > 0
  out = np.where(ok, (maps - lo) / np.where(ok, span, 1), 0.0).astype(dtype, copy=False)
  if clip:
    np.clip(out, 0.0, 1.0, out=out)
  return out


def resize_map(scoremap: Any, shape: tuple[int, int], *, interpolation: str = "linear",
               dtype: Any = np.float32) -> np.ndarray:
  """One (h, w) map resized on the host to ``shape`` = (H, W) with OpenCV (half-pixel centres, edges clamped).

  ``interpolation`` is ``linear`` (figures, the paper protocol on saved maps), ``cubic`` (the WSOL
  standard's 224 x 224 resize), ``nearest`` (masks) or ``area``. A map already at ``shape`` is returned
  as is (OpenCV would copy it unchanged).
  """
  scoremap = np.asarray(scoremap, dtype)
  if scoremap.ndim != 2:
    raise UserError(f"map must be (h, w), got shape {scoremap.shape}")
  if interpolation not in INTERPOLATIONS:
    raise UserError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
  height, width = (int(s) for s in shape)
  if scoremap.shape == (height, width):
    return scoremap
  return cv2.resize(scoremap, (width, height), interpolation=INTERPOLATIONS[interpolation])
