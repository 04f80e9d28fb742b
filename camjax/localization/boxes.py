"""Boxes from score maps under the two published protocols, and IoU.

``protocol="paper"`` follows Zhou et al. 2016 (Sec. 3.2): keep pixels strictly above a
fraction of the map's maximum, take the largest 8-connected component by pixel count and
its tight box. ``protocol="wsol"`` follows the WSOL evaluation standard (Choe et al. 2020),
defined by OpenCV's contour finder; see ``shared/PROTOCOL.md`` section 2.

The WSOL sweep is the hot path. A map has at most 256 distinct binarizations (its uint8
levels), so ``wsol_level_best_iou`` maps every CAM threshold to its integer level and works
per distinct level hit. Most levels need no contour call at all: their component count
follows from the Euler number (all levels from three histograms) bounded by the births of
regional maxima, and with no hole the borders are the components' outer borders, whose boxes
are bounding boxes computed for all levels at once. The remaining levels call the contour
finder once, on the crop holding the foreground (it pads with background, so cropping
changes nothing). The results equal a per-threshold sweep exactly (tests and benchmark).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from scipy import ndimage

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


def _iou_one(a, b) -> float:
  """IoU of two boxes given as Python sequences (same convention as ``iou``)."""
  iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
  ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
  inter = iw * ih
  union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
  return inter / union if union > 0 else 0.0


def quantize(scoremap: np.ndarray) -> np.ndarray:
  """``floor(255 * S)`` as uint8 (exact: the product is formed in float64)."""
  return (np.asarray(scoremap, dtype=np.float64) * 255.0).astype(np.uint8)


def cam_levels(cam_thresholds: np.ndarray, max_level: int) -> np.ndarray:
  """Integer binarization level of each CAM threshold: ``int(tau * max(q))`` (truncation, as the standard)."""
  return np.trunc(np.asarray(cam_thresholds, np.float64) * float(max_level)).astype(np.int64)


def boxes_from_cam(cam: Any, threshold: float, *, protocol: str = "paper", multi_contour: bool = False) -> np.ndarray:
  """Boxes (N, 4) int64 from one (H, W) map at one threshold.

  paper: pixels > ``threshold * max(cam)``, largest 8-connected component (pixel count;
    ties go to the first in raster order), its tight box; (0, 4) when nothing is kept.
  wsol: PROTOCOL.md section 2 steps 1-6; ``(0, 0, 0, 0)`` when no contour; one box unless
    ``multi_contour``.
  """
  cam = np.asarray(cam)
  if cam.ndim != 2:
    raise ValueError(f"cam must have shape (H, W); got shape {cam.shape}")
  if not np.issubdtype(cam.dtype, np.floating):
    raise ValueError(f"cam must be a floating dtype; got {cam.dtype}")
  if protocol == "paper":
    _checks.check_map(cam, index=0, unit_range=False)
    return paper_box(cam, threshold)
  if protocol == "wsol":
    _checks.check_map(cam, index=0, unit_range=True)
    q = quantize(cam)
    level = int(cam_levels(np.array([threshold]), int(q.max()))[0])
    return wsol_boxes_at_level(q, level, multi_contour=multi_contour)
  raise ValueError(f"protocol must be 'paper' or 'wsol'; got {protocol!r}")


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


def _histogram(values: np.ndarray, bins: int, mask: np.ndarray | None = None) -> np.ndarray:
  """Counts of the integers 0..bins-1 in a uint8/uint16 image (OpenCV: much faster than bincount)."""
  return cv2.calcHist([values], [0], mask, [bins], [0, bins]).ravel()


def euler_numbers(q: np.ndarray) -> np.ndarray:
  """Euler number (8-connected foreground, 4-connected background) of ``q > L`` for L = 0..255.

  Gray's bit-quad count over the 2x2 cells of the zero-padded map: E = (n1 - n3 - 2 nD) / 4.
  With the cells' sorted values s1 <= s2 <= s3 <= s4, a cell has one pixel above L for
  s3 <= L < s4 and three for s1 <= L < s2, so n1 - n3 at every level comes from histograms:
  +s2 +s3 -s1 -s4. Every pixel lies in 4 cells, so hist(s1) + hist(s4) = 4 hist(q) + padding
  - hist(s2) - hist(s3), and {s2, s3} are the two middle values of the cell: three histograms
  in all. (L = -1 is not covered: the padding is 0.)
  """
  height, width = q.shape
  p = np.zeros((height + 2, width + 2), np.uint8)
  p[1:-1, 1:-1] = q
  a, b, c, d = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
  lo, hi = cv2.min, cv2.max  # far faster than NumPy on strided uint8 views
  ab_lo, ab_hi = lo(a, b), hi(a, b)
  cd_lo, cd_hi = lo(c, d), hi(c, d)
  mid_lo, mid_hi = hi(ab_lo, cd_lo), lo(ab_hi, cd_hi)  # the two middle values, in some order
  middle = _histogram(mid_lo, 256) + _histogram(mid_hi, 256)
  delta = 2 * middle - 4 * _histogram(q, 256)
  delta[0] -= 4 * (height + width + 1)  # padding pixels' cell memberships, all at value 0
  # Diagonal pairs (two pixels above L, on a diagonal): a, d > L >= b, c for max(b, c) <= L < min(a, d),
  # and the other diagonal likewise; rare in smooth maps, so counted directly.
  start1, end1 = hi(b, c), lo(a, d)
  start2, end2 = hi(a, d), lo(b, c)
  cells = np.flatnonzero(cv2.bitwise_or(cv2.compare(start1, end1, cv2.CMP_LT), cv2.compare(start2, end2, cv2.CMP_LT))
                         .ravel() > 0)
  for start, end in ((start1, end1), (start2, end2)):
    lo_v, hi_v = start.ravel()[cells], end.ravel()[cells]
    keep = lo_v < hi_v
    delta -= 2 * (np.bincount(lo_v[keep], minlength=256) - np.bincount(hi_v[keep], minlength=256))
  return np.rint(np.cumsum(delta) / 4).astype(np.int64)


def regional_maxima_values(q: np.ndarray) -> np.ndarray:
  """Values (> 0) of the regional maxima of ``q`` (8-connected flat zones with no higher neighbour), descending.

  Every 8-connected component of ``q > L`` (L >= 0) holds at least one regional maximum above L.
  """
  kernel = np.ones((3, 3), np.uint8)
  top = cv2.bitwise_and(cv2.compare(q, cv2.dilate(q, kernel), cv2.CMP_EQ), cv2.compare(q, 0, cv2.CMP_GT))
  lower = cv2.bitwise_and(q, q, mask=cv2.bitwise_not(top))
  # A flat zone of `top` pixels that touches an equal pixel with a higher neighbour is not maximal.
  spoiled = cv2.bitwise_and(top, cv2.compare(cv2.dilate(lower, kernel), q, cv2.CMP_EQ))
  n, labels = cv2.connectedComponents(top, connectivity=8, ltype=cv2.CV_32S)
  idx = np.flatnonzero(top > 0)  # (a bool mask: nonzero on uint8 is several times slower)
  zone = labels.ravel()[idx]
  values = np.zeros(n, np.int64)
  values[zone] = q.ravel()[idx]
  ok = np.ones(n, bool)
  ok[0] = False
  ok[zone[spoiled.ravel()[idx] > 0]] = False
  return np.sort(values[ok])[::-1]


def _component_count(hierarchy: np.ndarray | None, count: int) -> int:
  """Outer borders = contours at even depth of the tree."""
  if count == 0:
    return 0
  parent = hierarchy[0, :, 3]
  outer = 0
  for i in range(count):
    depth, j = 0, parent[i]
    while j >= 0:
      depth += 1
      j = parent[j]
    outer += depth % 2 == 0
  return outer


def _distinct(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sorted distinct levels in [-1, 256] and each input's index among them."""
  hit = np.zeros(258, bool)
  hit[levels + 1] = True
  return np.flatnonzero(hit) - 1, np.cumsum(hit)[levels + 1] - 1


class LevelTable:
  """CAM thresholds with their distinct integer levels cached per map maximum (reused across maps)."""

  def __init__(self, cam_thresholds: Any):
    self.thresholds = np.asarray(cam_thresholds, np.float64)
    self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

  def __len__(self) -> int:
    return len(self.thresholds)

  def __call__(self, max_level: int) -> tuple[np.ndarray, np.ndarray]:
    if max_level not in self._cache:
      self._cache[max_level] = _distinct(np.clip(cam_levels(self.thresholds, max_level), -1, 255))
    return self._cache[max_level]


def wsol_level_best_iou(scoremap: np.ndarray, gt_boxes: np.ndarray, cam_thresholds: np.ndarray,
                        modes: tuple[bool, ...] = (True,), *, shortcut: bool = True) -> np.ndarray:
  """Best IoU (len(modes), T) of each CAM threshold's boxes against ``gt_boxes``.

  ``scoremap`` is a float map in [0, 1], or its ``quantize``d uint8 levels.

  ``modes`` lists ``multi_contour`` flags; both modes come from the same contour call.
  Work is at most one contour extraction per distinct binarization hit by the thresholds
  (on the crop holding its foreground), and none for levels whose borders are proven to be
  the outer borders of known components (``shortcut``, see ``_proven_boxes``). With
  ``shortcut=False`` this is the plain deduplicated sweep, kept as a cross-check.
  """
  height, width = scoremap.shape
  q = scoremap if scoremap.dtype == np.uint8 else quantize(scoremap)  # uint8: already quantized
  max_level = int(q.max())
  if not isinstance(cam_thresholds, LevelTable):
    cam_thresholds = LevelTable(cam_thresholds)
  if shortcut:
    distinct, inverse = cam_thresholds(max_level)
  else:
    # Canonical level: q > L equals q > (next present value above L) - 1; >= max means empty.
    present = np.append(_histogram(q, 256) > 0, True)
    next_present = np.flatnonzero(present)
    lv = np.clip(cam_levels(cam_thresholds.thresholds, max_level), -1, 255)
    distinct, inverse = _distinct(next_present[np.searchsorted(next_present, lv, side="right")] - 1)
  nonempty = distinct < max_level
  work = distinct[nonempty]
  # Foreground crops (global bounding boxes) of every distinct level at once: the first row
  # whose running maximum (from the top, or from the bottom) exceeds the level.
  rowmax, colmax = q.max(axis=1), q.max(axis=0)
  y0 = np.searchsorted(np.maximum.accumulate(rowmax), work, side="right")
  y1 = height - np.searchsorted(np.maximum.accumulate(rowmax[::-1]), work, side="right")
  x0 = np.searchsorted(np.maximum.accumulate(colmax), work, side="right")
  x1 = width - np.searchsorted(np.maximum.accumulate(colmax[::-1]), work, side="right")
  crops = np.stack([y0, y1, x0, x1], axis=1)

  find, tree, simple = cv2.findContours, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE
  cache: dict[int, tuple] = {}

  def contours_at(j: int) -> tuple:
    if j not in cache:
      a, b, c, d = crops[j].tolist()
      binary = (q[a:b, c:d] > work[j]).view(np.uint8)
      cache[j] = find(binary, tree, simple, offset=(c, a))
    return cache[j]

  # Levels whose boxes are proven without a contour call (see _proven_boxes).
  proven: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
  skip = int(np.searchsorted(work, 0))  # level -1 (negative thresholds: all foreground) is left out
  if shortcut and len(work) > skip:
    proven = [(idx + skip, boxes, present, choice) for idx, boxes, present, choice in
              _proven_boxes(q, work[skip:], crops[skip:], lambda j: contours_at(j + skip), single=not all(modes))]

  gt = np.asarray(gt_boxes, np.int64)
  empty_iou = max(_iou_one((0, 0, 0, 0), g) for g in gt.tolist())
  best = np.full((len(modes), len(distinct)), empty_iou)
  where = np.flatnonzero(nonempty)
  bounding, area = cv2.boundingRect, cv2.contourArea
  for m, multi in enumerate(modes):
    done = np.zeros(len(work), bool)
    groups = []
    for idx, boxes, present, choice in proven:
      if not multi:  # the single-contour box, where proven
        ok = choice >= 0
        idx, boxes, present = idx[ok], boxes[ok, choice[ok]][:, None, :], None
      if len(idx):
        groups.append((idx, boxes, present))
    if groups:
      per_box = iou(np.concatenate([g[1].reshape(-1, 4) for g in groups]), gt).max(axis=1)
      start = 0
      for idx, boxes, present in groups:
        vals = per_box[start:start + boxes.shape[0] * boxes.shape[1]].reshape(boxes.shape[:2])
        start += vals.size
        if present is not None:
          vals = np.where(present, vals, -1.0)
        best[m, where[idx]] = vals.max(axis=1)
        done[idx] = True
    parts: list[np.ndarray] = []
    counts: list[int] = []
    todo = np.flatnonzero(~done)
    for j in todo.tolist():
      contours = contours_at(j)[0]
      if not multi and len(contours) > 1:
        areas = [area(k) for k in contours]
        contours = (contours[areas.index(max(areas))],)
      r = np.array([bounding(k) for k in contours], np.int64).reshape(-1, 4)
      parts.append(r)
      counts.append(len(r))
    if parts:
      r = np.concatenate(parts)
      boxes = np.stack([r[:, 0], r[:, 1], np.minimum(r[:, 0] + r[:, 2], width - 1),
                        np.minimum(r[:, 1] + r[:, 3], height - 1)], axis=1)
      per_box = iou(boxes, gt).max(axis=1)
      starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
      best[m, where[todo]] = np.maximum.reduceat(per_box, starts)
  return best[:, inverse]


def _first_last(profile: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """First and last index where ``profile > L`` for each level (running maxima + binary search)."""
  first = np.searchsorted(np.maximum.accumulate(profile), levels, side="right")
  last = len(profile) - 1 - np.searchsorted(np.maximum.accumulate(profile[::-1]), levels, side="right")
  return first, last


def _quirk(x0, y0, x1, y1, height: int, width: int) -> np.ndarray:
  """Tight inclusive bounds -> the standard's ``(x, y, min(x + w, W - 1), min(y + h, H - 1))``."""
  out = np.empty(np.shape(x0) + (4,), np.int64)
  out[..., 0] = x0
  out[..., 1] = y0
  np.minimum(x1 + 1, width - 1, out=out[..., 2])
  np.minimum(y1 + 1, height - 1, out=out[..., 3])
  return out


def _proven_boxes(q: np.ndarray, work: np.ndarray, crops: np.ndarray, contours_at, single: bool = False) -> list:
  """Groups (work indices, boxes (levels, C, 4), present mask or None, single-contour choice) proven without
  their own contour call. The choice is the index of the single-contour box per level, -1 where unproven.

  Component counts C for every level (ascending ``work``, all >= 0), walking down from the top:
  - a component of ``q > L`` either contains one of ``q > L'`` (L < L') or holds a regional
    maximum with value in (L, L']; so C(L) <= C(L') + U(L) - U(L'), U = maxima above;
  - the Euler number E = C - H <= C; where E reaches that bound, C = E and there is no hole.
  Elsewhere one contour call gives C exactly and the walk goes on from there.
  Hole-free levels with C = 1: the only border is the outer one, its box the foreground's
  bounding box. C >= 2: label the components of a level a once; at a level L >= a, if the
  number of those components reaching above L equals C(L), each holds exactly one component
  of ``q > L``, so the boxes are the bounding boxes of each one's part above L. With
  ``single``, the largest border is picked by contour area, which for a component without
  holes is (2x2 cells with 4 of its pixels) + 0.5 (cells with 3); ties are left unproven
  (OpenCV's order would decide them).
  """
  height, width = q.shape
  n = len(work)
  # Everything above the lowest level lies in its crop; outside it the map is at or below
  # that level, which is what the Euler count's zero padding and the maxima test assume.
  a, b, c, d = crops[0].tolist()
  inner = q[a:b, c:d]
  euler = euler_numbers(inner)[work]
  maxima = regional_maxima_values(inner)
  above = len(maxima) - np.searchsorted(maxima[::-1], work, side="right")  # maxima strictly above each level
  count = np.zeros(n, np.int64)
  free = np.zeros(n, bool)  # proven: C = count and no hole
  top, top_count, top_above = n, 0, 0
  while top > 0:
    bound = top_count + above[:top] - top_above
    fails = np.flatnonzero(euler[:top] != bound)
    stop = int(fails[-1]) if len(fails) else -1
    count[stop + 1:top] = bound[stop + 1:]
    free[stop + 1:top] = True
    if stop < 0:
      break
    contours, hierarchy = contours_at(stop)  # exact count here; its boxes come from these contours
    top, top_count, top_above = stop, _component_count(hierarchy, len(contours)), int(above[stop])
  proven: list = []
  one = np.flatnonzero(free & (count == 1))
  if len(one):
    y0, y1, x0, x1 = crops[one].T
    proven.append((one, _quirk(x0, y0, x1 - 1, y1 - 1, height, width)[:, None, :], None, np.zeros(len(one), np.int64)))
  several = np.flatnonzero(free & (count >= 2))
  pos = 0
  while pos < len(several):
    base = int(several[pos])
    level = int(work[base])
    # Components of the base level: when their bounding boxes are disjoint, each box holds
    # only its own component's pixels above the level, so no labelling is needed.
    contours = contours_at(base)[0]
    rects = [cv2.boundingRect(k) for k in contours]
    if len(rects) == count[base] and _disjoint(rects):
      subs = [(q[y:y + h, x:x + w], y, x) for x, y, w, h in rects]
      members = [(sub > level).astype(np.int32) for sub, _, _ in subs]
    else:
      a, b, cc, d = crops[base].tolist()
      qc = q[a:b, cc:d]
      num, labels = cv2.connectedComponents((qc > level).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
      if num - 1 != count[base]:  # cannot happen; stay exact by leaving the level to the contour finder
        pos += 1
        continue
      subs = [(cv2.bitwise_and(qc, qc, mask=cv2.compare(labels, i, cv2.CMP_EQ)), a, cc) for i in range(1, num)]
      members = [(labels == i).astype(np.int32) for i in range(1, num)] if single else []
    rowmax = [sub.max(axis=1) for sub, _, _ in subs]
    colmax = [sub.max(axis=0) for sub, _, _ in subs]
    peak = np.array([r.max() for r in rowmax])
    rest = several[pos:]
    present = peak[None, :] > work[rest][:, None]
    valid = present.sum(axis=1) == count[rest]
    stop = len(rest) if valid.all() else int(np.argmin(valid))
    take, present = rest[:stop], present[:stop]
    levels = work[take]
    rows = [_first_last(r, levels) for r in rowmax]
    cols = [_first_last(c, levels) for c in colmax]
    y0 = np.stack([f + oy for (f, _), (_, oy, _) in zip(rows, subs)], axis=1)
    y1 = np.stack([l + oy for (_, l), (_, oy, _) in zip(rows, subs)], axis=1)
    x0 = np.stack([f + ox for (f, _), (_, _, ox) in zip(cols, subs)], axis=1)
    x1 = np.stack([l + ox for (_, l), (_, _, ox) in zip(cols, subs)], axis=1)
    choice = np.full(len(take), -1, np.int64)
    if single:
      areas = np.concatenate([_component_areas(sub, member, 1, levels) for (sub, _, _), member in zip(subs, members)],
                             axis=1)
      area = np.where(present, areas, -1.0)
      top_area = area.max(axis=1, keepdims=True)
      unique = (area == top_area).sum(axis=1) == 1
      choice[unique] = area[unique].argmax(axis=1)
    proven.append((take, _quirk(x0, y0, x1, y1, height, width), present, choice))
    pos += stop
  return proven


def _disjoint(rects: list) -> bool:
  """Whether no two (x, y, w, h) rectangles share a pixel."""
  for i, (x, y, w, h) in enumerate(rects):
    for u, v, r, t in rects[i + 1:]:
      if x < u + r and u < x + w and y < v + t and v < y + h:
        return False
  return True


def _component_areas(qc: np.ndarray, labels: np.ndarray, count: int, levels: np.ndarray) -> np.ndarray:
  """(levels, count) contour areas of each labelled component's part above each level (no holes)."""
  p = np.zeros((qc.shape[0] + 2, qc.shape[1] + 2), np.uint8)
  p[1:-1, 1:-1] = qc
  lab = np.zeros(p.shape, np.int32)
  lab[1:-1, 1:-1] = labels
  a, b, c, d = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
  ab_lo, ab_hi, cd_lo, cd_hi = cv2.min(a, b), cv2.max(a, b), cv2.min(c, d), cv2.max(c, d)
  s1 = cv2.min(ab_lo, cd_lo).ravel()  # 4 pixels above L while L < s1
  s2 = cv2.min(cv2.max(ab_lo, cd_lo), cv2.min(ab_hi, cd_hi)).ravel()  # at least 3 while L < s2
  owner = cv2.max(cv2.max(lab[:-1, :-1], lab[:-1, 1:]), cv2.max(lab[1:, :-1], lab[1:, 1:])).ravel()
  cells = np.flatnonzero(s2 > levels.min())
  size = (count + 1) * 256
  h1 = np.bincount(owner[cells] * 256 + s1[cells], minlength=size).reshape(count + 1, 256)
  h2 = np.bincount(owner[cells] * 256 + s2[cells], minlength=size).reshape(count + 1, 256)
  above = lambda h: h.sum(axis=1, keepdims=True) - np.cumsum(h, axis=1)  # cells with value > L, at column L
  area = 0.5 * (above(h1) + above(h2))[1:]  # (count, 256)
  return area[:, levels].T
