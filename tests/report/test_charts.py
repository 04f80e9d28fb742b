"""SVG charts of the report: axes map data to pixels, markers and legends show, bad input is refused."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from camjax.report import charts

SVG = "{http://www.w3.org/2000/svg}"


def _points(polyline: ET.Element) -> np.ndarray:
  return np.array([[float(v) for v in p.split(",")] for p in polyline.get("points").split()])


def test_ticks_are_round_and_cover_the_range():
  assert charts._ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
  assert charts._ticks(0, 1500) == [0, 500, 1000, 1500]
  assert charts._ticks(3, 3) == [3]


def test_a_line_maps_its_extremes_to_the_plot_corners_and_skips_non_finite_points():
  svg = ET.fromstring(charts.line_chart({"a": ([0, 1, 2, 3], [0, np.nan, 1, 2])}, title="t <1>", x_label="x",
                                        y_label="y"))
  (line,) = svg.iter(f"{SVG}polyline")
  pts = _points(line)
  left, top = charts.MARGIN["left"], charts.MARGIN["top"]
  right, bottom = charts.WIDTH - charts.MARGIN["right"], charts.HEIGHT - charts.MARGIN["bottom"]
  assert len(pts) == 3  # the NaN point is left out
  np.testing.assert_allclose(pts[0], [left, bottom], atol=0.06)
  np.testing.assert_allclose(pts[-1], [right, top], atol=0.06)
  assert "t <1>" in [t.text for t in svg.iter(f"{SVG}text")]  # escaped in the source, plain in the tree


def test_box_accuracy_chart_marks_each_best_threshold_and_the_paper_threshold():
  taus = np.arange(0, 1, 0.01)
  curves = {30: 100 - 100 * np.abs(taus - 0.3), 50: 100 - 100 * np.abs(taus - 0.5)}
  svg = charts.box_accuracy_chart(taus, curves, paper_threshold=0.2)
  labels = " ".join(t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text"))
  assert "best @30: 0.30 (100.0)" in labels and "best @50: 0.50 (100.0)" in labels and "paper: 0.2" in labels
  assert len(list(ET.fromstring(svg).iter(f"{SVG}polyline"))) == 2


def test_training_curves_read_the_train_records_only():
  records = [{"step": s, "split": "train", "loss": 1.0 / s, "accuracy": 0.1 * s, "learning_rate": 0.1}
             for s in range(1, 6)] + [{"step": 5, "split": "eval", "loss": 9.0}]
  svgs = charts.training_curves(records)
  assert len(svgs) == 3
  (loss,) = ET.fromstring(svgs[0]).iter(f"{SVG}polyline")
  assert len(_points(loss)) == 5


def test_a_chart_without_a_finite_point_is_refused():
  with pytest.raises(ValueError, match="no finite point"):
    charts.line_chart({"a": ([np.nan], [1.0])}, title="empty", x_label="x", y_label="y")
  assert re.search(r"PxAP 75\.0", charts.precision_recall_chart([1.0, 0.8], [0.0, 1.0], 75.0))
