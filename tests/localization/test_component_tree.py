"""The component-tree sweep against its definition: one contour call per threshold, every map family,
both modes, steps 0.01 and 0.001, through the contour proofs and through the trees."""

import zlib

import numpy as np
import pytest
from scipy import ndimage

from benchmarks import map_families
from camjax.localization import component_tree, sweep
from camjax.localization.boxes import cam_levels, iou, quantize, wsol_boxes_at_level

STEPS = (0.01, 0.001)


def reference(q: np.ndarray, gt: np.ndarray, thresholds: np.ndarray, multi: bool) -> np.ndarray:
  """Best IoU per threshold from the definition (one contour call per distinct level)."""
  cache = {}
  out = []
  for level in cam_levels(thresholds, int(q.max())).tolist():
    if level not in cache:
      cache[level] = iou(wsol_boxes_at_level(q, level, multi_contour=multi), gt).max()
    out.append(cache[level])
  return np.array(out)


@pytest.fixture(params=["proofs", "trees"])
def regime(request, monkeypatch):
  """"trees" sends every map to the component trees; "proofs" is the default choice."""
  if request.param == "trees":
    monkeypatch.setattr(sweep, "TREE_MAXIMA", -1)
  return request.param


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("family", list(map_families.FAMILIES))
def test_sweep_equals_one_contour_call_per_threshold(family, step, regime):
  rng = np.random.default_rng(zlib.crc32(f"{family}{step}".encode()))
  thresholds = np.arange(0, 1, step)
  table = sweep.LevelTable(thresholds)
  for seed in range(10):
    size = int(rng.integers(2, 48))
    maps, boxes = map_families.sample(family, 1, size, seed)
    q = quantize(maps)
    fast = sweep.best_iou_batch(q, boxes, table, (True, False))[0]
    for m, multi in enumerate((True, False)):
      want = reference(q[0], boxes[0], thresholds, multi)
      assert np.array_equal(fast[m], want), (family, step, seed, size, multi)


@pytest.mark.parametrize("family", ["blobs_noise3", "blobs_noise3_ring", "blobs_noise3_lines", "blobs_speckle25",
                                    "checkerboard"])
def test_full_size_noisy_maps_at_step_0001(family):
  thresholds = np.arange(0, 1, 0.001)
  maps, boxes = map_families.sample(family, 2, 224, seed=7)
  q = quantize(maps)
  fast = sweep.best_iou_batch(q, boxes, sweep.LevelTable(thresholds), (True, False))
  for i in range(len(q)):
    for m, multi in enumerate((True, False)):
      assert np.array_equal(fast[i, m], reference(q[i], boxes[i], thresholds, multi)), (family, i, multi)


def test_tree_levels_cover_minus_one_to_255():
  """best_ious reads every level, including -1 (all foreground: the whole map) and the empty ones."""
  rng = np.random.default_rng(3)
  for _ in range(20):
    q = rng.integers(0, 256, size=(int(rng.integers(1, 12)), int(rng.integers(1, 12)))).astype(np.uint8)
    gt = np.array([[0, 0, q.shape[1] - 1, q.shape[0] - 1]], np.int64)
    multi, single, _ = component_tree.best_ious(q, gt, True, True)
    for level in range(-1, 256):
      for got, mode in ((multi, True), (single, False)):
        want = -2.0 if level >= q.max() else iou(wsol_boxes_at_level(q, level, multi_contour=mode), gt).max()
        assert got[level + 1] == want, (level, mode)


def test_filled_map_is_hole_filling_at_every_level():
  rng = np.random.default_rng(5)
  for family in ("blobs_noise3_ring", "blobs_speckle25", "checkerboard"):
    maps, _ = map_families.sample(family, 3, 40, int(rng.integers(1000)))
    for q in quantize(maps):
      flat = q.ravel()
      inverted = 255 - flat
      parent, order = component_tree._max_tree(inverted, *q.shape, component_tree._FOUR)
      box = component_tree._boxes(parent, order, q.shape[1])
      g = component_tree._filled(flat, inverted, parent, order, box, q.shape[1], q.shape[0]).reshape(q.shape)
      for level in range(-1, 256):
        assert np.array_equal(g > level, ndimage.binary_fill_holes(q > level)), (family, level)


def test_opencv_tie_order_is_checked_and_not_needed(monkeypatch):
  """The installed OpenCV lists outermost borders in reverse raster order; without that order the
  tied levels go to the contour finder and the results stay the same."""
  assert sweep._ties_follow_raster_order()
  thresholds = np.arange(0, 1, 0.01)
  maps, boxes = map_families.sample("checkerboard", 6, 24, seed=2)
  more, more_boxes = map_families.sample("blobs_speckle25", 6, 24, seed=2)
  q = quantize(np.concatenate([maps, more]))
  boxes = boxes + more_boxes
  tied = sum(component_tree.best_ious(q[i], boxes[i], False, True)[2].sum() for i in range(len(q)))
  assert tied > 0  # levels where equal largest areas have different IoUs, so the order decides
  monkeypatch.setattr(sweep, "TREE_MAXIMA", -1)
  with_order = sweep.best_iou_batch(q, boxes, sweep.LevelTable(thresholds), (False,))
  monkeypatch.setattr(sweep, "_ties_follow_raster_order", lambda: False)
  without = sweep.best_iou_batch(q, boxes, sweep.LevelTable(thresholds), (False,))
  assert np.array_equal(with_order, without)
  for i in range(len(q)):
    assert np.array_equal(with_order[i, 0], reference(q[i], boxes[i], thresholds, False))


def test_worker_processes_give_the_same_counts_on_noisy_maps():
  """Workers load the compiled trees (from numba's cache or by compiling) and count the same."""
  from camjax import localization as loc

  maps, boxes = map_families.sample("blobs_speckle25", 12, 32, seed=4)
  thresholds = np.arange(0, 1, 0.01)
  serial = loc.WsolAccumulator(thresholds, multi_contour="both", num_workers=1)
  serial.add(maps, boxes)
  pool = loc.WsolAccumulator(thresholds, multi_contour="both", num_workers=2, chunk_size=3)
  try:
    pool.add(maps, boxes)
  finally:
    pool.close()
  assert np.array_equal(pool.correct, serial.correct)
