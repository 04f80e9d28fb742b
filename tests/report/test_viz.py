"""Pictures: colour maps, overlays, boxes, grids, class-specific units, the HTML report."""

import base64
import html.parser
import io

import numpy as np
import pytest
from PIL import Image

from camjax.report import figures as viz


def test_jet_reference_values():
  # OpenCV's jet table, looked up at round(255 * x) and returned as RGB (OpenCV's own order is BGR).
  got = viz.colormap(np.array([0.0, 0.5, 1.0, 0.25, -3.0]), "jet")
  np.testing.assert_array_equal(got[0], [0, 0, 128])  # dark blue
  np.testing.assert_array_equal(got[1], [130, 255, 126])  # level 128
  np.testing.assert_array_equal(got[2], [128, 0, 0])  # dark red
  np.testing.assert_array_equal(got[3], [0, 128, 255])
  np.testing.assert_array_equal(got[4], got[0])  # clipped


def test_turbo_runs_blue_to_red():
  x = np.linspace(0, 1, 11)
  rgb = viz.colormap(x, "turbo").astype(int)
  assert rgb.shape == (11, 3) and rgb.dtype == np.int64
  assert rgb[2, 2] > rgb[2, 0]  # low end bluish
  assert rgb[9, 0] > rgb[9, 2]  # high end reddish
  # The ends of the published Turbo table (Mikhailov 2019): (0.18995, 0.07176, 0.23217) and
  # (0.47960, 0.01583, 0.01055), times 255 and rounded.
  np.testing.assert_array_equal(viz.colormap(np.array([0.0, 1.0]), "turbo"), [[48, 18, 59], [122, 4, 3]])
  with pytest.raises(ValueError, match="colour map"):
    viz.colormap(x, "viridis")


def test_gray_and_shapes():
  x = np.array([[0.0, 0.5], [1.0, 2.0]])
  gray = viz.colormap(x, "gray")
  assert gray.shape == (2, 2, 3) and gray.dtype == np.uint8
  np.testing.assert_array_equal(gray[..., 0], [[0, 128], [255, 255]])
  assert (gray == gray[..., :1]).all()
  assert viz.colormap(np.zeros((0,)), "jet").shape == (0, 3)
  assert viz.colormap(np.linspace(0, 1, 12).reshape(3, 4), "turbo").shape == (3, 4, 3)


def test_maps_are_resized_and_normalised_as_the_evaluators_do():
  import cv2

  from camjax.localization import maps

  cam = np.random.default_rng(1).random((7, 9)).astype(np.float32)
  np.testing.assert_array_equal(viz.resize_map(cam, (28, 36)),
                                cv2.resize(cam, (36, 28), interpolation=cv2.INTER_LINEAR))
  np.testing.assert_array_equal(viz.normalize_map(cam), maps.min_max(cam))
  np.testing.assert_array_equal(viz.normalize_map(np.full((3, 3), 2.0)), np.zeros((3, 3)))
  np.testing.assert_array_equal(viz.normalize_map(np.array([[0.0, np.inf]])), np.zeros((1, 2)))


def test_overlay_blends_and_follows_the_map():
  image = np.full((40, 60, 3), 100, np.uint8)
  cam = np.zeros((4, 6), np.float32)
  cam[0, 0] = 1.0
  np.testing.assert_array_equal(viz.overlay(image, cam, alpha=0.0), image)
  heat = viz.overlay(image, cam, alpha=1.0)
  assert heat.shape == image.shape
  assert heat[0, 0, 0] > heat[-1, -1, 0] and heat[-1, -1, 2] > heat[0, 0, 2]  # hot top-left, cold elsewhere
  half = viz.overlay(image, cam, alpha=0.5).astype(int)
  np.testing.assert_allclose(half, np.round(0.5 * 100 + 0.5 * heat.astype(int)), atol=1)


def test_draw_boxes_inclusive_outline():
  image = np.zeros((20, 20, 3), np.uint8)
  out = viz.draw_boxes(image, [[2, 3, 10, 12]], color=viz.GT_COLOR, width=1)
  assert tuple(out[3, 2]) == viz.GT_COLOR and tuple(out[12, 10]) == viz.GT_COLOR
  assert tuple(out[7, 6]) == (0, 0, 0) and tuple(out[13, 11]) == (0, 0, 0)


def test_topk_figure_and_grid_layout():
  image = np.random.default_rng(0).integers(0, 255, (50, 100, 3), dtype=np.uint8)
  cams = [np.eye(4, 8), np.ones((4, 8))]
  fig = viz.topk_figure(image, cams, ["tabby", "tiger cat"], [0.6, 0.2], pred_boxes=[[0, 0, 49, 24], None],
                        gt_boxes=[[10, 10, 90, 40]], tile=100)
  band = fig.shape[0] - 50 - 2 * 4  # caption band above each 50x100 tile
  assert band > 0 and fig.shape[1] == 3 * 100 + 4 * 4
  assert (fig[4 + band + 0, 4 + 104 + 10] == viz.PRED_COLOR).all()  # predicted box on the first map
  grid = viz.image_grid([image] * 5, ncols=2, tile=(10, 20), pad=1)
  assert grid.shape == (3 * 10 + 4, 2 * 20 + 3, 3)


def test_class_units_ranked_by_weight_with_their_best_images():
  rng = np.random.default_rng(0)
  features = rng.uniform(0, 0.1, (3, 5, 5, 6)).astype(np.float32)
  features[1, 2, 2, 4] = 9.0  # unit 4 fires on image 1
  kernel = np.zeros((6, 2), np.float32)
  kernel[4, 1], kernel[0, 1], kernel[5, 0] = 2.0, 1.0, 5.0
  images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
  np.testing.assert_array_equal(viz.rank_class_units(kernel, 1, 2), [4, 0])
  fig, units = viz.class_units_figure(features, images, kernel, 1, top_units=2, top_images=2, tile=32)
  np.testing.assert_array_equal(units, [4, 0])
  assert fig.shape[1] == 2 * 32 + 3 * 4 and fig.ndim == 3
  with pytest.raises(ValueError, match="features"):
    viz.class_units_figure(features[:2], images, kernel, 1)


class _Collect(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.srcs, self.text = [], []

  def handle_starttag(self, tag, attrs):
    if tag == "img":
      self.srcs.append(dict(attrs)["src"])

  def handle_data(self, data):
    self.text.append(data)


def test_report_html_is_self_contained(tmp_path):
  png = viz.save_png(np.full((8, 8, 3), 200, np.uint8), tmp_path / "pics" / "a.png")
  report = viz.write_report_html(tmp_path / "report.html", {"top1_loc_err": 43.125, "model": "vgg16_gap"},
                                 [("CAMs <cat>", png)])
  parser = _Collect()
  parser.feed(open(report, encoding="utf-8").read())
  assert len(parser.srcs) == 1 and parser.srcs[0].startswith("data:image/png;base64,")
  decoded = Image.open(io.BytesIO(base64.b64decode(parser.srcs[0].split(",", 1)[1])))
  assert decoded.size == (8, 8)
  text = " ".join(parser.text)
  assert "43.12" in text and "vgg16_gap" in text and "CAMs <cat>" in text
  linked = viz.write_report_html(tmp_path / "linked.html", {}, [("a", png)], embed=False)
  assert 'src="pics/a.png"' in open(linked, encoding="utf-8").read()
