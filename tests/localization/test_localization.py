"""Exactness of the host-side localization evaluator on hand-built maps.

Every expected number below is worked out by hand in the comments; a few random-map
tests check that the level-deduplicated WSOL sweep equals a per-threshold sweep.
"""

import subprocess
import sys

import numpy as np
import pytest

from camjax import localization as loc
from camjax.errors import UserError
from camjax.localization import sweep
import cv2
from camjax.localization.boxes import cam_levels, quantize, wsol_boxes_at_level
from camjax.localization.sweep import (_component_areas, _proven_levels, component_count, euler_numbers,
                                     regional_maxima, wsol_level_best_iou)


def wsol(m, tau, multi=False):
  return sorted(loc.boxes_from_cam(m, tau, protocol="wsol", multi_contour=multi).tolist())


def test_import_does_not_pull_jax():
  code = ("import sys, camjax.localization, camjax.evaluate; "
          "sys.exit(1 if any(m == 'jax' or m.startswith('jax.') for m in sys.modules) else 0)")
  assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_one_blob():
  m = np.zeros((10, 10))
  m[2:5, 3:7] = 1.0  # rows 2..4, cols 3..6
  assert loc.boxes_from_cam(m, 0.2, protocol="paper").tolist() == [[3, 2, 6, 4]]
  # boundingRect = (3, 2, w=4, h=3); x + w, y + h: one pixel wider and taller than tight.
  assert wsol(m, 0.5) == [[3, 2, 7, 5]]
  assert wsol(m, 0.5, multi=True) == [[3, 2, 7, 5]]


def test_two_blobs_largest_by_pixels_vs_contour_area():
  m = np.zeros((12, 12))
  m[1, 1:8] = 1.0     # 7-pixel line: largest by pixel count, contour area 0
  m[6:8, 8:10] = 1.0  # 2x2 square: 4 pixels, contour area 1
  assert loc.boxes_from_cam(m, 0.2, protocol="paper").tolist() == [[1, 1, 7, 1]]
  assert wsol(m, 0.5) == [[8, 6, 10, 8]]
  assert wsol(m, 0.5, multi=True) == [[1, 1, 8, 2], [8, 6, 10, 8]]


def test_ring_hole_border_adds_a_box_in_multi_mode():
  m = np.zeros((10, 10))
  m[1:9, 1:9] = 1.0
  m[3:7, 3:7] = 0.0  # hole rows/cols 3..6
  # Outer border: pixels 1..8 -> (1, 1, 9, 9). Hole border runs on the foreground pixels
  # around the hole, 2..7 -> boundingRect (2, 2, 6, 6) -> (2, 2, 8, 8).
  assert wsol(m, 0.5, multi=True) == [[1, 1, 9, 9], [2, 2, 8, 8]]
  assert wsol(m, 0.5) == [[1, 1, 9, 9]]
  gt = [np.array([[2, 2, 8, 8]])]
  curve_multi = loc.box_accuracy_curve(m[None], gt, [0.5], (70,), multi_contour=True)
  curve_single = loc.box_accuracy_curve(m[None], gt, [0.5], (70,), multi_contour=False)
  assert curve_multi.tolist() == [[100.0]]  # hole box matches exactly
  assert curve_single.tolist() == [[0.0]]   # IoU 49 / 81 < 0.7


def test_thin_lines_have_zero_contour_area_and_clip_at_the_border():
  m = np.zeros((8, 8))
  m[2:7, 7] = 1.0  # vertical line on the last column: x + w = 8 is clipped to W - 1 = 7
  assert wsol(m, 0.5) == [[7, 2, 7, 7]]
  d = np.zeros((8, 8))
  for i in range(1, 5):
    d[i, i] = 1.0  # diagonal 8-connected line: one component, polygon area 0
  assert wsol(d, 0.5) == [[1, 1, 5, 5]]
  assert loc.boxes_from_cam(d, 0.5, protocol="paper").tolist() == [[1, 1, 4, 4]]


def test_empty_and_constant_maps():
  zero = np.zeros((5, 6))
  assert wsol(zero, 0.3) == [[0, 0, 0, 0]]
  assert loc.boxes_from_cam(zero, 0.3, protocol="paper").shape == (0, 4)
  const = np.full((5, 6), 0.5)  # every pixel above any level below 127: the whole map, x+w clipped
  assert wsol(const, 0.3) == [[0, 0, 5, 4]]
  assert loc.boxes_from_cam(const, 0.3, protocol="paper").tolist() == [[0, 0, 5, 4]]
  # The (0, 0, 0, 0) box is scored like any other: it matches a ground truth (0, 0, 0, 0).
  assert loc.box_accuracy_curve(zero[None], [np.array([[0, 0, 0, 0]])], [0.0, 0.5], (50,)).tolist() == [[100.0, 100.0]]
  assert loc.box_accuracy_curve(zero[None], [np.array([[0, 0, 1, 1]])], [0.0], (30,)).tolist() == [[0.0]]  # IoU 1/4


def test_threshold_exactly_on_a_level_is_strict():
  m = np.zeros((4, 6))
  m[:, :3] = 100.5 / 255  # q = 100
  m[:, 3:] = 200.5 / 255  # q = 200, max(q) = 200
  assert quantize(m)[0].tolist() == [100, 100, 100, 200, 200, 200]
  assert wsol(m, 0.5) == [[3, 0, 5, 3]]     # level 100: q > 100 leaves only the right half
  assert wsol(m, 0.495) == [[0, 0, 5, 3]]   # level 99: both halves
  p = np.array([[0.2, 1.0, 1.0]])
  assert loc.boxes_from_cam(p, 0.2, protocol="paper").tolist() == [[1, 0, 2, 0]]  # 0.2 is not > 0.2


def test_several_ground_truth_boxes_take_the_best():
  m = np.zeros((10, 10))
  m[2:5, 3:7] = 1.0  # wsol box (3, 2, 7, 5)
  far = [0, 7, 1, 9]
  assert loc.box_accuracy_curve(m[None], [np.array([far])], [0.5], (50,)).tolist() == [[0.0]]
  assert loc.box_accuracy_curve(m[None], [np.array([far, [3, 2, 7, 5]])], [0.5], (50,)).tolist() == [[100.0]]


def test_iou_inclusive_and_degenerate():
  assert loc.iou([[0, 0, 0, 0]], [[0, 0, 0, 0]]).tolist() == [[1.0]]
  assert loc.iou([[0, 0, 1, 1]], [[1, 1, 2, 2]]).tolist() == [[1 / 7]]     # 1 / (4 + 4 - 1)
  assert loc.iou([[0, 0, 9, 9]], [[0, 0, 4, 9]]).tolist() == [[0.5]]
  assert loc.iou([[5, 5, 4, 4]], [[5, 5, 4, 4]]).tolist() == [[0.0]]       # zero areas: union 0
  assert loc.iou([[5, 0, 2, 0]], [[0, 0, 0, 0]]).tolist() == [[0.0]]       # union -2 + 1 < 0
  assert loc.iou(np.zeros((0, 4), int), [[0, 0, 1, 1]]).shape == (0, 1)


def test_pxap_known_precision_recall_curve():
  # fg values 0.9, 0.6, 0.1; bg 0.8, 0.3; one ignored bg pixel 0.95; bins [0,.25,.5,.75,1,2,3].
  # Walking down: tp = 1,2,2,3 and fp = 1,1,2,2 at the four non-empty steps; recall thirds:
  # AP = 1/2*1/3 + 2/3*1/3 + 2/4*0 + 3/5*1/3 = 53/90.
  m = np.array([[[0.9, 0.6, 0.1], [0.8, 0.3, 0.95]]])
  fg = np.array([[[True, True, True], [False, False, False]]])
  ignore = np.array([[[True, False, False], [False, False, True]]])  # fg pixel stays fg
  thresholds = [0.0, 0.25, 0.5, 0.75]
  assert loc.pxap(m, fg, ignore, thresholds) == pytest.approx(100 * 53 / 90)
  assert loc.pxap(m, fg, None, thresholds) < 100 * 53 / 90  # counting the 0.95 background hurts
  # Pooled over images, not averaged: splitting the set must not change the score.
  acc = loc.PxapAccumulator(thresholds)
  acc.add(m[:, :, :2], fg[:, :, :2], ignore[:, :, :2])
  acc.add(m[:, :, 2:], fg[:, :, 2:], ignore[:, :, 2:])
  assert acc.result()["PxAP"] == pytest.approx(100 * 53 / 90)


def _reference_pxap(maps, fg, ignore, thresholds):
  """docs/protocol.md's PxAP spelt out loop by loop: pooled histograms, walked from the top bin."""
  edges = np.append(np.asarray(thresholds, np.float64), [1.0, 2.0, 3.0])
  fg_hist = np.zeros(len(edges) - 1)
  bg_hist = np.zeros(len(edges) - 1)
  for m, f, g in zip(maps, fg, ignore):
    counted = ~(g & ~f)  # the ignore region minus the foreground counts nowhere
    fg_hist += np.histogram(m[f], bins=edges)[0]
    bg_hist += np.histogram(m[~f & counted], bins=edges)[0]
  total_fg = fg_hist.sum()
  ap, tp, fp, previous_recall = 0.0, 0.0, 0.0, 0.0
  for i, k in enumerate(reversed(range(len(fg_hist)))):
    tp += fg_hist[k]
    fp += bg_hist[k]
    recall = tp / total_fg
    if i >= 1 and tp + fp > 0:
      ap += tp / (tp + fp) * (recall - previous_recall)
    previous_recall = recall
  return 100.0 * ap


def test_pxap_counts_the_background_of_an_image_without_foreground():
  # Image 0 as in the test above; image 1 has no foreground: its six pixels 0.8, 0.6, 0.6, 0, 0, 0
  # are background (none ignored). Pooled, bottom bin first: fg 1,0,1,1,0,0 and bg 3,1,2,2,0,0.
  # Walking down: tp = 1,2,2,3 and fp = 2,4,5,8 at the non-empty steps; recall thirds:
  # AP = 1/3*1/3 + 2/6*1/3 + 2/7*0 + 3/11*1/3 = 31/99.
  m = np.array([[[0.9, 0.6, 0.1], [0.8, 0.3, 0.95]], [[0.8, 0.6, 0.6], [0.0, 0.0, 0.0]]])
  fg = np.array([[[True, True, True], [False, False, False]], np.zeros((2, 3), bool)])
  ignore = np.array([[[True, False, False], [False, False, True]], np.zeros((2, 3), bool)])
  thresholds = [0.0, 0.25, 0.5, 0.75]
  assert loc.pxap(m, fg, ignore, thresholds) == pytest.approx(100 * 31 / 99)
  assert _reference_pxap(m, fg, ignore, thresholds) == pytest.approx(100 * 31 / 99)
  acc = loc.PxapAccumulator(thresholds)  # the empty image alone in its batch, and first
  acc.add(m[1:], fg[1:], ignore[1:])
  acc.add(m[:1], fg[:1], ignore[:1])
  assert acc.result() == {"PxAP": pytest.approx(100 * 31 / 99), "num_images": 2}
  # Larger maps with an ignore region over the empty image too, against the loop-by-loop reference.
  rng = np.random.default_rng(0)
  maps = rng.random((4, 16, 16))
  fg = np.zeros((4, 16, 16), bool)
  fg[0, 3:9, 4:12] = True
  fg[2, 8:, :5] = True
  fg[3, 0, 0] = True
  ignore = np.zeros((4, 16, 16), bool)
  ignore[1, :6, :6] = True  # image 1: no foreground, part of its background ignored
  ignore[2, 6:12, :8] = True
  thresholds = np.arange(0, 1, 0.01)
  expected = _reference_pxap(maps, fg, ignore, thresholds)
  assert 0 < expected < 100
  assert loc.pxap(maps, fg, ignore, thresholds) == pytest.approx(expected)
  assert loc.pxap(maps[[0, 2, 3]], fg[[0, 2, 3]], ignore[[0, 2, 3]], thresholds) != pytest.approx(expected)


def test_pxap_of_a_split_without_any_foreground_is_a_user_error():
  acc = loc.PxapAccumulator([0.0, 0.5])
  acc.add(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool))
  acc.add(np.ones((1, 4, 4)), np.zeros((1, 4, 4), bool), np.ones((1, 4, 4), bool))
  with pytest.raises(UserError, match="none of the 3 images has a foreground pixel"):
    acc.result()
  with pytest.raises(UserError, match="no foreground pixel"):
    loc.pxap_from_histograms(np.zeros(3), np.ones(3))


def test_max_box_acc_keys_and_best_thresholds():
  # Image 0: blob box (3, 2, 7, 5) at every level; image 1: a two-level map.
  a = np.zeros((10, 10))
  a[2:5, 3:7] = 1.0
  b = np.zeros((10, 10))
  b[1:9, 1:9] = 0.3
  b[1:3, 1:3] = 1.0  # at tau < 0.3 box (1, 1, 9, 9); above it (1, 1, 3, 3)
  gts = [np.array([[3, 2, 7, 5]]), np.array([[1, 1, 3, 3]])]
  res = loc.max_box_acc(np.stack([a, b]), gts, cam_thresholds=[0.1, 0.5], multi_contour="both")
  assert res["MaxBoxAcc@50"] == 100.0 and res["best_threshold@50"] == 0.5
  assert res["MaxBoxAccV2"] == 100.0 and res["MaxBoxAcc"] == 100.0
  curve = loc.box_accuracy_curve(np.stack([a, b]), gts, [0.1, 0.5], (50,))
  assert curve.tolist() == [[50.0, 100.0]]
  v1 = loc.max_box_acc(np.stack([a, b]), gts, cam_thresholds=[0.1], multi_contour=False)
  assert v1["MaxBoxAcc"] == v1["MaxBoxAcc@50"] == 50.0 and "MaxBoxAccV2" not in v1


def _random_maps(rng, n, size):
  maps = []
  yy, xx = np.mgrid[:size, :size]
  for k in range(n):
    kind = k % 4
    if kind == 0:  # smooth sum of Gaussians, several peaks
      s = sum(rng.uniform(-0.3, 1) * np.exp(-((yy - rng.uniform(0, size)) ** 2 + (xx - rng.uniform(0, size)) ** 2)
                                          / (2 * rng.uniform(2, size / 3) ** 2)) for _ in range(4))
    elif kind == 1:  # noise: many components and holes
      s = rng.random((size, size))
    elif kind == 2:  # few distinct values, plateaus
      s = rng.integers(0, 4, (size, size)) / 3.0
    else:  # blocky upsampled
      s = np.kron(rng.random((size // 4, size // 4)), np.ones((4, 4)))
    s = (s - s.min()) / (s.max() - s.min() + 1e-12)
    maps.append(np.clip(s, 0, 1))
  return maps


@pytest.mark.parametrize("multi", [True, False])
@pytest.mark.parametrize("thresholds", [np.arange(0, 1, 0.011), np.array([-0.2, 0.0, 0.3, 0.999, 1.0, 1.5])])
def test_level_sweep_equals_per_threshold_sweep(multi, thresholds):
  rng = np.random.default_rng(0)
  for m in _random_maps(rng, 16, 24) + _random_maps(rng, 2, 64):
    h, w = m.shape
    x0, y0 = rng.integers(0, w // 2, 2)
    gt = np.array([[x0, y0, rng.integers(x0, w), rng.integers(y0, h)], [0, 0, w - 1, h - 1]])
    q = quantize(m)
    levels = cam_levels(thresholds, int(q.max()))
    ref = np.array([loc.iou(wsol_boxes_at_level(q, int(lv), multi_contour=multi), gt).max() for lv in levels])
    for shortcut in (True, False):
      fast = wsol_level_best_iou(m, gt, thresholds, (multi,), shortcut=shortcut)[0]
      np.testing.assert_array_equal(fast, ref)
    both = wsol_level_best_iou(m, gt, thresholds, (True, False))
    np.testing.assert_array_equal(both[0 if multi else 1], ref)


def _smooth_fields(rng, n, size, grid):
  """Bilinear upsampled noise, like a CAM from a coarse feature map: merges, holes, plateaus."""
  return [(lambda m: (m - m.min()) / (m.max() - m.min()))(
      cv2.resize(rng.normal(size=(grid, grid)), (size, size), interpolation=cv2.INTER_LINEAR)) for _ in range(n)]


@pytest.mark.parametrize("multi", [True, False])
def test_level_sweep_on_cam_like_maps_settles_holes_exactly(multi):
  rng = np.random.default_rng(5)
  thresholds = np.arange(0, 1, 1 / 512)
  holey = 0
  for m in _smooth_fields(rng, 6, 64, 5):
    q = quantize(m)
    gt = np.array([[5, 9, 40, 50], [30, 2, 60, 20]])
    levels = cam_levels(thresholds, int(q.max()))
    ref = np.array([loc.iou(wsol_boxes_at_level(q, int(lv), multi_contour=multi), gt).max() for lv in levels])
    np.testing.assert_array_equal(wsol_level_best_iou(m, gt, thresholds, (multi,))[0], ref)
    work = np.unique(np.clip(levels, -1, int(q.max()) - 1))
    tight = np.array([[0, 0, 63, 63]] * len(work))
    for j, lv in enumerate(work):  # foreground boxes, as the sweep computes them
      ys, xs = np.nonzero(q > lv)
      tight[j] = (xs.min(), ys.min(), xs.max(), ys.max())
    find = lambda j: cv2.findContours((q[tight[j, 1]:tight[j, 3] + 1, tight[j, 0]:tight[j, 2] + 1]
                                       > work[j]).view(np.uint8),
                                      cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE, offset=(int(tight[j, 0]), int(tight[j, 1])))
    holey += _proven_levels(q, work, tight, find, single=not multi)[3].sum()
  assert holey > 0  # levels with holes were proven (multi-contour mode boxes them without a contour call)


def test_hole_and_component_fallbacks_give_the_same_results(monkeypatch):
  # Holes labelled instead of filled, and components filled instead of cut out of their boxes.
  rng = np.random.default_rng(6)
  maps = _smooth_fields(rng, 4, 48, 5)
  thresholds = np.arange(0, 1, 1 / 300)
  gt = np.array([[4, 4, 30, 40]])
  expected = [wsol_level_best_iou(m, gt, thresholds, (True, False)) for m in maps]
  fill = sweep._fill_parts
  monkeypatch.setattr(sweep, "_fill_parts", lambda *a, **k: None if a[3] == 4 else fill(*a, **k))
  monkeypatch.setattr(sweep, "_disjoint", lambda rects: False)
  for m, e in zip(maps, expected):
    np.testing.assert_array_equal(wsol_level_best_iou(m, gt, thresholds, (True, False)), e)


def test_level_sweep_on_tiny_and_degenerate_maps():
  maps = [np.array([[0.7]]), np.array([[0.0, 1.0, 0.2, 1.0, 0.0]]), np.array([[0.3], [0.9], [0.1]]),
          np.pad(np.ones((1, 1)), 3), np.pad(np.eye(3), 2), np.full((4, 4), 0.5), np.zeros((3, 3))]
  checker = np.indices((6, 6)).sum(axis=0) % 2 * 0.9
  maps.append(checker)
  ring = np.pad(np.ones((5, 5)), 1)
  ring[3, 3] = 0.2
  maps.append(ring)
  for multi in (True, False):
    for m in maps:
      h, w = m.shape
      gt = np.array([[0, 0, w - 1, h - 1], [0, 0, 0, 0]])
      thresholds = np.arange(0, 1, 0.05)
      levels = cam_levels(thresholds, int(quantize(m).max()))
      ref = [loc.iou(wsol_boxes_at_level(quantize(m), int(lv), multi_contour=multi), gt).max() for lv in levels]
      np.testing.assert_array_equal(wsol_level_best_iou(m, gt, thresholds, (multi,))[0], ref)


def test_euler_numbers_and_regional_maxima_match_contours():
  rng = np.random.default_rng(3)
  for m in _random_maps(rng, 12, 20):
    q = quantize(m)
    euler = euler_numbers(q)
    maxima, rows, cols = regional_maxima(q)
    assert (q[rows, cols] == maxima).all() and (np.diff(maxima) <= 0).all()
    for level in range(int(q.max())):
      contours, hierarchy = cv2.findContours((q > level).view(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
      outer = component_count(hierarchy, len(contours))
      assert euler[level] == outer - (len(contours) - outer)
      assert outer <= (maxima > level).sum()  # each component holds a regional maximum above the level


def test_accumulator_streams_merges_and_parallel_is_identical():
  rng = np.random.default_rng(1)
  maps = np.stack(_random_maps(rng, 12, 32))
  gts = [np.array([[2, 3, 20, 25]]), np.array([[0, 0, 31, 31], [5, 5, 9, 9]])] * 6
  full = loc.WsolAccumulator(np.arange(0, 1, 0.05), multi_contour="both")
  full.add(maps, gts)
  a = loc.WsolAccumulator(np.arange(0, 1, 0.05), multi_contour="both")
  a.add(maps[:5], gts[:5])
  b = loc.WsolAccumulator(np.arange(0, 1, 0.05), multi_contour="both")
  b.add(maps[5:], gts[5:])
  summed = {k: a.state()[k] + b.state()[k] for k in a.state()}  # what an all-reduce across hosts gives
  restored = loc.WsolAccumulator(np.arange(0, 1, 0.05), multi_contour="both").load_state(summed)
  assert restored.result() == full.result()
  assert a.merge(b).result() == full.result()
  par = loc.WsolAccumulator(np.arange(0, 1, 0.05), multi_contour="both", num_workers=2, chunk_size=4)
  try:
    par.add(maps, gts)
  finally:
    par.close()
  np.testing.assert_array_equal(par.correct, full.correct)
  assert par.result() == full.result()


def test_paper_top1_top5_and_gt_known():
  def blob(y0, x0, y1, x1, size=20):
    m = np.zeros((size, size))
    m[y0:y1 + 1, x0:x1 + 1] = 1.0
    return m
  good, bad = blob(2, 2, 9, 9), blob(12, 12, 18, 18)
  gt = np.array([[2, 2, 9, 9]])
  cams = np.stack([
      np.stack([good, bad, bad, bad, bad]),   # image 0: top-1 class right, right box
      np.stack([bad, good, bad, bad, bad]),   # image 1: top-1 wrong; rank 2 is right with the right box
      np.stack([bad, bad, bad, bad, good]),   # image 2: right class at rank 3 with a wrong box
      np.stack([good] * 5),                   # image 3: right box but the class is never predicted
  ])
  classes = np.array([[7, 1, 2, 3, 4], [1, 7, 2, 3, 4], [1, 2, 7, 3, 4], [1, 2, 3, 4, 5]])
  res = loc.paper_localization(cams, classes, [7, 7, 7, 7], [gt] * 4, gt_known_cams=np.stack([good, good, bad, good]))
  assert res["top1_cls_err"] == 75.0   # only image 0
  assert res["top5_cls_err"] == 25.0   # images 0, 1, 2
  assert res["top1_loc_err"] == 75.0   # only image 0
  assert res["top5_loc_err"] == 50.0   # images 0 and 1
  assert res["gt_known_loc_acc"] == 75.0  # class ignored: images 0, 1, 3


def test_paper_heuristic_loose_and_tight_boxes():
  # Nested plateaus: > 20/255 of max keeps the 16x16 square (2..17), > 100/255 the 8x8
  # (6..13), > 110/255 only the 4x4 core (8..11). Sorted by area: 256, 64, 16. The 64 box
  # overlaps the loose one by 64 <= 128 (kept); the 16 box then overlaps the 64 one by
  # 16 <= 32 (kept). loose = (2, 2, 17, 17), tight = (6, 6, 13, 13).
  m = np.zeros((20, 20))
  m[2:18, 2:18] = 0.3
  m[6:14, 6:14] = 0.42
  m[8:12, 8:12] = 1.0
  loose, tight = loc.heuristic_boxes(m)
  assert loose.tolist() == [2, 2, 17, 17] and tight.tolist() == [6, 6, 13, 13]
  # A box overlapping a larger one by more than half of its area is dropped:
  m2 = np.zeros((20, 20))
  m2[2:18, 2:18] = 0.3
  m2[2:17, 2:17] = 1.0   # 15x15 = 225 > 128 overlap with the 256 box: dropped, tight falls back to loose
  loose2, tight2 = loc.heuristic_boxes(m2, thresholds=(20, 200))
  assert loose2.tolist() == tight2.tolist() == [2, 2, 17, 17]
  # Scoring: five guesses (c1 loose, c1 tight, c2 loose, c2 tight, c3 loose); the GT box
  # (6, 6, 13, 13) of class 4 is matched by class 1's tight box -> top-5 hit, top-1 miss.
  other = np.zeros((20, 20))
  other[0:3, 0:3] = 1.0
  res = loc.paper_heuristic_localization(np.stack([m, other, other])[None], np.array([[4, 5, 6]]), [4],
                                         [np.array([[6, 6, 13, 13]])])
  assert res["top1_loc_err"] == 100.0 and res["top5_loc_err"] == 0.0


def test_paper_accumulator_merges():
  m = np.zeros((1, 1, 8, 8))
  m[0, 0, 2:5, 2:5] = 1
  a = loc.PaperAccumulator()
  a.add(m, np.array([[3]]), [3], [np.array([[2, 2, 4, 4]])])
  b = loc.PaperAccumulator().load_state(a.state())
  assert a.merge(b).result()["top1_loc_err"] == 0.0 and a.result()["num_images"] == 2


@pytest.mark.parametrize("maps, boxes, message", [
    (np.full((2, 4, 4), np.nan), [[[0, 0, 1, 1]]] * 2, "image 0: score map contains NaN"),
    (np.stack([np.zeros((4, 4)), np.full((4, 4), np.inf)]), [[[0, 0, 1, 1]]] * 2, "image 1: score map contains Inf"),
    (np.stack([np.zeros((4, 4)), np.full((4, 4), 1.5)]), [[[0, 0, 1, 1]]] * 2, "image 1: WSOL score maps must lie in"),
    (np.zeros((2, 4)), [[[0, 0, 1, 1]]] * 2, "shape (N, H, W)"),
    (np.zeros((2, 4, 4), np.uint8), [[[0, 0, 1, 1]]] * 2, "floating dtype"),
    (np.zeros((2, 4, 4)), [[[0, 0, 1, 1]], [[0, 0, 4, 1]]], "image 1: ground-truth boxes"),
    (np.zeros((2, 4, 4)), [[[0, 0, 1, 1]], np.zeros((0, 4), int)], "image 1: no ground-truth boxes"),
    (np.zeros((2, 4, 4)), [[[0, 0, 1, 1]], [[2, 0, 1, 1]]], "image 1: ground-truth boxes"),
    (np.zeros((2, 4, 4)), [[[0, 0, 1, 1]], [[0.5, 0, 1, 1]]], "image 1: ground-truth boxes must be integers"),
    (np.zeros((2, 4, 4)), [[[0, 0, 1, 1]]], "gt_boxes has 1 entries"),
])
def test_bad_input_names_image_and_problem(maps, boxes, message):
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
    loc.max_box_acc(maps, boxes)


def test_bad_input_paper_and_pxap():
  with pytest.raises(ValueError, match="image 0: score map contains NaN"):
    loc.paper_localization(np.full((1, 1, 4, 4), np.nan), np.array([[0]]), [0], [[[0, 0, 1, 1]]])
  with pytest.raises(UserError, match="PxAP is undefined: none of the 1 images has a foreground pixel"):
    loc.pxap(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool))
  with pytest.raises(ValueError, match="gt_masks must have"):
    loc.pxap(np.zeros((1, 4, 4)), np.ones((1, 4, 5), bool))
  with pytest.raises(ValueError, match="protocol must be"):
    loc.boxes_from_cam(np.zeros((4, 4)), 0.5, protocol="other")


def test_bad_top_k_map_is_named_by_its_image():
  cams = np.zeros((2, 3, 4, 4))
  cams[1, 2] = np.nan  # image 1, third class
  with pytest.raises(UserError, match="image 1: score map contains NaN"):
    loc.paper_localization(cams, np.zeros((2, 3), int), [0, 0], [[[0, 0, 1, 1]]] * 2)


def test_component_areas_equal_contour_areas_without_holes():
  # 3x3 square: polygon through the border pixel centres has area 4; an L-tromino 0.5; a line 0.
  m = np.zeros((8, 12), np.uint8)
  m[1:4, 1:4] = 9
  m[5, 1:3] = 9
  m[6, 1] = 9
  m[1, 6:11] = 9
  labels = cv2.connectedComponents((m > 0).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)[1]
  areas = [_component_areas(np.where(labels == i, m, 0).astype(np.uint8), np.array([0, 8, 9]))
           for i in range(1, 4)]
  assert sorted(a[0] for a in areas) == [0.0, 0.5, 4.0]
  assert all(a[1] == a[0] and a[2] == 0.0 for a in areas)  # nothing above 9
  rng = np.random.default_rng(4)
  for _ in range(300):
    img = (rng.random(rng.integers(2, 12, 2)) < rng.uniform(0.3, 0.9)).astype(np.uint8)
    n, labels = cv2.connectedComponents(img, connectivity=8, ltype=cv2.CV_32S)
    contours, hierarchy = cv2.findContours(img, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    for i, c in enumerate(contours):
      if hierarchy[0, i, 3] == -1 and hierarchy[0, i, 2] == -1:  # outer border without holes
        x, y = c[0, 0]
        alone = np.where(labels == labels[y, x], rng.integers(1, 256), 0).astype(np.uint8)
        assert _component_areas(alone, np.array([0]))[0] == cv2.contourArea(c)
