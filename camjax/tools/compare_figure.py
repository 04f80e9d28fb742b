"""What ``python -m camjax.methods compare`` writes besides the JSON: the markdown table and the figure.

The figure has one row per image and one column per method (after the input):
each map over the image, the ground-truth boxes in green and the method's
predicted box in red (with ground truth: the largest contour at the method's
best MaxBoxAcc threshold, its IoU with the ground truth after the method's name;
without: the CAM paper's box at 20% of the map's maximum). The table has one row per method, the localization
columns first (percent, higher is better), then faithfulness (arrows give the
better direction), then the time per image.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

OUTPUTS = ("methods.md", "methods.json", "methods.png")
DISPLAY_NAMES = {
    "grad_cam": "Grad-CAM", "grad_cam_plus_plus": "Grad-CAM++", "smooth_grad_cam_plus_plus": "SmoothGrad-CAM++",
    "xgrad_cam": "XGrad-CAM", "hires_cam": "HiResCAM", "grad_cam_elementwise": "Grad-CAM elem.",
    "layer_cam": "LayerCAM", "eigen_grad_cam": "EigenGrad-CAM", "score_cam": "Score-CAM", "ss_cam": "SS-CAM",
    "is_cam": "IS-CAM", "ablation_cam": "Ablation-CAM", "eigen_cam": "Eigen-CAM", "backprop_saliency": "Saliency",
    "smooth_grad": "SmoothGrad", "integrated_gradients": "Integrated Grad."}
LOCALIZATION_COLUMNS = (("MaxBoxAcc", "MaxBoxAcc"), ("MaxBoxAccV2", "MaxBoxAccV2"), ("PxAP", "PxAP"),
                        ("gt_known_loc", "GT-known loc"))
# Better direction of each faithfulness score: drops in confidence and in the MoRF curve are better low.
FAITHFULNESS_COLUMNS = {"average_drop": "Avg drop ↓", "average_increase": "Avg increase ↑",
                        "deletion_auc": "Deletion ↓", "insertion_auc": "Insertion ↑", "road_morf": "ROAD MoRF ↓",
                        "road_lerf": "ROAD LeRF ↑", "road_combined": "ROAD ↑"}


def _cell(value: Any, digits: int) -> str:
  return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(results: dict) -> str:
  """One row per method: layer, localization (%), faithfulness, ms per image for the maps."""
  rows = results["methods"]
  loc = [(k, t) for k, t in LOCALIZATION_COLUMNS if any(k in r.get("localization", {}) for r in rows.values())]
  faith = [m for m in results.get("faithfulness_metrics", ()) if any(m in r.get("faithfulness", {})
                                                                       for r in rows.values())]
  header = ["method", "layer"] + [t for _, t in loc] + [FAITHFULNESS_COLUMNS.get(m, m) for m in faith]
  header += ["ms / image"]
  lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
  for name, r in rows.items():
    cells = [f"`{name}`", f"`{r['layer']}`" if r["layer"] else "input"]
    cells += [_cell(r.get("localization", {}).get(k), 1) for k, _ in loc]
    cells += [_cell(r.get("faithfulness", {}).get(m), 3) for m in faith]
    cells.append(_cell(1000.0 * r["seconds_per_image"], 1) + (" (with compile)" if r["includes_compile"] else ""))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def markdown(results: dict) -> str:
  """The file ``methods.md``: what was compared, then the table."""
  return f"# {results['title']}\n\n{results['description']}\n\n{markdown_table(results)}\n"


def display_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """A model-input image (normalized) back to uint8 RGB."""
  x = np.asarray(image, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _scaled(boxes: Any, scale: float) -> np.ndarray:
  """Inclusive pixel boxes of an image scaled by ``scale`` (a tile of another size)."""
  b = np.asarray(boxes, np.float64).reshape(-1, 4)
  return np.round(np.stack([b[:, 0] * scale, b[:, 1] * scale, (b[:, 2] + 1) * scale - 1,
                            (b[:, 3] + 1) * scale - 1], axis=1))


def _iou_caption(box: np.ndarray | None, gt: np.ndarray | None) -> str:
  from camjax.localization import iou

  if gt is None or not len(gt):
    return ""
  if box is None or not len(box):
    return " 0.00"
  return f" {float(iou(box, gt).max()):.2f}"


def figure(images: Sequence[np.ndarray], captions: Sequence[str], maps: dict[str, np.ndarray],
           pred_boxes: dict[str, list], gt_boxes: Sequence[np.ndarray | None] | None = None, *,
           tile: int = 144, alpha: float = 0.5) -> np.ndarray:
  """Rows = images, columns = input + methods; ``maps[name]`` is (N, H, W) at the images' resolution."""
  from PIL import Image

  from camjax.report import figures as viz

  tiles, texts = [], []
  for i, image in enumerate(images):
    scale = tile / max(image.shape[:2])
    size = (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)))
    small = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
    gt = None if gt_boxes is None else gt_boxes[i]

    def boxed(t: np.ndarray, box: Any = None) -> np.ndarray:
      if gt is not None and len(gt):
        t = viz.draw_boxes(t, _scaled(gt, scale), color=viz.GT_COLOR, width=2)
      if box is not None and len(box):
        t = viz.draw_boxes(t, _scaled(box, scale), color=viz.PRED_COLOR, width=2)
      return t

    tiles.append(boxed(small))
    texts.append(captions[i])
    for name, stack in maps.items():
      box = pred_boxes[name][i]
      tiles.append(boxed(viz.overlay(small, stack[i], alpha=alpha), box))
      texts.append(DISPLAY_NAMES.get(name, name) + _iou_caption(box, gt))
  return viz.image_grid(tiles, ncols=len(maps) + 1, captions=texts, font_size=11)


def write_outputs(results: dict, picture: np.ndarray | None, output: str) -> list[str]:
  """methods.md, methods.json and methods.png (when there is a picture), all or none (``app.write_together``)."""
  import json

  from camjax import app
  from camjax.report import figures as viz

  writers = {}
  for name in OUTPUTS:
    if name.endswith(".md"):
      writers[name] = app.text_writer(markdown(results))
    elif name.endswith(".json"):
      writers[name] = app.text_writer(json.dumps(results, indent=2, default=float) + "\n")
    elif picture is not None:
      writers[name] = lambda path: viz.save_png(picture, path)
  return app.write_together(output, writers)


def description(images: Any, layer: str, target: str, rows: dict, faithfulness: dict | None = None) -> str:
  """The paragraph above the table: what the maps explain and how each column is measured."""
  text = (f"Maps of the {target}: CAM methods at `{layer}` (the map global pooling reads), attribution methods "
          "at the input pixels.")
  if images.protocol:
    p = images.protocol
    text += (" Localization in percent, higher is better: MaxBoxAcc (IoU 50, largest box) and MaxBoxAccV2 (mean "
             f"over IoU {'/'.join(map(str, p['iou_thresholds']))}, all boxes) at the best of "
             f"{len(p['cam_thresholds'])} CAM thresholds (Choe et al. 2020), PxAP where the data set has masks, "
             f"GT-known localization of the CAM paper (box at {p['paper_threshold']:g} of the map's maximum, "
             "IoU >= 0.5).")
  if faithfulness is not None:
    settings = ", ".join(f"{k} {v}" for k, v in faithfulness.items())
    text += (" Faithfulness: mean over images of `camjax.methods.faithfulness.score` "
             f"({settings}; arrows: the better direction).")
  return text + " ms / image: the maps alone, batch by batch after each method's first (compiling) batch."


def figure_data(images: Any, rows: dict, keep: dict) -> dict | None:
  """Arguments of ``compare_figure.figure``: the kept images, their captions, maps and boxes."""
  from camjax import localization

  if not keep["rows"] or not rows:
    return None
  n = len(keep["rows"])
  names = images.class_names

  def class_name(c: int) -> str:
    return names[c].split(",")[0] if names is not None and c < len(names) else f"class {c}"

  captions = [f"{r['name']}: {class_name(r['class'])}" if r["name"] else class_name(r["class"]) for r in keep["rows"]]
  maps = {name: np.stack(keep["maps"][name][:n]) for name in rows}
  boxes: dict[str, list] = {}
  for name, stack in maps.items():
    threshold = rows[name].get("localization", {}).get("v1/best_threshold@50")
    if threshold is None:  # no ground truth: the CAM paper's box at 20% of the maximum
      boxes[name] = [localization.boxes_from_cam(m, 0.2, protocol="paper") for m in stack]
    else:  # the box MaxBoxAcc scored: the largest contour at the method's best threshold
      boxes[name] = [localization.boxes_from_cam(localization.min_max(m), threshold, protocol="wsol")
                     for m in stack]
  gt = [r["boxes"] for r in keep["rows"]] if images.protocol else None
  return {"images": [r["image"] for r in keep["rows"]], "captions": captions, "maps": maps, "pred_boxes": boxes,
          "gt_boxes": gt}
