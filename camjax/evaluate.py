"""Score saved localization maps against WSOL-standard metadata, from any framework.

    python -m camjax.evaluate --scoremaps DIR_OR_NPZ --metadata DIR --protocol wsol \
        [--output results.json] [--cam-curve-interval 0.01] [--no-multi-contour]

Maps: a directory holding ``<image_id>.npy`` (image ids may contain slashes, giving
subdirectories; ``<image_id without extension>.npy`` is also accepted) or one ``.npz``
keyed by image id. Metadata (the WSOL evaluation standard's layout): ``image_ids.txt``,
``image_sizes.txt`` (``id,width,height``), ``localization.txt`` with ``id,x0,y0,x1,y1``
(one box per line) or, for mask datasets, ``id,mask_path,ignore_path`` (PxAP; mask paths
relative to ``--mask-root``); ``class_labels.txt`` is not needed for these scores.

--protocol wsol: each map is resized to 224 x 224 (cv2.INTER_CUBIC, as the standard's
inference code), min-max normalized (a constant map becomes zeros), and boxes are scaled
with ``int(x * 224 / W)``; reports MaxBoxAcc@30/50/70 and MaxBoxAccV2 (multi-contour) or
MaxBoxAcc (single contour), or PxAP for mask metadata.
--protocol paper: maps are taken as ground-truth class maps (the saved maps carry no
class ranking), resized bilinearly to the original image size, and scored as GT-known
localization accuracy (box from pixels above 20% of the max, largest 8-connected
component, IoU >= 0.5 with a ground-truth box in original pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Iterator

import cv2
import numpy as np

from camjax import localization as loc

RESIZE = 224


def read_metadata(metadata_dir: str) -> dict[str, Any]:
  """Image ids, sizes and either boxes (``kind="boxes"``) or mask paths (``kind="masks"``)."""
  def lines(name: str) -> list[list[str]]:
    path = os.path.join(metadata_dir, name)
    if not os.path.exists(path):
      raise FileNotFoundError(f"missing {path}: --metadata must point at a directory with image_ids.txt, "
                              "image_sizes.txt and localization.txt")
    with open(path) as f:
      return [line.rstrip("\n").split(",") for line in f if line.strip()]

  image_ids = [row[0] for row in lines("image_ids.txt")]
  sizes = {}
  for row in lines("image_sizes.txt"):
    sizes[row[0]] = (int(row[1]), int(row[2]))
  boxes: dict[str, list[tuple[int, ...]]] = {}
  masks: dict[str, list[str]] = {}
  ignores: dict[str, str] = {}
  loc_rows = lines("localization.txt")
  kind = "masks" if loc_rows and len(loc_rows[0]) == 3 else "boxes"
  for n, row in enumerate(loc_rows):
    if kind == "boxes":
      if len(row) != 5:
        raise ValueError(f"localization.txt line {n + 1}: expected id,x0,y0,x1,y1; got {','.join(row)}")
      boxes.setdefault(row[0], []).append(tuple(int(float(v)) for v in row[1:]))
    else:
      if len(row) != 3:
        raise ValueError(f"localization.txt line {n + 1}: expected id,mask_path,ignore_path; got {','.join(row)}")
      masks.setdefault(row[0], []).append(row[1])
      if row[2]:
        ignores[row[0]] = row[2]
  for i, image_id in enumerate(image_ids):
    if kind == "boxes" and image_id not in boxes:
      raise ValueError(f"image {i} ({image_id}): no box in localization.txt")
    if kind == "masks" and image_id not in masks:
      raise ValueError(f"image {i} ({image_id}): no mask in localization.txt")
    if kind == "boxes" and image_id not in sizes:
      raise ValueError(f"image {i} ({image_id}): no size in image_sizes.txt")
  return {"image_ids": image_ids, "sizes": sizes, "kind": kind, "boxes": boxes, "masks": masks, "ignores": ignores}


class MapSource:
  """Maps by image id from a directory of .npy files or one .npz."""

  def __init__(self, path: str):
    self.path = path
    self.npz = None
    if os.path.isfile(path):
      self.npz = np.load(path, allow_pickle=False)
    elif not os.path.isdir(path):
      raise FileNotFoundError(f"--scoremaps {path} is neither a directory of .npy files nor an .npz file")

  def __call__(self, index: int, image_id: str) -> np.ndarray:
    if self.npz is not None:
      if image_id not in self.npz.files:
        raise ValueError(f"image {index} ({image_id}): not in {self.path}")
      arr = self.npz[image_id]
    else:
      candidates = [os.path.join(self.path, image_id + ".npy"),
                    os.path.join(self.path, os.path.splitext(image_id)[0] + ".npy")]
      found = next((c for c in candidates if os.path.exists(c)), None)
      if found is None:
        raise ValueError(f"image {index} ({image_id}): no map at {candidates[0]}")
      arr = np.load(found, allow_pickle=False)
    arr = np.asarray(arr)
    while arr.ndim > 2 and arr.shape[0] == 1:
      arr = arr[0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
      raise ValueError(f"image {index} ({image_id}): map must be a 2-D float array; got {arr.dtype} {arr.shape}")
    if not np.isfinite(arr).all():
      raise ValueError(f"image {index} ({image_id}): map contains NaN or Inf")
    return arr


def normalize_wsol(scoremap: np.ndarray, size: int = RESIZE) -> np.ndarray:
  """Resize to size x size (bicubic) and min-max normalize to [0, 1]; constant maps become zeros."""
  m = cv2.resize(scoremap.astype(np.float64), (size, size), interpolation=cv2.INTER_CUBIC)
  lo, hi = m.min(), m.max()
  if hi == lo:
    return np.zeros_like(m)
  return np.clip((m - lo) / (hi - lo), 0.0, 1.0)


def scale_box(box: tuple[int, ...], width: int, height: int, size: int = RESIZE) -> tuple[int, int, int, int]:
  """``int(x * size / W)`` per coordinate, as the standard."""
  x0, y0, x1, y1 = map(float, box)
  return (int(x0 * size / width), int(y0 * size / height), int(x1 * size / width), int(y1 * size / height))


def load_mask(path: str, size: int = RESIZE) -> np.ndarray:
  """Grayscale mask, nearest-neighbour resized, > 0.5."""
  img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
  if img is None:
    raise FileNotFoundError(f"cannot read mask {path}")
  return cv2.resize(img.astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST) > 0.5


def _chunks(n: int, size: int) -> Iterator[range]:
  for start in range(0, n, size):
    yield range(start, min(n, start + size))


def evaluate(scoremaps: str, metadata: str, protocol: str = "wsol", *, cam_curve_interval: float = 0.01,
             multi_contour: bool = True, iou_thresholds: tuple[int, ...] = (30, 50, 70), mask_root: str | None = None,
             paper_threshold: float = 0.2, num_workers: int | None = None, batch_size: int = 256) -> dict[str, Any]:
  """Stream every image of ``metadata`` through the chosen protocol's accumulator."""
  meta = read_metadata(metadata)
  source = MapSource(scoremaps)
  ids = meta["image_ids"]
  thresholds = np.arange(0, 1, cam_curve_interval)
  settings = {"protocol": protocol, "scoremaps": scoremaps, "metadata": metadata, "num_images": len(ids)}
  if protocol == "wsol" and meta["kind"] == "masks":
    acc = loc.PxapAccumulator(thresholds)
    root = mask_root if mask_root is not None else metadata
    for chunk in _chunks(len(ids), batch_size):
      maps = np.stack([normalize_wsol(source(i, ids[i])) for i in chunk])
      fg = np.stack([np.any([load_mask(os.path.join(root, p)) for p in meta["masks"][ids[i]]], axis=0) for i in chunk])
      ignore = np.stack([load_mask(os.path.join(root, meta["ignores"][ids[i]])) if ids[i] in meta["ignores"]
                         else np.zeros((RESIZE, RESIZE), bool) for i in chunk])
      acc.add(maps, fg, ignore)
    result = acc.result()
    settings.update(cam_curve_interval=cam_curve_interval, metric="PxAP", resize=RESIZE)
  elif protocol == "wsol":
    acc = loc.WsolAccumulator(thresholds, iou_thresholds, multi_contour, num_workers=num_workers)
    try:
      for chunk in _chunks(len(ids), batch_size):
        maps = np.stack([normalize_wsol(source(i, ids[i])) for i in chunk])
        boxes = [np.array([scale_box(b, *meta["sizes"][ids[i]]) for b in meta["boxes"][ids[i]]], np.int64)
                 for i in chunk]
        acc.add(maps, boxes)
    finally:
      acc.close()
    result = acc.result()
    settings.update(cam_curve_interval=cam_curve_interval, multi_contour=multi_contour,
                    iou_thresholds=list(iou_thresholds), resize=RESIZE, interpolation="cubic")
  elif protocol == "paper":
    if meta["kind"] != "boxes":
      raise ValueError("--protocol paper needs box metadata (localization.txt with id,x0,y0,x1,y1)")
    acc = loc.PaperAccumulator(paper_threshold)
    for i, image_id in enumerate(ids):
      width, height = meta["sizes"][image_id]
      cam = cv2.resize(source(i, image_id).astype(np.float64), (width, height), interpolation=cv2.INTER_LINEAR)
      boxes = np.array(meta["boxes"][image_id], np.int64)
      acc.add(None, None, [0], [boxes], gt_known_cams=cam[None].astype(np.float64))
    result = acc.result()
    settings.update(metric="GT-known localization accuracy", threshold=paper_threshold, iou_threshold=0.5,
                    resize="original image size (bilinear)")
  else:
    raise ValueError(f"--protocol must be wsol or paper; got {protocol!r}")
  return {"results": result, "settings": settings}


def format_table(results: dict[str, Any]) -> str:
  rows = [(k, f"{v:.2f}" if isinstance(v, float) else str(v)) for k, v in results.items()]
  width = max(len(k) for k, _ in rows)
  line = "-" * (width + 12)
  return "\n".join([line] + [f"{k:<{width}}  {v:>8}" for k, v in rows] + [line])


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m camjax.evaluate", description=__doc__.split("\n\n")[0])
  parser.add_argument("--scoremaps", required=True, help="directory of <image_id>.npy or one .npz keyed by image id")
  parser.add_argument("--metadata", required=True, help="directory with image_ids.txt, image_sizes.txt, localization.txt")
  parser.add_argument("--protocol", choices=("wsol", "paper"), default="wsol")
  parser.add_argument("--output", help="write the results as JSON here")
  parser.add_argument("--cam-curve-interval", type=float, default=0.01)
  parser.add_argument("--multi-contour", action=argparse.BooleanOptionalAction, default=True,
                      help="all contours (MaxBoxAccV2, default) or only the largest (--no-multi-contour: MaxBoxAcc)")
  parser.add_argument("--iou-thresholds", default="30,50,70", help="comma-separated IoU thresholds in percent")
  parser.add_argument("--mask-root", help="root of mask paths for PxAP metadata (default: --metadata)")
  parser.add_argument("--paper-threshold", type=float, default=0.2)
  parser.add_argument("--num-workers", type=int, default=0, help="processes for box extraction (0: every core)")
  args = parser.parse_args(argv)
  if not 0 < args.cam_curve_interval < 1:
    parser.error("--cam-curve-interval must be in (0, 1), e.g. 0.01 or 0.001")
  try:
    iou_thresholds = tuple(int(t) for t in args.iou_thresholds.split(","))
  except ValueError:
    parser.error("--iou-thresholds must be comma-separated integers, e.g. 30,50,70")
  out = evaluate(args.scoremaps, args.metadata, args.protocol, cam_curve_interval=args.cam_curve_interval,
                 multi_contour=args.multi_contour, iou_thresholds=iou_thresholds, mask_root=args.mask_root,
                 paper_threshold=args.paper_threshold, num_workers=args.num_workers)
  print(format_table(out["results"]))
  if args.output:
    with open(args.output, "w") as f:
      json.dump(out, f, indent=2)
    print(f"wrote {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
