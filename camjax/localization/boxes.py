"""Boxes from score maps under the two published protocols, and IoU: the definitions.

``protocol="paper"`` follows Zhou et al. 2016 (Sec. 3.2): keep pixels strictly above a
fraction of the map's maximum, take the largest 8-connected component by pixel count and
its tight box. ``protocol="wsol"`` follows the WSOL evaluation standard (Choe et al. 2020),
defined by OpenCV's contour finder; see ``docs/protocol.md``. The fast sweep
over many thresholds (``sweep``) must match ``wsol_boxes_at_level`` exactly.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from camjax.errors import UserError
from camjax.localization import _checks

_EIGHT = np.ones((3, 3), dtype=bool)
_EMPTY_BOX = np.zeros((1, 4), np.int64)


def iou(boxes_a: Any, boxes_b: Any) -> np.ndarray:
  """(Na, Nb) IoU of inclusive (x0, y0, x1, y1) boxes; 0 where the union is 0 or less."""
  a = np.asarray(boxes_a, dtype=np.int64).reshape(-1, 4)
  b = np.asarray(boxes_b, dtype=np.int64).reshape(-1, 4)
  ax0, ay0, ax1, ay1 = (a[:, i, None] for i in range(4))
  bx0, by0, bx1, by1 = (b[None, :, i] for i in range(4))
  iw = np.maximum(0, np.minimum(ax1, bx1) - np.maximum(ax0, bx0) + 1)
  ih = np.maximum(0, np.minimum(ay1, by1) - np.maximum(ay0, by0) + 1)
  inter = iw * ih
  union = (ax1 - ax0 + 1) * (ay1 - ay0 + 1) + (bx1 - bx0 + 1) * (by1 - by0 + 1) - inter
  ok = union > 0
  return np.where(ok, inter / np.where(ok, union, 1), 0.0)


def quantize(scoremap: np.ndarray) -> np.ndarray:
  """``floor(255 * S)`` as uint8, for one map or a stack (exact: the product is formed in float64).

  Map by map through one float64 buffer: a whole-stack temporary would not stay in cache.
  """
  maps = np.asarray(scoremap)
  out = np.empty(maps.shape, np.uint8)
  if maps.ndim < 3:
    np.copyto(out, np.multiply(maps, 255.0, dtype=np.float64), casting="unsafe")
    return out
  buffer = np.empty(maps.shape[-2:], np.float64)
  for src, dst in zip(maps.reshape(-1, *maps.shape[-2:]), out.reshape(-1, *maps.shape[-2:])):
    np.multiply(src, 255.0, out=buffer, dtype=np.float64)
    np.copyto(dst, buffer, casting="unsafe")
  return out


def cam_levels(cam_thresholds: np.ndarray, max_level: int) -> np.ndarray:
  """Integer binarization level of each CAM threshold: ``int(tau * max(q))`` (truncation, as the standard)."""
  return np.trunc(np.asarray(cam_thresholds, np.float64) * float(max_level)).astype(np.int64)


def boxes_from_cam(cam: Any, threshold: float, *, protocol: str = "paper", multi_contour: bool = False) -> np.ndarray:
  """Boxes (N, 4) int64 from one (H, W) map at one threshold.

  paper: pixels > ``threshold * max(cam)``, largest 8-connected component (pixel count;
    ties go to the first in raster order), its tight box; (0, 4) when nothing is kept.
  wsol: ``docs/protocol.md``, WSOL box extraction; ``(0, 0, 0, 0)`` when no contour; one box unless
    ``multi_contour``.
  """
  cam = np.asarray(cam)
  if cam.ndim != 2:
    raise UserError(f"cam must have shape (H, W); got shape {cam.shape}")
  if not np.issubdtype(cam.dtype, np.floating):
    raise UserError(f"cam must be a floating dtype; got {cam.dtype}")
  if protocol == "paper":
    _checks.check_map(cam, index=0, unit_range=False)
    return paper_box(cam, threshold)
  if protocol == "wsol":
    _checks.check_map(cam, index=0, unit_range=True)
    q = quantize(cam)
    level = int(cam_levels(np.array([threshold]), int(q.max()))[0])
    return wsol_boxes_at_level(q, level, multi_contour=multi_contour)
  raise UserError(f"protocol must be 'paper' or 'wsol'; got {protocol!r}")


def paper_box(cam: np.ndarray, threshold: float) -> np.ndarray:
  """Tight box of the largest 8-connected component of ``cam > threshold * max(cam)``; (0, 4) if empty."""
  fg = cam > threshold * cam.max()
  labels, n = ndimage.label(fg, structure=_EIGHT)
  if n == 0:
    return np.zeros((0, 4), np.int64)
  sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
  best = int(np.argmax(sizes)) + 1
  ys, xs = ndimage.find_objects(labels, max_label=best)[best - 1]
  return np.array([[xs.start, ys.start, xs.stop - 1, ys.stop - 1]], np.int64)


def _contours(q: np.ndarray, level: int) -> tuple:
  """OpenCV borders of ``q > level``: tree mode (outer borders and hole borders), simple chains."""
  binary = (q > level).view(np.uint8)
  return cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]


def _contour_boxes(contours: tuple, height: int, width: int) -> np.ndarray:
  """Step 5: ``(x, y, min(x + w, W - 1), min(y + h, H - 1))`` per border."""
  rects = np.array([cv2.boundingRect(c) for c in contours], np.int64).reshape(-1, 4)
  x, y, w, h = rects.T
  return np.stack([x, y, np.minimum(x + w, width - 1), np.minimum(y + h, height - 1)], axis=1)


def _largest(contours: tuple) -> int:
  """Index of the first border with the largest contour area (Python ``max`` semantics)."""
  areas = [cv2.contourArea(c) for c in contours]
  return int(np.argmax(areas))


def wsol_boxes_at_level(q: np.ndarray, level: int, *, multi_contour: bool) -> np.ndarray:
  """WSOL boxes of ``q > level`` (full image, no shortcuts): the definition the fast sweep must match."""
  height, width = q.shape
  contours = _contours(q, level)
  if len(contours) == 0:
    return _EMPTY_BOX.copy()
  if not multi_contour:
    contours = (contours[_largest(contours)],)
  return _contour_boxes(contours, height, width)
