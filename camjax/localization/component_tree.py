"""Component trees of a uint8 map: the WSOL borders of every binarization level from one pass.

The borders OpenCV's contour finder returns for ``q > L`` are the outer borders of the
8-connected components of ``q > L`` and the borders of its holes (4-connected components of
``q <= L`` that do not reach the image edge). Over all levels L these are the nodes of two
component trees: the max-tree of ``q`` (8-connected) and the min-tree of ``q`` (4-connected).
A node keeps one pixel set while it is alive, so its box, and its IoU against the ground
truth, are computed once; a level's best box is the best node alive at it.

Single-contour mode needs the border with the largest contour area. An outer border's area
is the polygon area of its component with the holes filled, and a border inside another
encloses no more, so the largest border is the outer border of an outermost component. The
outermost components with their holes filled are the components of ``g > L``, where ``g``
(the map with its holes filled, 4-connected background) is read from the min-tree: a pixel
joins the edge-connected background at the level of its lowest ancestor that reaches the
edge. Polygon areas through pixel centres are counted over 2x2 cells (1 for a cell with four
pixels in the shape, 1/2 for three), accumulated up the max-tree of ``g``.

Trees are built by union-find over the pixels sorted by level (Berger et al., ICIP 2007;
canonical form as in Carlinet and Geraud, IEEE TIP 2014), compiled with numba.
"""

from __future__ import annotations

import numba
import numpy as np

_EIGHT = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)], np.int64)
_FOUR = np.array([(-1, 0), (0, -1), (0, 1), (1, 0)], np.int64)
_NONE = -2.0  # no node alive: the caller's "no border" (the (0, 0, 0, 0) box)


def _compiled(fn):
  """numba-compiled, cached on disk beside the module (or in the user's cache) so that worker
  processes load it instead of compiling; without any writable place, compiled per process."""
  try:
    return numba.njit(cache=True, nogil=True)(fn)
  except RuntimeError:
    return numba.njit(nogil=True)(fn)


@_compiled
def _order_descending(values: np.ndarray) -> np.ndarray:
  """Pixel indices sorted by value, highest first (counting sort; ties in raster order)."""
  counts = np.zeros(257, np.int64)
  for i in range(values.size):
    counts[256 - values[i]] += 1
  for v in range(1, 257):
    counts[v] += counts[v - 1]
  order = np.empty(values.size, np.int32)
  for i in range(values.size):
    slot = 255 - values[i]
    order[counts[slot]] = i
    counts[slot] += 1
  return order


@_compiled
def _max_tree(values: np.ndarray, height: int, width: int, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Canonical max-tree: ``parent`` per pixel and the processing order (children before parents).

  A node is a component of ``values >= v``; its canonical pixel is the one whose parent has a
  lower value (or the root, its own parent); other pixels point to their node's canonical pixel.
  The union-find runs on a copy padded by one pixel that is never reached (no bounds checks),
  with union by rank; ``top`` holds the tree root of each set.
  """
  n = values.size
  wide = width + 2
  steps = np.empty(offsets.shape[0], np.int64)
  for k in range(offsets.shape[0]):
    steps[k] = offsets[k, 0] * wide + offsets[k, 1]
  order = _order_descending(values)
  parent = np.empty(n, np.int32)
  zpar = np.full((height + 2) * wide, -1, np.int32)
  rank = np.zeros((height + 2) * wide, np.uint8)
  top = np.empty((height + 2) * wide, np.int32)
  for i in range(n):
    p = order[i]
    pp = (p // width + 1) * wide + p % width + 1
    parent[p] = p
    zpar[pp] = pp
    top[pp] = p
    root = pp
    for k in range(steps.size):
      r = pp + steps[k]
      up = zpar[r]
      if up < 0 or up == root:
        continue  # not reached yet (or padding), or already in this set
      while zpar[r] != r:  # find, with path halving
        zpar[r] = zpar[zpar[r]]
        r = zpar[r]
      if r == root:
        continue
      parent[top[r]] = p
      if rank[r] > rank[root]:
        r, root = root, r
      elif rank[r] == rank[root]:
        rank[root] += 1
      zpar[r] = root
      top[root] = p
  for i in range(n - 1, -1, -1):  # root first: point every pixel at a canonical pixel
    p = order[i]
    up = parent[p]
    if values[parent[up]] == values[up]:
      parent[p] = parent[up]
  return parent, order


@_compiled
def _boxes(parent: np.ndarray, order: np.ndarray, width: int) -> np.ndarray:
  """(n, 4) inclusive boxes (x0, y0, x1, y1) of every node's pixels, read at canonical pixels."""
  n = parent.size
  box = np.empty((n, 4), np.int64)
  for p in range(n):
    box[p, 0] = box[p, 2] = p % width
    box[p, 1] = box[p, 3] = p // width
  for i in range(n - 1):  # children before parents; the root is last
    p = order[i]
    up = parent[p]
    box[up, 0] = min(box[up, 0], box[p, 0])
    box[up, 1] = min(box[up, 1], box[p, 1])
    box[up, 2] = max(box[up, 2], box[p, 2])
    box[up, 3] = max(box[up, 3], box[p, 3])
  return box


@_compiled
def _iou(x0: int, y0: int, x1: int, y1: int, gt: np.ndarray, height: int, width: int) -> float:
  """Best IoU of a tight box, as the standard reports it ((x + w, y + h) clipped), over ground-truth boxes."""
  x1 = min(x1 + 1, width - 1)
  y1 = min(y1 + 1, height - 1)
  best = 0.0
  for m in range(gt.shape[0]):
    iw = min(x1, gt[m, 2]) - max(x0, gt[m, 0]) + 1
    ih = min(y1, gt[m, 3]) - max(y0, gt[m, 1]) + 1
    inter = max(iw, 0) * max(ih, 0)
    union = (x1 - x0 + 1) * (y1 - y0 + 1) + (gt[m, 2] - gt[m, 0] + 1) * (gt[m, 3] - gt[m, 1] + 1) - inter
    value = inter / union if union > 0 else 0.0
    best = max(best, value)
  return best


@_compiled
def _spread_max(grid: np.ndarray) -> np.ndarray:
  """best[i] = max of grid[a, b] over a <= i <= b (grid: values of nodes alive on [a, b])."""
  size = grid.shape[0]
  best = np.full(size, _NONE)
  for b in range(size):
    running = _NONE
    for a in range(size):
      running = max(running, grid[a, b])
      if a <= b:
        grid[a, b] = running  # max over a' <= a
  for i in range(size):
    for b in range(i, size):
      best[i] = max(best[i], grid[i, b])
  return best


@_compiled
def best_ious(q: np.ndarray, gt: np.ndarray, multi: bool, single: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """For L = -1..255 (index L + 1; -2 where ``q > L`` has no border): the best IoU over all borders
  (``multi``), the IoU of the largest-area border (``single``), and whether the latter level has
  several largest borders with different IoUs. Modes not asked for are left at -2.

  Among equal areas the border that starts last in raster order is taken (OpenCV lists
  outermost borders in reverse order of their first pixel; ``sweep`` checks that the installed
  OpenCV does, and asks the contour finder at the flagged levels otherwise).
  """
  height, width = q.shape
  flat = q.ravel()
  inverted = 255 - flat
  hole_parent, hole_order = _max_tree(inverted, height, width, _FOUR)
  hole_box = _boxes(hole_parent, hole_order, width)
  multi_best = np.full(257, _NONE)
  single_best = np.full(257, _NONE)
  undecided = np.zeros(257, np.bool_)
  if multi:
    multi_best = _all_borders(flat, inverted, hole_parent, hole_box, gt, height, width)
  if single:
    single_best, undecided = _largest_border(_filled(flat, inverted, hole_parent, hole_order, hole_box, width, height),
                                             gt, height, width)
  return multi_best, single_best, undecided


@_compiled
def _reaches_edge(box: np.ndarray, p: int, width: int, height: int) -> bool:
  return box[p, 0] == 0 or box[p, 1] == 0 or box[p, 2] == width - 1 or box[p, 3] == height - 1


@_compiled
def _all_borders(flat: np.ndarray, inverted: np.ndarray, hole_parent: np.ndarray, hole_box: np.ndarray,
                 gt: np.ndarray, height: int, width: int) -> np.ndarray:
  """Best IoU over the components (max-tree nodes) and holes (min-tree nodes off the edge) alive at each level."""
  grid = np.full((257, 257), _NONE)  # [L_lo + 1, L_hi + 1]: best node alive exactly on that range
  parent, order = _max_tree(flat, height, width, _EIGHT)
  box = _boxes(parent, order, width)
  for p in range(flat.size):
    up = parent[p]
    root = up == p
    if not root and flat[up] == flat[p]:
      continue
    lo = -1 if root else np.int64(flat[up])  # a component of q > L for parent level <= L < its level
    hi = np.int64(flat[p]) - 1
    if hi < lo:
      continue
    score = _iou(box[p, 0], box[p, 1], box[p, 2], box[p, 3], gt, height, width)
    grid[lo + 1, hi + 1] = max(grid[lo + 1, hi + 1], score)
  for p in range(flat.size):
    up = hole_parent[p]
    if up == p or inverted[up] == inverted[p] or _reaches_edge(hole_box, p, width, height):
      continue  # the root and background reaching the edge are no holes; non-canonical pixels
    lo = np.int64(flat[p])  # a hole of q > L for its level <= L < parent level
    hi = np.int64(flat[up]) - 1
    score = _iou(hole_box[p, 0] - 1, hole_box[p, 1] - 1, hole_box[p, 2] + 1, hole_box[p, 3] + 1, gt, height,
                 width)  # the border around it
    grid[lo + 1, hi + 1] = max(grid[lo + 1, hi + 1], score)
  return _spread_max(grid)


@_compiled
def _filled(flat: np.ndarray, inverted: np.ndarray, parent: np.ndarray, order: np.ndarray, box: np.ndarray,
            width: int, height: int) -> np.ndarray:
  """The map with its holes filled: each pixel's level is that of its lowest min-tree ancestor reaching the edge."""
  anchor = np.empty(flat.size, np.int64)
  for i in range(flat.size - 1, -1, -1):  # root first
    p = order[i]
    up = parent[p]
    canonical = up == p or inverted[up] != inverted[p]
    anchor[p] = p if canonical and _reaches_edge(box, p, width, height) else anchor[up]
  g = np.empty_like(flat)
  for p in range(flat.size):
    g[p] = flat[anchor[p]]
  return g


@_compiled
def _largest_border(g: np.ndarray, gt: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """IoU of the largest filled component of ``g > L`` per level, and the levels with differing ties."""
  parent, order = _max_tree(g, height, width, _EIGHT)
  box = _boxes(parent, order, width)
  half = np.zeros(g.size, np.int64)  # twice the contour area, per node
  start = np.arange(g.size)  # first pixel in raster order, per node
  for y in range(height - 1):
    for x in range(width - 1):
      a, b, c, d = y * width + x, y * width + x + 1, (y + 1) * width + x, (y + 1) * width + x + 1
      # the two lowest pixels of the cell: levels <= the lowest hold all four (1), up to the second three (1/2)
      lo1, lo2 = (a, b) if g[a] <= g[b] else (b, a)
      hi1, hi2 = (c, d) if g[c] <= g[d] else (d, c)
      if g[lo1] <= g[hi1]:
        first, second = lo1, (lo2 if g[lo2] <= g[hi1] else hi1)
      else:
        first, second = hi1, (hi2 if g[hi2] <= g[lo1] else lo1)
      for p in (first, second):
        up = parent[p]
        node = p if up == p or g[up] != g[p] else up
        half[node] += 1
  for i in range(g.size - 1):
    p = order[i]
    half[parent[p]] += half[p]
    start[parent[p]] = min(start[parent[p]], start[p])
  size = 257
  # per range [a, b] of levels: (area, start, IoU) of the largest border alive exactly there (the
  # latest start among equal areas), and the range of IoUs among the borders with that area
  grid = np.full((5, size, size), -1.0)
  for p in range(g.size):
    up = parent[p]
    root = up == p
    if not root and g[up] == g[p]:
      continue
    lo = -1 if root else np.int64(g[up])
    hi = np.int64(g[p]) - 1
    if hi < lo:
      continue
    score = _iou(box[p, 0], box[p, 1], box[p, 2], box[p, 3], gt, height, width)
    _merge(grid, lo + 1, hi + 1, float(half[p]), float(start[p]), score, score, score)
  for b in range(size):  # [a, b] becomes the best over a' <= a on the same b
    for a in range(1, b + 1):
      _merge(grid, a, b, grid[0, a - 1, b], grid[1, a - 1, b], grid[2, a - 1, b], grid[3, a - 1, b], grid[4, a - 1, b])
  for i in range(size):  # [i, i] becomes the best over b >= i
    for b in range(i + 1, size):
      _merge(grid, i, i, grid[0, i, b], grid[1, i, b], grid[2, i, b], grid[3, i, b], grid[4, i, b])
  best = np.full(size, _NONE)
  undecided = np.zeros(size, np.bool_)
  for i in range(size):
    if grid[0, i, i] >= 0:
      best[i] = grid[2, i, i]
      undecided[i] = grid[3, i, i] != grid[4, i, i]
  return best, undecided


@_compiled
def _merge(grid: np.ndarray, a: int, b: int, area: float, start: float, score: float, low: float,
           high: float) -> None:
  """Fold one (area, start, IoU, IoU range) into ``grid[:, a, b]``."""
  if area < 0:
    return
  kept = grid[0, a, b]
  if area > kept:
    grid[0, a, b], grid[1, a, b], grid[2, a, b], grid[3, a, b], grid[4, a, b] = area, start, score, low, high
    return
  if area == kept:
    grid[3, a, b] = min(grid[3, a, b], low)
    grid[4, a, b] = max(grid[4, a, b], high)
    if start > grid[1, a, b]:
      grid[1, a, b], grid[2, a, b] = start, score
