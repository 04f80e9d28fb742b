"""What a person reads after a run: ``metrics.json``, CAM pictures and ``report.html``.

Runs after evaluation: every process gathers the model's weights (a collective),
then process 0 alone writes. The headline numbers come from the evaluator's
results (``eval_results.json``); the pictures come from one extra forward pass
over the first few evaluation images:

- ``cam_grid.png``: the top-1 class's CAM on each image, ground-truth boxes in
  green, the predicted box (paper protocol) in red;
- ``top5.png``: the CAMs of the five best classes of one image with class
  name and probability above each (the paper's Fig. 4 layout);
- ``class_units.png``: the units with the largest classifier weight for that
  image's class and the images that excite them most (paper Sec. 5); models
  whose maps are their own (ACoL) have no such classifier and skip it.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np

from camjax import cam, localization
from camjax.models.base import NotCamCompatible
from camjax.report import charts, figures as viz
from camjax.train import data as train_data, sharding

log = logging.getLogger("camjax.report")

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


def headline(results: dict) -> dict[str, float]:
  """The numbers people quote, under flat names, from one evaluation's results."""
  out: dict[str, float] = {"classification_top1": results["classification"]["top1_acc"]}
  paper = results.get("paper")
  if paper:
    out["top1_loc"] = 100.0 - paper["top1_loc_err"]
    out["gt_known_loc"] = paper["gt_known_loc_acc"]
  wsol = results.get("wsol")
  if wsol:
    out["MaxBoxAcc"] = wsol["MaxBoxAcc"]
    out["MaxBoxAccV2"] = wsol["MaxBoxAccV2"]
  if results.get("pxap"):
    out["PxAP"] = results["pxap"]["PxAP"]
  return out


def metrics_summary(results: dict) -> dict[str, Any]:
  """``metrics.json``: headline numbers, the centre baseline's under ``"baseline"``, all details under ``"details"``."""
  summary: dict[str, Any] = dict(headline(results))
  if "baseline" in results:
    base = dict(results["baseline"])
    base["classification"] = results["classification"]  # the baseline borrows the model's classes
    summary["baseline"] = headline(base)
  summary["num_images"] = results["num_images"]
  summary["step"] = results["step"]
  summary["details"] = {k: v for k, v in results.items() if k != "report"}
  return summary


def class_names(config: Any) -> list[str]:
  """Label names of the configured data set ("class N" where it has none)."""
  from camjax import data

  names = data.label_names(data.prepare_from_config(config))
  if len(names) != config.model.num_classes:
    names = [f"class {i}" for i in range(config.model.num_classes)]
  return names


def _first_images(config: Any, count: int, indices: list[int] | None = None) -> dict[str, np.ndarray]:
  """The first ``count`` valid evaluation examples (or those whose eval ``index`` is listed, in that order).

  Read by this process alone, in one pass that stops as soon as it has them all.
  """
  wanted = None if indices is None else {int(i): n for n, i in enumerate(indices)}
  rows: dict[int, dict[str, np.ndarray]] = {}
  for batch in train_data.eval_batches(config, process_index=0, process_count=1):
    for i in np.nonzero(np.asarray(batch["valid"]))[0]:
      index = int(np.asarray(batch["index"])[i])
      if wanted is not None and index not in wanted:
        continue
      rows[len(rows) if wanted is None else wanted[index]] = {k: np.asarray(v)[i] for k, v in batch.items()}
      if len(rows) == (count if wanted is None else len(wanted)):
        break
    else:
      continue
    break
  if not rows:
    raise ValueError("the evaluation split has no example to draw")
  ordered = [rows[k] for k in sorted(rows)]
  return {k: np.stack([r[k] for r in ordered]) for k in ordered[0]}


def _display(images: np.ndarray, config: Any) -> np.ndarray:
  """Normalised float images back to uint8 for pictures."""
  mean, std = np.asarray(config.data.mean, np.float32), np.asarray(config.data.std, np.float32)
  return np.clip(np.round((images * std + mean) * 255.0), 0, 255).astype(np.uint8)


def _host_weights(model_state: Any) -> tuple[dict, dict, dict]:
  """Full numpy copies of the parameters, batch statistics and other state, on every process.

  A collective (``sharding.to_host``): with ``mesh.model > 1`` a kernel's shards can
  sit on other processes, so every process must call this, not just the one that draws.
  """
  state = model_state.state
  return sharding.to_host((state["params"], state["batch_stats"], state["other"]))


def write_pictures(model: Any, config: Any, workdir: str, names: list[str]) -> list[tuple[str, str]]:
  """Draw the three figures; returns (caption, path) pairs for the HTML report."""
  examples = _first_images(config, max(1, config.report.num_images))
  images = examples["image"].astype(np.float32)
  out = cam.class_activation_maps(model, images, top_k=min(5, config.model.num_classes))
  probs, ids, maps = (np.asarray(x) for x in (out.probs, out.class_ids, out.upsampled))
  shown = _display(images, config)
  cmap = config.report.cmap
  threshold = config.eval.paper_threshold

  tiles, captions = [], []
  for i in range(len(images)):
    pred = localization.boxes_from_cam(maps[i, 0], threshold, protocol="paper")
    gt = examples["boxes"][i, :examples["num_boxes"][i]]
    tile = viz.overlay(shown[i], maps[i, 0], cmap=cmap)
    tile = viz.draw_boxes(tile, gt, color=viz.GT_COLOR, width=1)
    tile = viz.draw_boxes(tile, pred, color=viz.PRED_COLOR, width=1)
    tiles.append(tile)
    mark = "ok" if ids[i, 0] == examples["label"][i] else f"true: {names[examples['label'][i]]}"
    captions.append(f"{names[ids[i, 0]]} {probs[i, 0]:.2f} ({mark})")
  size = max(176, shown.shape[1] * 2)  # room for "class_name 0.97 (ok)" above each tile
  grid = viz.image_grid(tiles, ncols=min(8, len(tiles)), captions=captions, tile=(size, size))
  figures = [("CAM of the top-1 class; ground truth green, predicted box red", viz.save_png(
      grid, os.path.join(workdir, "cam_grid.png")))]

  first = 0
  pred_boxes = [localization.boxes_from_cam(m, threshold, protocol="paper") for m in maps[first]]
  top5 = viz.topk_figure(shown[first], list(maps[first]), [names[c] for c in ids[first]], list(probs[first]),
                         pred_boxes=pred_boxes, gt_boxes=examples["boxes"][first, :examples["num_boxes"][first]],
                         cmap=cmap, tile=size, title=f"true: {names[examples['label'][first]]}")
  figures.append(("CAMs of the five best classes of one image", viz.save_png(
      top5, os.path.join(workdir, "top5.png"))))

  try:
    kernel, _ = cam.cam_weights(model)
  except NotCamCompatible:  # maps of the model's own (ACoL's fused branches): no classifier units to show
    return figures
  _, features = model(images)
  units, _ = viz.class_units_figure(np.asarray(features), shown, np.asarray(kernel), int(ids[first, 0]),
                                    top_units=4, top_images=min(4, len(images)), cmap=cmap, tile=size)
  figures.append((f"Class-specific units of '{names[ids[first, 0]]}' and the images that excite them most",
                  viz.save_png(units, os.path.join(workdir, "class_units.png"))))
  return figures


def report_sections(workdir: str, config: Any, data: dict | None, names: list[str]) -> list[tuple[str, str]]:
  """The page's charts and tables: training curves, BoxAcc against the threshold, PR curve, per-class scores."""
  import html

  from camjax.train.metrics import read_metrics

  sections = []
  try:
    records = read_metrics(workdir, "train")
  except FileNotFoundError:
    records = []
  curves = charts.training_curves(records)
  if curves:
    sections.append(("Training", '<div class="charts">' + "\n".join(curves) + "</div>"))
  data = data or {}
  localization_charts = []
  if "box_acc" in data:
    localization_charts.append(charts.box_accuracy_chart(
        data["cam_thresholds"], {int(float(k)): v for k, v in data["box_acc"].items()},
        paper_threshold=config.eval.paper_threshold))
  if "pxap_pr" in data:
    pr = data["pxap_pr"]
    localization_charts.append(charts.precision_recall_chart(pr["precision"], pr["recall"],
                                                             float(data.get("pxap", float("nan")))))
  if localization_charts:
    sections.append(("Localization against the threshold",
                     '<div class="charts">' + "\n".join(localization_charts) + "</div>"))
  if data.get("per_class"):
    rows = "\n".join(
        f"<tr><th>{html.escape(names[int(c)] if int(c) < len(names) else str(c))}</th>"
        f'<td class="num">{r["images"]}</td><td class="num">{r["top1"]:.1f}</td>'
        f'<td class="num">{r["gt_known_loc"]:.1f}</td></tr>' for c, r in data["per_class"].items())
    sections.append(("Per class", "<table><tr><th>class</th><th>images</th><th>classification top-1</th>"
                                  "<th>GT-known loc (paper)</th></tr>\n" + rows + "</table>"))
  return sections


def write_extremes(model: Any, config: Any, workdir: str, names: list[str], data: dict) -> list[tuple[str, str]]:
  """The best- and worst-localized eval images (paper protocol, true class's CAM) with their IoU."""
  figures = []
  for kind in ("best", "worst"):
    chosen = data.get(kind) or []
    if not chosen:
      continue
    examples = _first_images(config, len(chosen), indices=[c["index"] for c in chosen])
    images = examples["image"].astype(np.float32)
    out = cam.class_activation_maps(model, images, class_ids=examples["label"])
    maps = np.asarray(out.upsampled)[:, 0]
    shown = _display(images, config)
    tiles, captions = [], []
    for i, row in enumerate(chosen[:len(images)]):
      pred = localization.boxes_from_cam(maps[i], config.eval.paper_threshold, protocol="paper")
      tile = viz.overlay(shown[i], maps[i], cmap=config.report.cmap)
      tile = viz.draw_boxes(tile, examples["boxes"][i, :examples["num_boxes"][i]], color=viz.GT_COLOR, width=1)
      tiles.append(viz.draw_boxes(tile, pred, color=viz.PRED_COLOR, width=1))
      captions.append(f"{names[row['label']] if row['label'] < len(names) else row['label']}: IoU {row['iou']:.2f}")
    size = max(176, shown.shape[1] * 2)
    grid = viz.image_grid(tiles, ncols=min(6, len(tiles)), captions=captions, tile=(size, size))
    figures.append((f"The {kind}-localized test images (true class's CAM, paper protocol; ground truth green)",
                    viz.save_png(grid, os.path.join(workdir, f"{kind}_localized.png"))))
  return figures


def write(model_state: Any, config: Any, workdir: str, results: dict) -> dict[str, Any]:
  """Write ``metrics.json``, the pictures and ``report.html``; returns the summary.

  Every process must call it (the weights are gathered collectively); only process 0 writes.
  """
  summary = metrics_summary(results)
  weights = _host_weights(model_state)
  if jax.process_index() != 0:
    return summary
  with open(os.path.join(workdir, METRICS_FILE), "w") as f:
    json.dump(summary, f, indent=2, default=float)
  names = class_names(config)
  model = model_state.model_def.merge(*weights, train=False)
  figures = write_pictures(model, config, workdir, names)
  data = dict(results.get("report") or {})
  if "pxap" in results:
    data["pxap"] = results["pxap"]["PxAP"]
  figures += write_extremes(model, config, workdir, names, data)
  table = {k: v for k, v in summary.items() if k not in ("details", "baseline")}
  for k, v in summary.get("baseline", {}).items():
    table[f"centre baseline: {k}"] = v
  table["model"] = f"{config.model.name} ({config.model.pooling})"
  viz.write_report_html(os.path.join(workdir, REPORT_FILE), table, figures,
                        title=f"camjax: {config.model.name} on {config.data.name}",
                        sections=report_sections(workdir, config, data, names))
  log.info("wrote %s, %s and pictures to %s", METRICS_FILE, REPORT_FILE, workdir)
  return summary


def format_table(summary: dict[str, Any]) -> str:
  """The headline numbers beside the centre baseline, as a console table."""
  from camjax import app

  base = summary.get("baseline", {})
  rows = [(k, float(summary[k]), float(base[k]) if k in base else "-")
          for k in summary if k not in ("details", "baseline", "num_images", "step")]
  return app.format_table(("metric", "camjax", "centre baseline"), rows,
                          footer=f"({summary['num_images']} images, step {summary['step']})")
