"""The WSOL threshold sweep: the best box IoU at every CAM threshold of a map, fast and exact.

A map has at most 256 distinct binarizations (its uint8 levels), so every CAM threshold is
mapped to its integer level and the work is per distinct level. Most levels need no contour
call at all (``_proven_levels``): the Euler number (every level from three histograms) gives
components minus holes, the births of regional maxima bound the components, and the holes of
the last extracted level bound the holes; where the bounds meet, both counts are exact. The
borders' boxes are then bounding boxes of components (pixels above the level) and of holes
(pixels at or below it, grown by one), read for every level from running maxima of row and
column profiles (``_extents``). The other levels call the contour finder once, on the crop
holding the foreground (it pads with background, so cropping changes nothing). Maps where
that would take many contour calls or many borders (noise, speckle, saliency) are scored from
their component trees instead (``component_tree``; the thresholds are ``TREE_*`` below). The
results equal the per-threshold definition (``boxes.wsol_boxes_at_level``) exactly; the tests
and the benchmark check it.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, NamedTuple

import cv2
import numpy as np

from camjax.localization import component_tree
from camjax.localization.boxes import cam_levels, quantize

_K3 = np.ones((3, 3), np.uint8)
_GROW = np.array([-1, -1, 1, 1])


@contextlib.contextmanager
def _opencv_one_thread() -> Iterator[None]:
  """OpenCV's thread pool costs more than it gains on the sweep's many small calls (cores are
  used across images by processes instead); the caller's setting is restored."""
  before = cv2.getNumThreads()
  cv2.setNumThreads(1)
  try:
    yield
  finally:
    cv2.setNumThreads(before)


def _above(image: np.ndarray, level: int) -> np.ndarray:
  """``image > level`` as 0/255 (``cv2.compare`` with a number fails on a 1 x 1 image)."""
  return cv2.threshold(image, level, 255, cv2.THRESH_BINARY)[1]


def _histogram(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """Counts of 0..255 in a uint8 image (OpenCV's is several times faster than ``np.bincount``)."""
  return cv2.calcHist([values], [0], mask, [256], [0, 256]).ravel()


def euler_numbers(q: np.ndarray) -> np.ndarray:
  """Euler number (8-connected foreground, 4-connected background) of ``q > L`` for L = 0..255.

  Gray's bit-quad count over the 2x2 cells of the zero-padded map: E = (n1 - n3 - 2 nD) / 4.
  With a cell's sorted values s1 <= s2 <= s3 <= s4, it has one pixel above L for
  s3 <= L < s4 and three for s1 <= L < s2, so n1 - n3 at every level comes from histograms:
  +s2 +s3 -s1 -s4. Every pixel lies in 4 cells, so hist(s1) + hist(s4) = 4 hist(q) + padding
  - hist(s2) - hist(s3): three histograms in all. For the cell a b / c d, s2 and s3 are
  max(lo(a, b), lo(c, d)) and min(hi(a, b), hi(c, d)), in some order. A cell has a diagonal
  pair (nD) for s2 <= L < s3 when its two largest values sit on a diagonal: the two row
  maxima, one in each column. (L = -1 is not covered: the padding is 0.)
  """
  height, width = q.shape
  p = cv2.copyMakeBorder(q, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
  lo, hi, cmp = cv2.min, cv2.max, cv2.compare  # far faster than NumPy on strided uint8 views
  # each row's horizontal pairs, shared by two cells
  pair_lo, pair_hi = lo(p[:, :-1], p[:, 1:]), hi(p[:, :-1], p[:, 1:])
  low_mid, high_mid = hi(pair_lo[:-1], pair_lo[1:]), lo(pair_hi[:-1], pair_hi[1:])
  delta = 2 * (_histogram(low_mid) + _histogram(high_mid)) - 4 * _histogram(q)
  delta[0] -= 4 * (height + width + 1)  # padding pixels' cell memberships, all at value 0
  # Diagonal: high_mid > low_mid (the row maxima are the top two) and a > b exactly when d > c.
  diagonal = cv2.bitwise_and(cmp(high_mid, low_mid, cv2.CMP_GT),
                             cmp(cmp(p[:-1, :-1], p[:-1, 1:], cv2.CMP_GT), cmp(p[1:, 1:], p[1:, :-1], cv2.CMP_GT),
                                 cv2.CMP_EQ))
  if cv2.countNonZero(diagonal):  # rare in smooth maps
    delta -= 2 * (_histogram(low_mid, diagonal) - _histogram(high_mid, diagonal))
  return np.rint(np.cumsum(delta) / 4).astype(np.int64)


def regional_maxima(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Regional maxima of ``q`` (8-connected flat zones with no higher neighbour, value > 0): their
  values, descending, and one pixel (rows, columns) of each.

  Every 8-connected component of ``q > L`` (L >= 0) holds at least one regional maximum above L.
  Candidates are the pixels with no higher neighbour; two such neighbours are equal, so the
  candidates' components are flat zones, and distinct ones never touch. A zone is maximal
  unless it holds a "spoiled" pixel: one next to an equal pixel that has a higher neighbour.
  Quantized slopes make many such terraces; a few dilations mark the parts of them near a
  spoiled pixel ("reached") and take them out before labelling. What is left of a terrace
  touches a reached pixel; what is left of a maximum is all of it and touches none.
  """
  top = cv2.bitwise_and(cv2.compare(q, cv2.dilate(q, _K3), cv2.CMP_EQ), _above(q, 0))
  lower = cv2.subtract(q, top)  # q off the candidates (q - 255 saturates to 0), q elsewhere
  reached = cv2.bitwise_and(top, cv2.compare(cv2.dilate(lower, _K3), q, cv2.CMP_EQ))  # the spoiled pixels
  for _ in range(2):
    reached = cv2.bitwise_and(cv2.dilate(reached, _K3), top)
  rest = cv2.subtract(top, reached)
  idx = np.flatnonzero(rest.ravel() > 0)  # (a bool mask: nonzero on uint8 is several times slower)
  if len(idx) == 0:
    return np.zeros(0, np.int64), np.zeros(0, np.intp), np.zeros(0, np.intp)
  touching = cv2.bitwise_and(rest, cv2.dilate(reached, _K3))
  n, labels = cv2.connectedComponents(rest, connectivity=8, ltype=cv2.CV_32S)
  zone = labels.ravel()[idx]
  values = np.zeros(n, np.int64)
  values[zone] = q.ravel()[idx]
  pixel = np.zeros(n, np.intp)
  pixel[zone] = idx
  ok = np.ones(n, bool)
  ok[0] = False
  ok[zone[touching.ravel()[idx] > 0]] = False
  order = np.argsort(-values[ok], kind="stable")
  rows, cols = np.divmod(pixel[ok][order], q.shape[1])
  return values[ok][order], rows, cols


def contour_depths(hierarchy: np.ndarray | None, count: int) -> list[int]:
  """Nesting depth of each contour in a tree: even for outer borders, odd for hole borders."""
  if count == 0:
    return []
  parent = hierarchy[0, :, 3]
  depths = []
  for i in range(count):
    depth, j = 0, parent[i]
    while j >= 0:
      depth += 1
      j = parent[j]
    depths.append(depth)
  return depths


def component_count(hierarchy: np.ndarray | None, count: int) -> int:
  """Components from a contour tree: the outer borders."""
  return sum(d % 2 == 0 for d in contour_depths(hierarchy, count))


def _fill_parts(values: np.ndarray, inside: np.ndarray, seeds: list[tuple[int, int]], connectivity: int,
                oy: int, ox: int, count: int = 0) -> list | None:
  """Parts (``values`` on the region, 0 elsewhere, cropped to its bounding box; offsets) of the
  ``connectivity``-connected regions of the mask ``inside`` holding the seeds (x, y), one per
  region. With ``count``, the mask is known to hold that many regions, so the last one is what
  the others leave (no fill). None if a seed is outside the mask, or, for 4-connected regions
  (holes), if one touches the mask's edge."""
  height, width = inside.shape
  filled = np.zeros((height + 2, width + 2), np.uint8)  # region i is i + 1; filled pixels stop later fills
  parts = []
  for x, y in seeds:
    if not (0 <= x < width and 0 <= y < height and inside[y, x]) or len(parts) == 255:
      return None
    if filled[y + 1, x + 1]:
      continue  # a seed of a region filled already
    if count and len(parts) == count - 1:
      rest = cv2.bitwise_and(inside, cv2.compare(filled[1:-1, 1:-1], np.zeros_like(inside), cv2.CMP_EQ))
      rx, ry, rw, rh = cv2.boundingRect(rest)
      region = rest[ry:ry + rh, rx:rx + rw]
    else:
      label = len(parts) + 1
      rx, ry, rw, rh = cv2.floodFill(inside, filled, (x, y), 0,
                                     flags=connectivity | cv2.FLOODFILL_MASK_ONLY | label << 8)[3]
      if connectivity == 4 and (rx == 0 or ry == 0 or rx + rw == width or ry + rh == height):
        return None
      region = (filled[ry + 1:ry + rh + 1, rx + 1:rx + rw + 1] == label).view(np.uint8)
    sub = values[ry:ry + rh, rx:rx + rw]
    parts.append((cv2.bitwise_and(sub, sub, mask=region), oy + ry, ox + rx))
    if count and len(parts) == count:
      break
  return parts


def _distinct(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sorted distinct levels in [-1, 256] and each input's index among them."""
  hit = np.zeros(258, bool)
  hit[levels + 1] = True
  return np.flatnonzero(hit) - 1, np.cumsum(hit)[levels + 1] - 1


class _Levels(NamedTuple):
  """The distinct binarization levels a map's thresholds hit."""
  count: int  # distinct levels, empty ones (>= the map's maximum) included
  inverse: np.ndarray  # (T,) each threshold's index among them
  work: np.ndarray  # the nonempty ones, ascending (-1 is "everything")
  index: np.ndarray  # their indices among the distinct levels


def _levels(distinct: np.ndarray, inverse: np.ndarray, max_level: int) -> _Levels:
  nonempty = np.flatnonzero(distinct < max_level)
  return _Levels(len(distinct), inverse, distinct[nonempty], nonempty)


class LevelTable:
  """CAM thresholds with their distinct integer levels cached per map maximum (reused across maps)."""

  def __init__(self, cam_thresholds: Any):
    self.thresholds = np.asarray(cam_thresholds, np.float64)
    self._cache: dict[int, _Levels] = {}

  def __len__(self) -> int:
    return len(self.thresholds)

  def __call__(self, max_level: int) -> _Levels:
    if max_level not in self._cache:
      distinct, inverse = _distinct(np.clip(cam_levels(self.thresholds, max_level), -1, 255))
      self._cache[max_level] = _levels(distinct, inverse, max_level)
    return self._cache[max_level]

  def canonical(self, q: np.ndarray, max_level: int) -> _Levels:
    """Levels without the shortcut's sharing: L becomes (next value present in ``q`` above L) - 1."""
    next_present = np.flatnonzero(np.append(_histogram(q) > 0, True))
    lv = np.clip(cam_levels(self.thresholds, max_level), -1, 255)
    return _levels(*_distinct(next_present[np.searchsorted(next_present, lv, side="right")] - 1), max_level)


class _Profiles(NamedTuple):
  """Running maxima of parts' row and column profiles from all four sides, end to end."""
  keys: np.ndarray  # side s's running maxima + 256 s: sorted, and each side's maximum starts afresh
  sizes: np.ndarray  # (4 P,) side lengths: width, height, width, height per part
  offsets: np.ndarray  # (P, 2) (column, row) offset of each part


def _profiles(parts: list[tuple[np.ndarray, int, int]]) -> _Profiles:
  """Parts are (uint8 image, row offset, column offset)."""
  profiles = []
  for image, _, _ in parts:
    cols = image.max(axis=0)
    rows = cv2.reduce(image, 1, cv2.REDUCE_MAX).ravel()  # (NumPy across rows, OpenCV across columns: the fast ones)
    profiles += [cols, rows, cols[::-1], rows[::-1]]
  sizes = np.fromiter(map(len, profiles), np.intp, len(profiles))
  keys = np.maximum.accumulate(np.concatenate(profiles).astype(np.intp)
                               + np.repeat(np.arange(len(profiles)) * 256, sizes))
  return _Profiles(keys, sizes, np.array([(ox, oy) for _, oy, ox in parts], np.intp).reshape(-1, 2))


def _extents(p: _Profiles, ids: np.ndarray | None = None, levels: np.ndarray | None = None) -> np.ndarray:
  """Inclusive boxes (x0, y0, x1, y1) of parts' pixels above levels: for every part and level L
  (P, 256, 4), or for the pairs (ids[r], levels[r]) (R, 4).

  From each side, the first row (column) above L is the number of rows whose running maximum
  is at most L: a cumulative histogram of the keys (every level) or a binary search in them
  (some pairs). A part with nothing above L gets x0 > x1.
  """
  if ids is None:
    running = np.cumsum(np.bincount(p.keys, minlength=256 * len(p.sizes)))  # (one flat cumsum is the fast one)
    below = (running.reshape(-1, 256) - np.append(0, running[255:-1:256])[:, None]).reshape(-1, 4, 256).transpose(
        0, 2, 1)
    sizes, offsets = p.sizes.reshape(-1, 1, 4), p.offsets[:, None, :]
  else:
    side = ids[:, None] * 4 + np.arange(4)
    below = np.searchsorted(p.keys, side * 256 + levels[:, None], side="right") - (np.cumsum(p.sizes) - p.sizes)[side]
    sizes, offsets = p.sizes[side], p.offsets[ids]
  out = np.empty(below.shape, np.int64)
  out[..., :2] = below[..., :2] + offsets
  out[..., 2:] = sizes[..., 2:] - 1 - below[..., 2:] + offsets
  return out


def _best_iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """Best IoU of each box (B, 4) against its own ground-truth boxes (B, M, 4); inclusive, 0 for no union."""
  b = boxes[:, None, :]
  iw = np.minimum(b[..., 2], gt[..., 2]) - np.maximum(b[..., 0], gt[..., 0]) + 1
  ih = np.minimum(b[..., 3], gt[..., 3]) - np.maximum(b[..., 1], gt[..., 1]) + 1
  inter = np.maximum(iw, 0) * np.maximum(ih, 0)
  union = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) + (gt[..., 2] - gt[..., 0] + 1) * (
      gt[..., 3] - gt[..., 1] + 1) - inter
  ok = union > 0
  return np.where(ok, inter / np.where(ok, union, 1), 0.0).max(axis=1)


def _contour_boxes(contours: tuple, multi: bool) -> np.ndarray:
  """Tight boxes of a contour list's bounding rectangles; the first largest-area border only when not ``multi``."""
  if not multi and len(contours) > 1:
    areas = [cv2.contourArea(k) for k in contours]
    contours = (contours[areas.index(max(areas))],)
  r = np.array([cv2.boundingRect(k) for k in contours], np.int64).reshape(-1, 4)
  r[:, 2:] += r[:, :2] - 1
  return r


class _Boxes:
  """Boxes of many maps' levels, gathered per mode and scored against ground truth in one vectorized pass.

  A box is tight (inclusive) and owned by one level slot. Components and holes found by the
  proofs are parts whose boxes are read from one ``_extents`` call at the end; a hole's border
  (on the foreground around it) is its box grown by one pixel ("grow").
  """

  def __init__(self, num_modes: int):
    self.direct: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(num_modes)]  # (boxes, owners)
    # (owners, part ids, part levels, grow)
    self.deferred: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]] = [[] for _ in range(num_modes)]
    self.parts: list[tuple[np.ndarray, int, int]] = []
    self.scored: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(num_modes)]  # (owners, best IoU)

  def mark(self) -> tuple:
    return len(self.parts), [len(d) for d in self.direct], [len(d) for d in self.deferred]

  def rollback(self, mark: tuple) -> None:
    """Drop what was added since ``mark`` (a map handed over to the component tree midway)."""
    parts, direct, deferred = mark
    del self.parts[parts:]
    for kept, items in zip(direct, self.direct):
      del items[kept:]
    for kept, items in zip(deferred, self.deferred):
      del items[kept:]

  def best(self, slots: int, slot_map: np.ndarray, gt: np.ndarray, height: int, width: int) -> np.ndarray:
    """(modes, slots): best IoU per level slot (-1 where a slot owns no box)."""
    profiles = _profiles(self.parts) if self.parts else None
    out = np.full((len(self.direct), slots), -1.0)
    for m, (direct, deferred) in enumerate(zip(self.direct, self.deferred)):
      boxes = [b for b, _ in direct]
      if deferred:
        ids = np.concatenate([p for _, p, _, _ in deferred])
        found = _extents(profiles, ids, np.concatenate([lv for _, _, lv, _ in deferred]))
        found += np.repeat([grow for *_, grow in deferred], [len(p) for _, p, _, _ in deferred])[:, None] * _GROW
        boxes.append(found)
      for owners, scores in self.scored[m]:
        np.maximum.at(out[m], owners, scores)
      if not boxes:
        continue
      owners = np.concatenate([o for _, o in direct] + [o for o, _, _, _ in deferred])
      tight = np.concatenate(boxes)
      tight[:, 2] = np.minimum(tight[:, 2] + 1, width - 1)  # the standard's (x + w, y + h), clipped
      tight[:, 3] = np.minimum(tight[:, 3] + 1, height - 1)
      np.maximum.at(out[m], owners, _best_iou(tight, gt[slot_map[owners]]))
    return out


@_opencv_one_thread()
def best_iou_batch(q: np.ndarray, gt_boxes: list[np.ndarray], table: LevelTable, modes: tuple[bool, ...] = (True,),
                   *, shortcut: bool = True) -> np.ndarray:
  """Best IoU (N, len(modes), T) of each map's boxes at each CAM threshold against its ground truth.

  ``q``: (N, H, W) uint8 levels (``quantize``); ``gt_boxes``: N int arrays (M_i, 4). ``modes``
  lists ``multi_contour`` flags; both modes come from the same contour calls. Work is at most
  one contour extraction per distinct binarization hit by the thresholds (on the crop holding
  its foreground), and none for the levels ``_proven_levels`` settles (``shortcut``). With
  ``shortcut=False`` this is the plain deduplicated sweep, kept as a cross-check.
  """
  n, height, width = q.shape
  if n == 0:
    return np.zeros((0, len(modes), len(table)))
  maxes = cv2.reduce(q.reshape(n, -1), 1, cv2.REDUCE_MAX).ravel().tolist()
  tight_all = _extents(_profiles([(q[i], 0, 0) for i in range(n)]))  # foreground boxes (crops) of every map and level
  full = (0, 0, width - 1, height - 1)
  collected = _Boxes(len(modes))
  levels, bases, base = [], [], 0
  for i in range(n):
    lv = table(maxes[i]) if shortcut else table.canonical(q[i], maxes[i])
    levels.append(lv)
    bases.append(base)
    tight = tight_all[i][np.maximum(lv.work, 0)]
    if len(lv.work) and lv.work[0] < 0:
      tight[0] = full  # level -1: everything
    _sweep_map(q[i], gt_boxes[i], lv.work, tight, lv.index + base, modes, shortcut, collected)
    base += lv.count
  slot_map = np.repeat(np.arange(n), [lv.count for lv in levels])
  mmax = max(len(g) for g in gt_boxes)
  # padded with a repeat
  gt = np.stack([np.concatenate([g, np.repeat(g[:1], mmax - len(g), axis=0)]) for g in gt_boxes])
  best = collected.best(base, slot_map, gt, height, width)
  empty = _best_iou(np.zeros((n, 4), np.int64), gt)  # each map's (0, 0, 0, 0) box
  best = np.where(best < 0, empty[slot_map], best)  # slots of empty levels: the (0, 0, 0, 0) box
  index = np.stack([lv.inverse for lv in levels]) + np.array(bases)[:, None]
  return best[:, index].transpose(1, 0, 2)


def wsol_level_best_iou(scoremap: np.ndarray, gt_boxes: np.ndarray, cam_thresholds: Any,
                        modes: tuple[bool, ...] = (True,), *, shortcut: bool = True) -> np.ndarray:
  """``best_iou_batch`` for one map (float in [0, 1], or its uint8 levels): (len(modes), T)."""
  q = scoremap if scoremap.dtype == np.uint8 else quantize(scoremap)
  table = cam_thresholds if isinstance(cam_thresholds, LevelTable) else LevelTable(cam_thresholds)
  return best_iou_batch(q[None], [np.asarray(gt_boxes, np.int64).reshape(-1, 4)], table, modes, shortcut=shortcut)[0]


class _Complex(Exception):
  """A map whose levels would take more contour work than building its component trees."""


# A map is handed to the component trees (``component_tree``) when it has more regional maxima
# than TREE_MAXIMA, when its contour calls would read more than TREE_CONTOUR_PIXELS maps' worth
# of pixels, or when one call finds more than TREE_CONTOURS borders (each costs Python work): a
# few contour calls on a smooth map are cheaper than building trees, many on a noisy one are not.
TREE_MAXIMA = 64
TREE_CONTOUR_PIXELS = 16
TREE_CONTOURS = 256


def _sweep_map(q: np.ndarray, gt: np.ndarray, work: np.ndarray, tight: np.ndarray, slots: np.ndarray,
               modes: tuple[bool, ...], shortcut: bool, out: _Boxes) -> None:
  """Boxes of every nonempty level ``work`` (ascending, foreground boxes ``tight``) into ``out``, owned by ``slots``."""
  cache: dict[int, tuple] = {}
  budget = [TREE_CONTOUR_PIXELS * q.size if shortcut else -1]

  def contours_at(j: int) -> tuple:
    # Unapproximated chains (same boxes and areas) start where the border scan started: a hole's
    # border at the foreground pixel just left of the hole (``_holes_at`` fills the hole from there).
    if j not in cache:
      x0, y0, x1, y1 = tight[j].tolist()
      if budget[0] >= 0:
        budget[0] -= (x1 - x0 + 1) * (y1 - y0 + 1)
        if budget[0] < 0:
          raise _Complex
      binary = cv2.threshold(q[y0:y1 + 1, x0:x1 + 1], int(work[j]), 1, cv2.THRESH_BINARY)[1] if work[j] >= 0 else \
          np.ones((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
      cache[j] = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE, offset=(x0, y0))
      if budget[0] >= 0 and len(cache[j][0]) > TREE_CONTOURS:
        raise _Complex
    return cache[j]

  mark = out.mark()
  try:
    _levels_by_contours(q, work, tight, slots, modes, shortcut, contours_at, out)
  except _Complex:
    out.rollback(mark)
    budget[0] = -1
    _levels_by_trees(q, gt, work, slots, modes, contours_at, out)


def _levels_by_trees(q: np.ndarray, gt: np.ndarray, work: np.ndarray, slots: np.ndarray, modes: tuple[bool, ...],
                     contours_at: Callable[[int], tuple], out: _Boxes) -> None:
  """Every level's best IoU read from the map's component trees; a single-contour level with several
  largest borders of different IoUs goes to the contour finder unless OpenCV's tie order is known."""
  multi_best, single_best, undecided = component_tree.best_ious(q, gt, any(modes), not all(modes))
  for m, multi in enumerate(modes):
    best = (multi_best if multi else single_best)[work + 1]
    ask = np.zeros(len(work), bool) if multi or _ties_follow_raster_order() else undecided[work + 1]
    out.scored[m].append((slots[~ask], best[~ask]))
    for j in np.flatnonzero(ask).tolist():
      boxes = _contour_boxes(contours_at(j)[0], multi)
      out.direct[m].append((boxes, np.full(len(boxes), slots[j])))


@functools.cache
def _ties_follow_raster_order() -> bool:
  """Whether the installed OpenCV lists outermost borders in reverse raster order of their first pixel
  (what ``component_tree`` assumes to break ties between largest borders)."""
  image = np.zeros((9, 11), np.uint8)
  starts = [(1, 1), (1, 6), (3, 9), (4, 1), (6, 1), (7, 5), (7, 9)]
  for y, x in starts:
    image[y, x] = 1
  image[3:6, 4:7] = 1
  image[4, 5] = 0  # a ring, so the list holds a hole border too
  contours, hierarchy = cv2.findContours(image, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
  outer = [tuple(c[0, 0][::-1]) for c, h in zip(contours, hierarchy[0]) if h[3] < 0]
  return outer == sorted(starts + [(3, 4)], reverse=True)


def _levels_by_contours(q: np.ndarray, work: np.ndarray, tight: np.ndarray, slots: np.ndarray,
                        modes: tuple[bool, ...], shortcut: bool, contours_at: Callable[[int], tuple],
                        out: _Boxes) -> None:
  """The proofs (``_proven_levels``) where they hold, one contour call per level elsewhere."""
  proof = _proven_levels(q, work, tight, contours_at, single=not all(modes),
                         max_maxima=TREE_MAXIMA) if shortcut and len(work) else None
  one, several, holes, holey = proof if proof else (np.zeros(0, np.intp), [], [], None)
  firsts = []  # each group's parts are registered once, shared by the modes
  for group in several + holes:
    firsts.append(len(out.parts))
    out.parts += group[1]
  for m, multi in enumerate(modes):
    done = np.zeros(len(work), bool)
    if len(one):  # single-contour mode too: a hole's border lies inside the outer one, so encloses less
      out.direct[m].append((tight[one], slots[one]))
      done[one] = True
    for (take, _, levels, present, choice), first in zip(several, firsts):
      if multi:
        r, c = np.nonzero(present)
        out.deferred[m].append((slots[take[r]], first + c, levels[r], 0))
        done[take] = True
      else:  # the areas compared assume no hole
        ok = np.flatnonzero((choice >= 0) & ~holey[take])
        out.deferred[m].append((slots[take[ok]], first + choice[ok], levels[ok], 0))
        done[take[ok]] = True
    if multi:  # hole borders of the settled levels
      for (take, _, levels, present), first in zip(holes, firsts[len(several):]):
        r, c = np.nonzero(present)
        out.deferred[m].append((slots[take[r]], first + c, 254 - levels[r], 1))  # q <= L in the inverted part
    todo = np.flatnonzero(~done).tolist()
    for j in todo:
      boxes = _contour_boxes(contours_at(j)[0], multi)
      out.direct[m].append((boxes, np.full(len(boxes), slots[j])))


def _proven_levels(q: np.ndarray, work: np.ndarray, tight: np.ndarray, contours_at: Callable[[int], tuple],
                   single: bool, max_maxima: int | None = None) -> tuple[np.ndarray, list, list, np.ndarray]:
  """Levels (indices into ``work``) whose borders are proven without their own contour call.

  Returns the one-component levels, whose outer box is their ``tight`` box; groups (levels'
  indices, component parts, levels, present (n, C), single-contour choice (n,) or -1 where
  unproven) of levels with several components (``_split_levels``); groups (levels' indices,
  hole parts, levels, present (n, K)) giving the holes of the settled levels; and a mask of
  the levels with holes.

  Counts for every level (``work`` ascending), walking down from the top:
  - a component of ``q > L`` either contains one of ``q > L'`` (L < L') or holds a regional
    maximum with value in (L, L']; so C(L) <= C(L') + U(L) - U(L'), U = maxima above;
  - below a level L' whose contours were extracted, each of its holes that still has a pixel
    <= L holds at least one hole of ``q > L`` (the foreground around it only grows), so
    H(L) >= P(L), P = those holes;
  - the Euler number E = C - H. Where E + P reaches the bound on C, both bounds are exact: C
    is the bound, and the holes are P's, one in each.
  Elsewhere one contour call gives C exactly (and new holes to count) and the walk goes on.
  One-component levels: the outer border's box is the foreground's bounding box; several:
  see ``_split_levels``. A hole's box is the bounding box of its part at or below L.
  """
  n = len(work)
  none = np.zeros(0, np.intp)
  skip = int(np.searchsorted(work, 0))  # level -1 (negative thresholds: all foreground) is left to the contour finder
  if skip == n:
    return none, [], [], np.zeros(n, bool)
  # Everything above the lowest level lies in its crop; outside it the map is at or below
  # that level, which is what the Euler count's zero padding and the maxima test assume.
  x0, y0, x1, y1 = tight[skip].tolist()
  inner = q[y0:y1 + 1, x0:x1 + 1]
  levels = work[skip:]
  euler = euler_numbers(inner)[levels]
  if max_maxima is not None and len(euler) and np.abs(euler).max() > max_maxima:
    raise _Complex  # many components or many holes at some level
  maxima, rows, cols = regional_maxima(inner)
  if max_maxima is not None and len(maxima) > max_maxima:
    raise _Complex
  above = len(maxima) - np.searchsorted(maxima[::-1], levels, side="right")  # maxima strictly above each level
  peaks = (maxima, rows + y0, cols + x0)
  count = np.zeros(n - skip, np.int64)
  free = np.zeros(n - skip, bool)  # proven: C = count, holes as recorded
  holey = np.zeros(n, bool)
  hole_groups = []
  top, top_count, top_above = n - skip, 0, 0
  holes, lowest = [], np.zeros(0, np.int64)  # the last extracted level's holes and their lowest values
  while top > 0:
    bound = top_count + above[:top] - top_above  # on C
    expected = bound  # E where the bound is exact and the holes are the counted ones
    if len(holes):
      present = lowest[None, :] <= levels[:top, None]
      expected = bound - present.sum(axis=1)
    fails = np.flatnonzero(euler[:top] != expected)
    stop = int(fails[-1]) if len(fails) else -1
    count[stop + 1:top] = bound[stop + 1:]
    free[stop + 1:top] = True
    if len(holes):
      rows = stop + 1 + np.flatnonzero(present[stop + 1:].any(axis=1))
      if len(rows):
        hole_groups.append((rows + skip, holes, levels[rows], present[rows]))
        holey[rows + skip] = True
    if stop < 0:
      break
    contours, hierarchy = contours_at(stop + skip)  # exact count here; its boxes come from these contours
    top, top_count, top_above = stop, component_count(hierarchy, len(contours)), int(above[stop])
    holes, lowest = (_holes_at(q, int(levels[stop]), tight[stop + skip], contours, hierarchy)
                     if len(contours) > top_count else ([], lowest[:0]))
  one = np.flatnonzero(free & (count == 1)) + skip
  several = np.flatnonzero(free & (count >= 2))
  groups, pos = [], 0
  while pos < len(several):
    group = _split_levels(q, levels, tight[skip:], several[pos:], count, peaks, single)
    if group is None:  # cannot happen; stay exact by leaving the level to the contour finder
      pos += 1
      continue
    groups.append((group[0] + skip, *group[1:]))
    pos += len(group[0])
  return one, groups, hole_groups, holey


def _holes_at(q: np.ndarray, level: int, box: np.ndarray, contours: tuple,
              hierarchy: np.ndarray) -> tuple[list, np.ndarray]:
  """Holes of ``q > level`` as inverted parts (255 - q on the hole, 0 elsewhere: "q <= L" is
  "part > 254 - L") and their lowest values. An unapproximated hole border starts on the
  foreground pixel just left of its hole, so each hole is filled from there; labelling the
  background (4-connected, off the foreground box's edge) is the fallback."""
  x0, y0, x1, y1 = box.tolist()
  crop = q[y0:y1 + 1, x0:x1 + 1]
  background = cv2.threshold(crop, level, 255, cv2.THRESH_BINARY_INV)[1]
  inverted = cv2.bitwise_not(crop)
  seeds = [(int(c[0, 0, 0]) - x0 + 1, int(c[0, 0, 1]) - y0)
           for c, d in zip(contours, contour_depths(hierarchy, len(contours))) if d % 2]
  parts = _fill_parts(inverted, background, seeds, 4, y0, x0)
  if parts is None:
    num, labels = cv2.connectedComponents(background, connectivity=4, ltype=cv2.CV_32S)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    parts = [(cv2.bitwise_and(inverted, inverted, mask=(labels == i).view(np.uint8)), y0, x0)
             for i in np.setdiff1d(np.arange(1, num), edge).tolist()]
  return parts, np.array([255 - int(cv2.minMaxLoc(part)[1]) for part, _, _ in parts], np.int64)


def _split_levels(q: np.ndarray, work: np.ndarray, tight: np.ndarray, several: np.ndarray, count: np.ndarray,
                  maxima: tuple[np.ndarray, np.ndarray, np.ndarray], single: bool) -> tuple | None:
  """The leading levels of ``several`` (C >= 2) that the components of the first one ("base") settle.

  The base's outer contours give the components' boxes; when those are disjoint, each box holds only
  its own component's pixels above the base. Otherwise flood fills from the regional maxima
  above the base give the components (each holds one). At a level L >= base, if the number of base
  components reaching above L equals C(L), each holds exactly one component of ``q > L``, and
  its box is the bounding box of the base component's part above L. With ``single``, the
  largest border is picked by contour area, which for a component without holes is (2x2
  cells with 4 of its pixels) + 0.5 (cells with 3); ties are left unproven (OpenCV's order
  would decide them).
  """
  base = int(several[0])
  level = int(work[base])
  x0, y0, x1, y1 = tight[base].tolist()
  crop = q[y0:y1 + 1, x0:x1 + 1]
  inside = _above(crop, level)
  # Outermost borders only (a component inside another's hole is missed: then the count differs).
  outer = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))[0]
  rects = [cv2.boundingRect(k) for k in outer]
  if len(rects) == count[base] and _disjoint(rects):  # each box holds only its own component above the level
    parts = [(q[y:y + h, x:x + w], y, x) for x, y, w, h in rects]
  else:
    values, rows, cols = maxima
    high = np.flatnonzero(values > level)[::-1]  # lowest peak first: the highest one's (largest) region is left over
    seeds = list(zip((cols[high] - x0).tolist(), (rows[high] - y0).tolist()))
    parts = _fill_parts(crop, inside, seeds, 8, y0, x0, int(count[base]))
    if parts is None or len(parts) != count[base]:
      return None
  peaks = np.array([cv2.minMaxLoc(image)[1] for image, _, _ in parts])
  levels = work[several]
  present = peaks[None, :] > levels[:, None]
  valid = present.sum(axis=1) == count[several]
  stop = len(several) if valid.all() else int(np.argmin(valid))
  if stop == 0:
    return None
  take, present, levels = several[:stop], present[:stop], levels[:stop]
  choice = np.full(stop, -1, np.intp)
  if single:
    area = np.where(present, np.stack([_component_areas(image, levels) for image, _, _ in parts], axis=1), -1.0)
    unique = (area == area.max(axis=1, keepdims=True)).sum(axis=1) == 1
    choice[unique] = area[unique].argmax(axis=1)
  return take, parts, levels, present, choice


def _disjoint(rects: list) -> bool:
  """Whether no two (x, y, w, h) rectangles share a pixel."""
  for i, (x, y, w, h) in enumerate(rects):
    for u, v, r, t in rects[i + 1:]:
      if x < u + r and u < x + w and y < v + t and v < y + h:
        return False
  return True


def _component_areas(image: np.ndarray, levels: np.ndarray) -> np.ndarray:
  """Contour area of ``image > L`` for each level, where that is one component without holes.

  The border through the pixel centres encloses (2x2 cells with 4 pixels above L) + 0.5
  (cells with 3): 0.5 (#cells with s1 > L + #cells with s2 > L) for a cell's sorted values
  s1 <= s2 <= s3 <= s4, over the zero-padded image.
  """
  p = cv2.copyMakeBorder(image, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
  pair_lo, pair_hi = cv2.min(p[:, :-1], p[:, 1:]), cv2.max(p[:, :-1], p[:, 1:])
  s1 = cv2.min(pair_lo[:-1], pair_lo[1:])
  s2 = cv2.min(cv2.max(pair_lo[:-1], pair_lo[1:]), cv2.min(pair_hi[:-1], pair_hi[1:]))
  at_most = np.cumsum(_histogram(s1) + _histogram(s2))  # cells with s1 <= L, plus cells with s2 <= L
  return 0.5 * (2 * s1.size - at_most[levels])
