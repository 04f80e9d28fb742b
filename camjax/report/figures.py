"""Pictures of class activation maps: overlays, boxes, top-k grids, class-specific units, HTML report.

Pillow + NumPy for drawing; OpenCV for the colour maps and, through
``camjax.localization.maps``, for resizing and normalising maps as the evaluators do.
Images are uint8 (H, W, 3) RGB; maps are float (h, w) at any resolution (they are
resized bilinearly to the image). Boxes are ``(x0, y0, x1, y1)`` inclusive pixel
coordinates; ground truth is drawn green and predictions red, as in the paper's figures.
"""

from __future__ import annotations

import base64
import html
import json
import os
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camjax.localization import maps

GT_COLOR = (0, 200, 0)
PRED_COLOR = (230, 0, 0)
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (20, 20, 20)

_CV2_COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO}


def colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
  """Values in [0, 1] (clipped) -> uint8 RGB of shape ``values.shape + (3,)``.

  ``jet`` and ``turbo`` (its perceptually smoother successor) are OpenCV's 256-entry tables,
  looked up at ``round(255 * x)``; ``gray`` is that level on all three channels.
  """
  x = np.clip(np.asarray(values, np.float32), 0.0, 1.0)
  if name != "gray" and name not in _CV2_COLORMAPS:
    raise ValueError(f"colour map must be 'jet', 'turbo' or 'gray', got {name!r}")
  levels = np.round(x * 255.0).astype(np.uint8)
  if name == "gray" or levels.size == 0:  # OpenCV refuses an empty array
    return np.repeat(levels[..., None], 3, axis=-1)
  bgr = cv2.applyColorMap(levels.reshape(-1, 1), _CV2_COLORMAPS[name])  # OpenCV tables are BGR
  return bgr[:, 0, ::-1].reshape(x.shape + (3,))


def _as_image(image: Any) -> np.ndarray:
  arr = np.asarray(image)
  if arr.ndim == 2:
    arr = np.repeat(arr[..., None], 3, axis=-1)
  if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
    raise ValueError(f"image must be (H, W, 3) RGB, got shape {arr.shape}")
  arr = arr[..., :3]
  if arr.dtype != np.uint8:
    arr = np.clip(np.round(arr * 255.0 if arr.max() <= 1.0 else arr), 0, 255).astype(np.uint8)
  return arr


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of a float (h, w) map to ``size`` = (H, W) (pixel centres aligned), as the evaluators do."""
  return maps.resize_map(cam, size, interpolation="linear", dtype=np.float32)


def normalize_map(cam: np.ndarray) -> np.ndarray:
  """Min-max scale to [0, 1]; a constant map, or one with NaN or Inf, becomes zeros."""
  cam = np.asarray(cam, np.float32)
  if not np.isfinite(cam).all():
    return np.zeros_like(cam)
  return maps.min_max(cam, dtype=np.float32)


def overlay(image: Any, cam: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet",
            normalize: bool = True) -> np.ndarray:
  """Blend the colour-mapped ``cam`` (resized to the image) over ``image``: ``(1 - alpha) * image + alpha * heat``."""
  img = _as_image(image)
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  heat = resize_map(cam, img.shape[:2])
  heat = colormap(normalize_map(heat) if normalize else heat, cmap).astype(np.float32)
  out = (1.0 - alpha) * img.astype(np.float32) + alpha * heat
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def draw_boxes(image: Any, boxes: Any, *, color: tuple[int, int, int] = PRED_COLOR, width: int = 3) -> np.ndarray:
  """Rectangles for (N, 4) inclusive boxes; the outline lies inside each box."""
  img = Image.fromarray(_as_image(image).copy())
  draw = ImageDraw.Draw(img)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  for x0, y0, x1, y1 in boxes:
    if x1 < x0 or y1 < y0:
      continue
    draw.rectangle([int(x0), int(y0), int(x1), int(y1)], outline=tuple(color), width=width)
  return np.asarray(img)


def font(size: int = 14) -> ImageFont.ImageFont:
  """Pillow's built-in font at ``size`` px (bitmap fallback on old Pillow)."""
  try:
    return ImageFont.load_default(size=size)
  except TypeError:
    return ImageFont.load_default()


def _text_height(fnt: ImageFont.ImageFont) -> int:
  box = fnt.getbbox("Ag")
  return int(box[3] - box[1]) + 6


def _fit(text: str, fnt: ImageFont.ImageFont, width: int) -> str:
  if fnt.getlength(text) <= width:
    return text
  while text and fnt.getlength(text + "...") > width:
    text = text[:-1]
  return text + "..."


def captioned(image: Any, caption: str, *, font_size: int = 14) -> np.ndarray:
  """The image with one line of text above it (shortened to fit the width)."""
  img = _as_image(image)
  fnt = font(font_size)
  band = _text_height(fnt)
  canvas = Image.new("RGB", (img.shape[1], img.shape[0] + band), BACKGROUND)
  canvas.paste(Image.fromarray(img), (0, band))
  ImageDraw.Draw(canvas).text((3, 2), _fit(caption, fnt, img.shape[1] - 6), fill=TEXT_COLOR, font=fnt)
  return np.asarray(canvas)


def image_grid(images: Sequence[Any], *, ncols: int | None = None, captions: Sequence[str] | None = None,
               tile: tuple[int, int] | None = None, pad: int = 4, font_size: int = 14) -> np.ndarray:
  """Tiles in rows of ``ncols``, each resized to ``tile`` = (H, W) (default: the first image's size)."""
  if not images:
    raise ValueError("image_grid needs at least one image")
  arrays = [_as_image(im) for im in images]
  if tile is None:
    tile = arrays[0].shape[:2]
  ncols = ncols or int(np.ceil(np.sqrt(len(arrays))))
  tiles = []
  for i, arr in enumerate(arrays):
    if arr.shape[:2] != tuple(tile):
      arr = np.asarray(Image.fromarray(arr).resize((tile[1], tile[0]), Image.BILINEAR))
    if captions is not None:
      arr = captioned(arr, captions[i], font_size=font_size)
    tiles.append(arr)
  th, tw = tiles[0].shape[:2]
  nrows = -(-len(tiles) // ncols)
  canvas = np.full((nrows * th + (nrows + 1) * pad, ncols * tw + (ncols + 1) * pad, 3), BACKGROUND, np.uint8)
  for i, t in enumerate(tiles):
    r, c = divmod(i, ncols)
    y, x = pad + r * (th + pad), pad + c * (tw + pad)
    canvas[y:y + th, x:x + tw] = t
  return canvas


def topk_figure(image: Any, cams: Sequence[np.ndarray], class_names: Sequence[str], scores: Sequence[float], *,
                pred_boxes: Sequence[Any] | None = None, gt_boxes: Any = None, alpha: float = 0.5,
                cmap: str = "jet", tile: int = 224, title: str | None = None) -> np.ndarray:
  """The input, then one CAM overlay per class with "name score" above it (the paper's Fig. 4 layout).

  ``pred_boxes[k]`` (one box or None) is drawn red on map k; ``gt_boxes`` green on all tiles.
  Boxes are in the image's pixels; tiles are resized keeping the aspect ratio.
  """
  img = _as_image(image)
  h, w = img.shape[:2]
  scale = tile / max(h, w)
  size = (max(1, round(h * scale)), max(1, round(w * scale)))

  def fit(arr: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.BILINEAR))

  def scaled_boxes(boxes: Any) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.round(np.stack([b[:, 0] * size[1] / w, b[:, 1] * size[0] / h,
                              (b[:, 2] + 1) * size[1] / w - 1, (b[:, 3] + 1) * size[0] / h - 1], axis=1))

  first = fit(img)
  small = first
  if gt_boxes is not None:
    first = draw_boxes(first, scaled_boxes(gt_boxes), color=GT_COLOR, width=2)
  tiles, captions = [first], [title or "input"]
  for k, (cam, name, score) in enumerate(zip(cams, class_names, scores)):
    t = overlay(small, cam, alpha=alpha, cmap=cmap)  # drawn at tile size: cheap for large photos
    if gt_boxes is not None:
      t = draw_boxes(t, scaled_boxes(gt_boxes), color=GT_COLOR, width=2)
    if pred_boxes is not None and pred_boxes[k] is not None and len(np.asarray(pred_boxes[k]).reshape(-1)):
      t = draw_boxes(t, scaled_boxes(pred_boxes[k]), color=PRED_COLOR, width=2)
    tiles.append(t)
    captions.append(f"{name} {score:.2f}")
  return image_grid(tiles, ncols=len(tiles), captions=captions, tile=size)


def rank_class_units(kernel: np.ndarray, class_id: int, top_units: int) -> np.ndarray:
  """Units of the last conv layer sorted by their classifier weight for ``class_id``, largest first."""
  kernel = np.asarray(kernel)
  if kernel.ndim != 2 or not 0 <= class_id < kernel.shape[1]:
    raise ValueError(f"kernel must be (K, C) with class_id < C; got shape {kernel.shape}, class_id {class_id}")
  order = np.argsort(-kernel[:, class_id], kind="stable")
  return order[:top_units]


def class_units_figure(features: np.ndarray, images: Sequence[Any], kernel: np.ndarray, class_id: int, *,
                       top_units: int = 4, top_images: int = 3, alpha: float = 0.5, cmap: str = "jet",
                       tile: int = 128) -> tuple[np.ndarray, np.ndarray]:
  """Class-specific units (paper Sec. 5): the units with the largest weights for ``class_id``
  and, for each (one row), its activation map on the images that activate it most.

  A row's maps share one colour scale (the unit's largest activation there);
  the first tile names the unit and its weight, the others the image index and peak.

  Args:
    features: (N, h, w, K) maps of the layer feeding global pooling.
    images: N uint8 images.
    kernel: (K, C) classifier weights.
  Returns the figure and the chosen unit ids.
  """
  features = np.asarray(features, np.float32)
  if features.ndim != 4 or len(images) != features.shape[0] or features.shape[-1] != np.asarray(kernel).shape[0]:
    raise ValueError(f"features must be (N, h, w, K) matching {len(images)} images and kernel rows; "
                     f"got {features.shape} and kernel {np.asarray(kernel).shape}")
  units = rank_class_units(kernel, class_id, top_units)
  tiles, captions = [], []
  peak = features.max(axis=(1, 2))  # (N, K)
  weights = np.asarray(kernel)[:, class_id]
  top_images = min(top_images, features.shape[0])
  for unit in units:
    best = np.argsort(-peak[:, unit], kind="stable")[:top_images]
    scale = max(float(peak[best[0], unit]), 1e-12)  # one scale per unit: weaker images look weaker
    for j, n in enumerate(best):
      img = _as_image(images[n])
      tiles.append(overlay(img, np.clip(features[n, :, :, unit] / scale, 0.0, 1.0), alpha=alpha, cmap=cmap,
                           normalize=False))
      captions.append(f"unit {unit} w={weights[unit]:.2f}" if j == 0 else f"#{n} max={peak[n, unit]:.2f}")
  return image_grid(tiles, ncols=top_images, captions=captions, tile=(tile, tile)), units


def save_png(image: Any, path: str | os.PathLike, *, compress_level: int = 1) -> str:
  """Write a uint8 RGB array as PNG, creating the directory.

  zlib level 1 by default: photos overlaid with heat maps barely compress
  further, and level 6 costs about three times as long.
  """
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(_as_image(image)).save(path, format="PNG", compress_level=compress_level)
  return path


def _data_uri(path: str) -> str:
  with open(path, "rb") as f:
    return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def _format_metric(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, (dict, list, tuple)):
    return json.dumps(value, default=str)
  return str(value)


def write_report_html(path: str | os.PathLike, metrics: dict, images: Sequence[tuple[str, str]], *,
                      title: str = "camjax report", embed: bool = True,
                      sections: Sequence[tuple[str, str]] = ()) -> str:
  """A single HTML file with a metrics table and titled pictures that opens without a server.

  ``embed=True`` puts every PNG inside the file (base64), so the report can be
  moved alone; otherwise images are linked by paths relative to the report.
  ``sections`` are (heading, HTML) pairs placed between the table and the pictures
  (charts as inline SVG, further tables); their HTML is trusted as it is.
  """
  path = os.fspath(path)
  root = os.path.dirname(os.path.abspath(path))
  rows = "\n".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_format_metric(v))}</td></tr>"
                   for k, v in metrics.items())
  figures = []
  for caption, png in images:
    if not os.path.isfile(png):
      raise FileNotFoundError(f"report image not found: {png}")
    src = _data_uri(png) if embed else os.path.relpath(os.path.abspath(png), root)
    figures.append(f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
                   f"<figcaption>{html.escape(caption)}</figcaption></figure>")
  doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
th {{ background: #f4f4f4; }}
td.num {{ text-align: right; }}
figure {{ margin: 0 0 2em 0; }}
img, svg {{ max-width: 100%; height: auto; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1em; margin-bottom: 2em; }}
figcaption {{ font-size: 0.9em; color: #555; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<table>
{rows}
</table>
{chr(10).join(f"<h2>{html.escape(h)}</h2>{chr(10)}{body}" for h, body in sections)}
{chr(10).join(figures)}
</body></html>
"""
  os.makedirs(root, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(doc)
  return path
