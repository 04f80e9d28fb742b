"""Line charts as inline SVG for the report page: training curves, BoxAcc against the CAM threshold, PxAP's PR curve.

SVG keeps the page one self-contained file that any browser draws sharply at any
size, with no plotting library to install.
"""

from __future__ import annotations

import html
import math
from typing import Mapping, Sequence

import numpy as np

# Distinguishable on white and for the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
WIDTH, HEIGHT = 480, 300
MARGIN = {"left": 56, "right": 16, "top": 30, "bottom": 44}


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
  """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
  if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
    return [lo]
  raw = (hi - lo) / max(1, count)
  step = 10 ** math.floor(math.log10(raw))
  step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
  first = math.ceil(lo / step) * step
  return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
  return f"{value:g}" if abs(value) < 1e5 else f"{value:.1e}"


def line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str, x_label: str,
               y_label: str, markers: Sequence[tuple[float, str]] = (), y_range: tuple[float, float] | None = None,
               ) -> str:
  """An SVG ``<svg>`` element: one polyline per series, vertical marker lines with labels, axes with ticks.

  ``series`` maps a legend name to (x values, y values); non-finite points are skipped.
  ``markers`` are (x, label) pairs drawn as dashed vertical lines (e.g. chosen thresholds).
  """
  points = {name: [(float(x), float(y)) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
            for name, (xs, ys) in series.items()}
  xs = [x for pts in points.values() for x, _ in pts] + [float(x) for x, _ in markers]
  ys = [y for pts in points.values() for _, y in pts]
  if not xs or not ys:
    raise ValueError(f"chart {title!r} has no finite point to draw")
  x0, x1 = min(xs), max(xs)
  y0, y1 = y_range if y_range is not None else (min(ys), max(ys))
  if x1 == x0:
    x0, x1 = x0 - 0.5, x1 + 0.5
  if y1 == y0:
    y0, y1 = y0 - 0.5, y1 + 0.5
  left, top = MARGIN["left"], MARGIN["top"]
  plot_w, plot_h = WIDTH - left - MARGIN["right"], HEIGHT - top - MARGIN["bottom"]

  def px(x: float) -> float:
    return left + (x - x0) / (x1 - x0) * plot_w

  def py(y: float) -> float:
    return top + (1 - (min(max(y, y0), y1) - y0) / (y1 - y0)) * plot_h

  out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
         f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{html.escape(title)}">',
         f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
         f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
  for t in _ticks(x0, x1):
    out.append(f'<line x1="{px(t):.1f}" y1="{top + plot_h}" x2="{px(t):.1f}" y2="{top + plot_h + 4}" stroke="#999"/>'
               f'<text x="{px(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11">{_label(t)}</text>')
  for t in _ticks(y0, y1):
    out.append(f'<line x1="{left - 4}" y1="{py(t):.1f}" x2="{left + plot_w}" y2="{py(t):.1f}" stroke="#eee"/>'
               f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="11">{_label(t)}</text>')
  out.append(f'<text x="{left + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle" font-size="12">'
             f'{html.escape(x_label)}</text>')
  out.append(f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" font-size="12" '
             f'transform="rotate(-90 14 {top + plot_h / 2})">{html.escape(y_label)}</text>')
  for i, (x, label) in enumerate(markers):
    out.append(f'<line x1="{px(float(x)):.1f}" y1="{top}" x2="{px(float(x)):.1f}" y2="{top + plot_h}" '
               f'stroke="#555" stroke-dasharray="4 3"/>'
               f'<text x="{px(float(x)) + 3:.1f}" y="{top + 12 + 12 * i}" font-size="10">{html.escape(label)}</text>')
  for i, (name, pts) in enumerate(points.items()):
    colour = PALETTE[i % len(PALETTE)]
    path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
    out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{path}"/>')
    out.append(f'<text x="{left + plot_w - 4}" y="{top + 14 + 13 * i}" text-anchor="end" font-size="11" '
               f'fill="{colour}">{html.escape(name)}</text>')
  out.append("</svg>")
  return "\n".join(out)


def training_curves(records: Sequence[Mapping[str, object]]) -> list[str]:
  """Loss, accuracy and learning rate against the step, from the train records of ``metrics.jsonl``."""
  train = [r for r in records if r.get("split", "train") == "train"]
  charts = []
  for key, title in (("loss", "training loss"), ("accuracy", "training accuracy"),
                     ("learning_rate", "learning rate")):
    pts = [(r["step"], r[key]) for r in train if isinstance(r.get(key), (int, float))]
    if pts:
      steps, values = zip(*pts)
      charts.append(line_chart({key: (steps, values)}, title=title, x_label="step", y_label=key))
  return charts


def box_accuracy_chart(cam_thresholds: Sequence[float], curves: Mapping[int, Sequence[float]], *,
                       paper_threshold: float | None = None) -> str:
  """BoxAcc against the CAM threshold per IoU threshold, the best threshold of each marked (the WSOL figure).

  ``curves`` maps an IoU threshold in percent to BoxAcc (percent) at each CAM threshold.
  The paper protocol's fixed threshold (a fraction of the max, not of the min-max range)
  is marked on the same axis for comparison.
  """
  taus = np.asarray(cam_thresholds, np.float64)
  series, markers = {}, []
  for iou, acc in sorted(curves.items()):
    acc = np.asarray(acc, np.float64)
    series[f"IoU {iou}%"] = (taus, acc)
    best = int(np.argmax(acc))
    markers.append((float(taus[best]), f"best @{iou}: {taus[best]:.2f} ({acc[best]:.1f})"))
  if paper_threshold is not None:
    markers.append((float(paper_threshold), f"paper: {paper_threshold:g} of max"))
  return line_chart(series, title="box accuracy against the CAM threshold", x_label="CAM threshold",
                    y_label="BoxAcc (%)", markers=markers, y_range=(0.0, 100.0))


def precision_recall_chart(precision: Sequence[float], recall: Sequence[float], pxap: float) -> str:
  """PxAP's pixel precision-recall curve (walked from the top score bin)."""
  return line_chart({f"PxAP {pxap:.1f}": (recall, precision)}, title="pixel precision-recall",
                    x_label="recall", y_label="precision", y_range=(0.0, 1.0))
