"""Input checks shared by the evaluators: one ``UserError`` (a ValueError) naming the image and the problem."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from camjax.errors import UserError


def as_map_stack(scoremaps: Any, *, name: str = "scoremaps", unit_range: bool, offset: int = 0) -> np.ndarray:
  """(N, H, W) floating array, finite, and in [0, 1] when ``unit_range``; raises on the first bad map."""
  maps = np.asarray(scoremaps)
  if maps.ndim != 3:
    raise UserError(f"{name} must have shape (N, H, W); got shape {maps.shape}")
  if not np.issubdtype(maps.dtype, np.floating):
    raise UserError(f"{name} must be a floating dtype (float16/32/64); got {maps.dtype}")
  if maps.shape[1] < 1 or maps.shape[2] < 1:
    raise UserError(f"{name} must have non-empty maps; got shape {maps.shape}")
  # Two reductions per map catch everything: NaN propagates through min/max, Inf breaks the range.
  lo = maps.min(axis=(1, 2))
  hi = maps.max(axis=(1, 2))
  ok = (lo >= 0) & (hi <= 1) if unit_range else np.isfinite(lo) & np.isfinite(hi)
  for i in np.flatnonzero(~ok):
    check_map(maps[i], index=offset + int(i), unit_range=unit_range)
  return maps


def check_map(scoremap: np.ndarray, *, index: int, unit_range: bool) -> None:
  """Finite values (and within [0, 1] for the WSOL standard)."""
  if not np.isfinite(scoremap).all():
    bad = "NaN" if np.isnan(scoremap).any() else "Inf"
    raise UserError(f"image {index}: score map contains {bad}; fix the map (e.g. np.nan_to_num) before scoring")
  if unit_range:
    lo, hi = float(scoremap.min()), float(scoremap.max())
    if lo < 0.0 or hi > 1.0:
      raise UserError(f"image {index}: WSOL score maps must lie in [0, 1]; got min={lo:g}, max={hi:g} "
                      "(min-max normalize each map first)")


def as_box_array(boxes: Any, *, index: int, height: int, width: int, what: str = "ground-truth boxes",
                 allow_empty: bool = False) -> np.ndarray:
  """(M, 4) int64 boxes (x0, y0, x1, y1), inclusive, inside a (height, width) map."""
  arr = np.asarray(boxes)
  if arr.ndim == 1 and arr.shape[0] == 4:
    arr = arr[None]
  if arr.size == 0 and not allow_empty:
    raise UserError(f"image {index}: no {what}; every scored image needs at least one box")
  if arr.size == 0:
    return np.zeros((0, 4), np.int64)
  if arr.ndim != 2 or arr.shape[1] != 4:
    raise UserError(f"image {index}: {what} must have shape (M, 4) as (x0, y0, x1, y1); got shape {arr.shape}")
  if not np.issubdtype(arr.dtype, np.integer):
    raise UserError(f"image {index}: {what} must be integers (pixel coordinates); got dtype {arr.dtype}")
  arr = arr.astype(np.int64)
  x0, y0, x1, y1 = arr.T
  if (x0 < 0).any() or (y0 < 0).any() or (x1 >= width).any() or (y1 >= height).any():
    raise UserError(f"image {index}: {what} {arr.tolist()} fall outside the {height}x{width} map "
                    f"(need 0 <= x <= {width - 1}, 0 <= y <= {height - 1})")
  if (x1 < x0).any() or (y1 < y0).any():
    raise UserError(f"image {index}: {what} {arr.tolist()} have x1 < x0 or y1 < y0")
  return arr


def as_box_list(gt_boxes: Sequence[Any], *, count: int, height: int, width: int, offset: int = 0) -> list[np.ndarray]:
  """One checked (M_i, 4) array per image."""
  if len(gt_boxes) != count:
    raise UserError(f"gt_boxes has {len(gt_boxes)} entries for {count} score maps; give one (M_i, 4) array per image")
  arrays = [np.asarray(b) for b in gt_boxes]
  if all(a.ndim == 2 and a.shape[0] and a.shape[1] == 4 and a.dtype.kind in "iu" for a in arrays):
    x0, y0, x1, y1 = np.concatenate(arrays).astype(np.int64).T  # all at once; per image only to name a bad one
    if ((x0 >= 0) & (y0 >= 0) & (x1 < width) & (y1 < height) & (x1 >= x0) & (y1 >= y0)).all():
      return [a.astype(np.int64, copy=False) for a in arrays]
  return [as_box_array(a, index=offset + i, height=height, width=width) for i, a in enumerate(arrays)]


def as_thresholds(values: Any, *, name: str) -> np.ndarray:
  """1-D finite float64 array."""
  arr = np.asarray(values, dtype=np.float64)
  if arr.ndim != 1 or arr.size == 0:
    raise UserError(f"{name} must be a non-empty 1-D list of numbers; got shape {arr.shape}")
  if not np.isfinite(arr).all():
    raise UserError(f"{name} must be finite")
  return arr
