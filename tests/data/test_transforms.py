"""Box-aware transforms: boxes, masks and pixels stay aligned through every transform."""

import numpy as np
import pytest

from camjax.data import boxes as B
from camjax.data import transforms as T

SHAPES = [(48, 64), (64, 48), (50, 50), (375, 500), (500, 333), (30, 90)]


def _rect_example(rng, height, width, min_side=4):
  """A black image with one white filled box, the same box as a 0/255 mask."""
  bw = int(rng.integers(min(min_side, width), width + 1))
  bh = int(rng.integers(min(min_side, height), height + 1))
  x0 = int(rng.integers(0, width - bw + 1))
  y0 = int(rng.integers(0, height - bh + 1))
  box = np.array([[x0, y0, x0 + bw - 1, y0 + bh - 1]], np.int64)
  image = np.zeros((height, width, 3), np.uint8)
  image[y0:y0 + bh, x0:x0 + bw] = 255
  return T.Example(image, box, image[:, :, 0].copy())


def _mapped_extent(box, region, out_size):
  """Continuous width/height of the part of `box` inside the output window."""
  left, top, right, bottom = region
  out_h, out_w = out_size
  sx, sy = out_w / (right - left), out_h / (bottom - top)
  lo_x, hi_x = (box[0] - left) * sx, (box[2] + 1 - left) * sx
  lo_y, hi_y = (box[1] - top) * sy, (box[3] + 1 - top) * sy
  return (min(hi_x, out_w) - max(lo_x, 0)), (min(hi_y, out_h) - max(lo_y, 0))


def _assert_aligned(out: T.Example, min_extent: float):
  """The box equals (within 1 px) the box recomputed from the image and from the mask."""
  from_image = B.tight_box(out.image[:, :, 0] > 127)
  from_mask = B.tight_box(out.mask > 127)
  if len(out.boxes) == 0:
    assert from_image is None and from_mask is None
    return
  assert len(out.boxes) == 1
  if min_extent < 2:  # a sliver: kept as a box, too faint to recover from pixels
    return
  assert from_image is not None and from_mask is not None
  np.testing.assert_allclose(out.boxes[0], from_image, atol=1)
  np.testing.assert_array_equal(out.boxes[0], from_mask)  # same rule, exactly
  np.testing.assert_array_equal(out.image[:, :, 0] > 127, out.image[:, :, 2] > 127)


@pytest.mark.parametrize("height,width", SHAPES)
def test_random_resized_crop_and_flip_keep_rectangle_aligned(height, width):
  rng = np.random.default_rng(height * 1000 + width)
  cut = 0
  for trial in range(40):
    ex = _rect_example(rng, height, width)
    size = int(rng.choice([32, 56, 224]))
    top, left, h, w = T.sample_crop(np.random.default_rng(trial), height, width)
    region = (left, top, left + w, top + h)
    out = T.crop_resize(ex, region, (size, size))
    ext = _mapped_extent(ex.boxes[0], region, (size, size))
    _assert_aligned(out, min(ext))
    if len(out.boxes) and min(ext) >= 2:
      inner = (ex.boxes[0][0] >= left and ex.boxes[0][2] < left + w
               and ex.boxes[0][1] >= top and ex.boxes[0][3] < top + h)
      cut += not inner
    flipped = T.horizontal_flip(out)
    _assert_aligned(flipped, min(ext))
  assert cut > 0  # the crops did cut boxes


@pytest.mark.parametrize("height,width", SHAPES)
def test_eval_transforms_keep_rectangle_aligned(height, width):
  rng = np.random.default_rng(7 * height + width)
  for _ in range(10):
    ex = _rect_example(rng, height, width)
    out = T.resize(ex, 56)
    _assert_aligned(out, min(_mapped_extent(ex.boxes[0], (0, 0, width, height), (56, 56))))
    out = T.resize_center_crop(ex, 48, 55)
    # The crop may cut the box: compare only when a good part of it remains.
    if len(out.boxes) and min(out.boxes[0][2:] - out.boxes[0][:2]) >= 2:
      _assert_aligned(out, 2)
    else:
      _assert_aligned(out, 0)


def test_random_resized_crop_with_rng_is_deterministic():
  ex = _rect_example(np.random.default_rng(0), 60, 80)
  a = T.random_resized_crop(ex, np.random.default_rng(5), 32)
  b = T.random_resized_crop(ex, np.random.default_rng(5), 32)
  np.testing.assert_array_equal(a.image, b.image)
  np.testing.assert_array_equal(a.boxes, b.boxes)
  assert a.image.shape == (32, 32, 3) and a.mask.shape == (32, 32)


def test_crop_clips_cut_boxes_and_drops_vanished_ones():
  boxes = np.array([[10, 10, 49, 49],  # cut by the second window: clipped
                    [60, 60, 69, 69],  # inside both windows
                    [0, 0, 5, 5],  # outside both: dropped
                    [20, 40, 30, 49]], np.int64)  # one pixel column inside the second
  ex = T.Example(np.zeros((100, 100, 3), np.uint8), boxes)
  out = T.crop_resize(ex, (40, 50, 100, 100), (50, 60))  # unit scale, shifted
  np.testing.assert_array_equal(out.boxes, [[20, 10, 29, 19]])
  kept, index = T.map_boxes(boxes, (30, 30, 90, 90), (60, 60))
  np.testing.assert_array_equal(index, [0, 1, 3])
  np.testing.assert_array_equal(kept, [[0, 0, 19, 19], [30, 30, 39, 39], [0, 10, 0, 19]])


def test_box_touching_the_window_edge_is_dropped_and_sliver_kept():
  boxes = np.array([[10, 10, 19, 19]], np.int64)  # extent [10, 20)
  kept, _ = T.map_boxes(boxes, (20, 0, 40, 20), (20, 20))
  assert kept.shape == (0, 4)
  # Shrink 10x: the extent [10, 20) x [10, 20) becomes [1, 2) x [1, 2).
  kept, _ = T.map_boxes(boxes, (0, 0, 200, 200), (20, 20))
  np.testing.assert_array_equal(kept, [[1, 1, 1, 1]])
  # Shrink 40x: [0.25, 0.5) has no pixel centre; the pixel holding it is kept.
  kept, _ = T.map_boxes(boxes, (0, 0, 800, 800), (20, 20))
  np.testing.assert_array_equal(kept, [[0, 0, 0, 0]])


def test_resize_scales_boxes_by_pixel_extent():
  boxes = np.array([[0, 0, 99, 49], [10, 20, 19, 29]], np.int64)
  kept, _ = T.map_boxes(boxes, (0, 0, 100, 50), (100, 200))  # x2 in x, x2 in y
  np.testing.assert_array_equal(kept, [[0, 0, 199, 99], [20, 40, 39, 59]])


def test_flip_maps_boxes_and_pixels():
  ex = _rect_example(np.random.default_rng(3), 20, 30)
  out = T.horizontal_flip(ex)
  np.testing.assert_array_equal(out.boxes[0], B.tight_box(out.image[:, :, 0]))
  np.testing.assert_array_equal(T.horizontal_flip(out).image, ex.image)
  np.testing.assert_array_equal(T.horizontal_flip(out).boxes, ex.boxes)


def test_sample_crop_respects_scale_and_ratio():
  rng = np.random.default_rng(0)
  for _ in range(200):
    top, left, h, w = T.sample_crop(rng, 375, 500, scale=(0.2, 0.9), ratio=(0.5, 2.0))
    assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500
    assert 0.2 * 0.95 <= h * w / (375 * 500) <= 0.9 * 1.05
    assert 0.5 * 0.95 <= w / h <= 2.0 * 1.05


def test_sample_crop_fallback_is_centred_and_ratio_clamped():
  rng = np.random.default_rng(0)
  # A very wide image, a crop that must fill it: every attempt fails.
  assert T.sample_crop(rng, 10, 100, scale=(1.0, 1.0), ratio=(1.0, 1.0)) == (0, 45, 10, 10)


def test_normalized_pixel_round_trip():
  rng = np.random.default_rng(0)
  height, width = 375, 500
  x0 = rng.integers(0, width, 50)
  y0 = rng.integers(0, height, 50)
  x1 = x0 + rng.integers(0, width - x0)
  y1 = y0 + rng.integers(0, height - y0)
  boxes = np.stack([x0, y0, x1, y1], 1)
  norm = B.pixel_to_normalized(boxes, height, width)
  assert norm.dtype == np.float32
  np.testing.assert_array_equal(B.normalized_to_pixel_unchecked(norm, height, width), boxes)
  np.testing.assert_array_equal(
      B.normalized_to_pixel_unchecked([[0, 0, 1, 1]], height, width), [[0, 0, width - 1, height - 1]])
  assert B.normalized_to_pixel_unchecked([], height, width).shape == (0, 4)


def test_check_boxes_sorts_bad_and_clipped():
  ok, clipped, problems = T.check_boxes([[-3, 0, 9, 9], [5, 5, 12, 30]], 20, 10)
  assert problems == [] and clipped == 2
  np.testing.assert_array_equal(ok, [[0, 0, 9, 9], [5, 5, 9, 19]])
  for bad in ([5, 0, 4, 9], [0, 5, 9, 4], [10, 0, 12, 5], [-5, 0, -1, 5], [0, 20, 3, 25],
              [np.nan, 0, 3, 3]):
    _, _, problems = T.check_boxes([bad], 20, 10)
    assert len(problems) == 1, bad


def test_wsol_box_scaling_truncates():
  np.testing.assert_array_equal(
      T.wsol_scale_boxes([[10, 20, 499, 374]], 375, 500, 224), [[4, 11, 223, 223]])


def test_normalize_and_as_rgb():
  image = np.full((2, 2, 3), 255, np.uint8)
  out = T.normalize(image, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, 1.0)
  np.testing.assert_allclose(T.normalize(image)[0, 0],
                             (1.0 - np.array(T.IMAGENET_MEAN)) / np.array(T.IMAGENET_STD), rtol=1e-6)
  assert T.as_rgb(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
  assert T.as_rgb(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5, 3)
  with pytest.raises(ValueError, match="shape"):
    T.as_rgb(np.zeros((4, 5, 4), np.uint8))
  with pytest.raises(ValueError, match="dtype"):
    T.as_rgb(np.zeros((4, 5, 3), np.float32))
