"""Score saved localization maps (from any framework) against WSOL-standard metadata.

The scoring core of ``camjax.evaluate``: maps by image id (``MapSource``), the WSOL
standard's map and box preparation (``normalize_wsol``, ``scale_box``, ``load_mask``) and
``evaluate``, which streams every listed image through the chosen protocol's accumulator.
Protocol details: ``docs/protocol.md``. Bad input raises a ``UserError`` naming the image by
index and id; the command (``camjax.tools.evaluate``) turns it into one line.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Iterator

import cv2
import numpy as np

from camjax import app
from camjax.errors import UserError
from camjax.localization import maps as maps_lib
from camjax.localization import metadata
from camjax.localization.paper import PaperAccumulator
from camjax.localization.wsol import PxapAccumulator, WsolAccumulator

RESIZE = 224
METADATA_FILES = (metadata.IMAGE_IDS, metadata.IMAGE_SIZES, metadata.LOCALIZATION)
_NEEDS = "--metadata must hold image_ids.txt, image_sizes.txt and localization.txt"


def _image(index: int, image_id: str) -> str:
  """How every message names an image: its position and its id."""
  return f"image {index} ({image_id})"


def read_metadata(metadata_dir: str) -> metadata.Split:
  """The split in ``metadata_dir`` with what scoring needs checked: the three files, one image at least,
  and every image with a box (or mask) and a positive size."""
  if not os.path.isdir(metadata_dir):
    raise UserError(f"--metadata {metadata_dir} is not a directory; {_NEEDS}")
  for name in METADATA_FILES:
    path = os.path.join(metadata_dir, name)
    if not os.path.isfile(path):
      raise UserError(f"missing {path}: {_NEEDS}")
  split = metadata.read(metadata_dir, labels=False)
  if not split.items:
    raise UserError(f"{os.path.join(metadata_dir, metadata.IMAGE_IDS)} lists no image; give one image id per line")
  for i, item in enumerate(split.items):
    if split.kind == metadata.BOXES and not item.boxes:
      raise UserError(f"{_image(i, item.id)}: no box in localization.txt; add one or remove it from image_ids.txt")
    if split.kind == metadata.MASKS and not item.masks:
      raise UserError(f"{_image(i, item.id)}: no mask in localization.txt; add one or remove it from image_ids.txt")
    if split.kind == metadata.BOXES and item.size is None:
      raise UserError(f"{_image(i, item.id)}: no size in image_sizes.txt; add its id,width,height")
    if item.size is not None and min(item.size) <= 0:
      raise UserError(f"{_image(i, item.id)}: size {item.size[0]}x{item.size[1]} in image_sizes.txt is not "
                      "positive; give id,width,height in pixels")
  return split


def image_boxes(item: metadata.Item, index: int, *, scale: bool) -> np.ndarray:
  """The image's boxes as (M, 4) int64, checked against its size; scaled to the 224 map when ``scale``.

  A box must satisfy ``0 <= x0 <= x1 < width`` and ``0 <= y0 <= y1 < height`` in the
  original pixels (then its WSOL-scaled copy lies inside the 224 x 224 map too).
  """
  width, height = item.size
  out = []
  for coords in item.boxes:
    box = tuple(int(v) for v in coords)
    x0, y0, x1, y1 = box
    text = ",".join(map(str, box))
    if x1 < x0 or y1 < y0:
      raise UserError(f"{_image(index, item.id)}: box {text} in localization.txt has x1 < x0 or y1 < y0; "
                      "boxes are x0,y0,x1,y1")
    if x0 < 0 or y0 < 0 or x1 >= width or y1 >= height:
      raise UserError(f"{_image(index, item.id)}: box {text} in localization.txt falls outside the "
                      f"{width}x{height} image of image_sizes.txt (need 0 <= x <= {width - 1}, "
                      f"0 <= y <= {height - 1}); fix localization.txt or image_sizes.txt")
    out.append(scale_box(box, width, height) if scale else box)
  return np.array(out, np.int64).reshape(-1, 4)


class MapSource:
  """Maps by image id from a directory of .npy files or one .npz."""

  def __init__(self, path: str):
    self.path = path
    self.npz = None
    if not os.path.exists(path):
      raise UserError(f"--scoremaps {path} does not exist; give a directory of <image_id>.npy files "
                      "or one .npz keyed by image id")
    if os.path.isfile(path):
      try:
        npz = np.load(path, allow_pickle=False)
      except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"--scoremaps {path} is not a readable .npz file ({e})") from e
      if not isinstance(npz, np.lib.npyio.NpzFile):
        raise UserError(f"--scoremaps {path} holds one array, not an .npz keyed by image id; "
                        "save the maps with np.savez(path, **{image_id: map})")
      self.npz = npz
    elif not os.path.isdir(path):
      raise UserError(f"--scoremaps {path} is neither a directory of .npy files nor an .npz file")

  def __call__(self, index: int, image_id: str) -> np.ndarray:
    name = _image(index, image_id)
    if self.npz is not None:
      if image_id not in self.npz.files:
        raise UserError(f"{name}: no map in {self.path}; save one under the key {image_id!r}")
      where = f"{self.path}[{image_id!r}]"
    else:
      candidates = [os.path.join(self.path, image_id + ".npy"),
                    os.path.join(self.path, os.path.splitext(image_id)[0] + ".npy")]
      where = next((c for c in candidates if os.path.isfile(c)), None)
      if where is None:
        raise UserError(f"{name}: no map at {candidates[0]}; save one there (np.save)")
    try:
      arr = self.npz[image_id] if self.npz is not None else np.load(where, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise UserError(f"{name}: cannot read its map {where} ({app.one_line(e)}); "
                      "save it with np.save as a 2-D float array") from e
    arr = np.asarray(arr)
    while arr.ndim > 2 and arr.shape[0] == 1:
      arr = arr[0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
      raise UserError(f"{name}: map must be a non-empty 2-D float array; got {arr.dtype} {arr.shape}")
    if not np.isfinite(arr).all():
      bad = "NaN" if np.isnan(arr).any() else "Inf"
      raise UserError(f"{name}: map contains {bad}; fix the map (e.g. np.nan_to_num) before scoring")
    return arr


def normalize_wsol(scoremap: np.ndarray, size: int = RESIZE) -> np.ndarray:
  """Resize to size x size (bicubic, float64) and min-max normalize, clipped to [0, 1]; constant maps become zeros."""
  resized = maps_lib.resize_map(scoremap, (size, size), interpolation="cubic", dtype=np.float64)
  return maps_lib.min_max(resized, dtype=np.float64, clip=True)


def scale_box(box: tuple[int, ...], width: int, height: int, size: int = RESIZE) -> tuple[int, int, int, int]:
  """``int(x * size / W)`` per coordinate, as the standard."""
  x0, y0, x1, y1 = map(float, box)
  return (int(x0 * size / width), int(y0 * size / height), int(x1 * size / width), int(y1 * size / height))


def load_mask(path: str, size: int = RESIZE) -> np.ndarray:
  """Grayscale mask, nearest-neighbour resized, > 0.5."""
  img = cv2.imread(path, cv2.IMREAD_GRAYSCALE) if os.path.isfile(path) else None  # no OpenCV warning
  if img is None:
    raise UserError(f"cannot read mask {path}; fix the path in localization.txt or --mask-root")
  return maps_lib.resize_map(img, (size, size), interpolation="nearest") > 0.5


def _image_masks(item: metadata.Item, root: str, index: int) -> tuple[np.ndarray, np.ndarray]:
  """Foreground (union of the instance masks) and ignore mask of one image, at 224 x 224."""
  def read(relative: str) -> np.ndarray:
    try:
      return load_mask(os.path.join(root, relative))
    except UserError as e:
      raise UserError(f"{_image(index, item.id)}: {e}") from e

  foreground = np.any([read(p) for p in item.masks], axis=0)
  return foreground, read(item.ignore) if item.ignore else np.zeros((RESIZE, RESIZE), bool)


def _chunks(n: int, size: int) -> Iterator[range]:
  for start in range(0, n, size):
    yield range(start, min(n, start + size))


def evaluate(scoremaps: str, metadata_dir: str, protocol: str = "wsol", *, cam_curve_interval: float = 0.01,
             multi_contour: bool = True, iou_thresholds: tuple[int, ...] = (30, 50, 70), mask_root: str | None = None,
             paper_threshold: float = 0.2, num_workers: int | None = None, batch_size: int = 256) -> dict[str, Any]:
  """Stream every image of ``metadata_dir`` through the chosen protocol's accumulator.

  Returns ``{"results": ..., "settings": ...}``. Bad input (metadata, maps, masks, boxes) raises a
  ``UserError`` naming the image by index and id.
  """
  if protocol not in ("wsol", "paper"):
    raise UserError(f"--protocol must be wsol or paper; got {protocol!r}")
  split = read_metadata(metadata_dir)
  if protocol == "paper" and split.kind != metadata.BOXES:
    raise UserError("--protocol paper needs box metadata (localization.txt with id,x0,y0,x1,y1); "
                    "use --protocol wsol for masks (PxAP)")
  root = mask_root if mask_root is not None else metadata_dir
  if split.kind == metadata.MASKS and not os.path.isdir(root):
    raise UserError(f"--mask-root {root} is not a directory; give the folder the mask paths are relative to")
  source = MapSource(scoremaps)
  items = split.items
  thresholds = np.arange(0, 1, cam_curve_interval)
  settings = {"protocol": protocol, "scoremaps": scoremaps, "metadata": metadata_dir, "num_images": len(items)}
  if protocol == "wsol" and split.kind == metadata.MASKS:
    acc = PxapAccumulator(thresholds)
    for chunk in _chunks(len(items), batch_size):
      maps = np.stack([normalize_wsol(source(i, items[i].id)) for i in chunk])
      fg, ignore = (np.stack(m) for m in zip(*[_image_masks(items[i], root, i) for i in chunk]))
      acc.add(maps, fg, ignore)
    result = acc.result()
    settings.update(cam_curve_interval=cam_curve_interval, metric="PxAP", resize=RESIZE)
  elif protocol == "wsol":
    acc = WsolAccumulator(thresholds, iou_thresholds, multi_contour, num_workers=num_workers)
    try:
      for chunk in _chunks(len(items), batch_size):
        boxes = [image_boxes(items[i], i, scale=True) for i in chunk]
        maps = np.stack([normalize_wsol(source(i, items[i].id)) for i in chunk])
        acc.add(maps, boxes)
    finally:
      acc.close()
    result = acc.result()
    settings.update(cam_curve_interval=cam_curve_interval, multi_contour=multi_contour,
                    iou_thresholds=list(iou_thresholds), resize=RESIZE, interpolation="cubic")
  else:
    acc = PaperAccumulator(paper_threshold)
    for i, item in enumerate(items):
      boxes = image_boxes(item, i, scale=False)
      width, height = item.size
      cam = maps_lib.resize_map(source(i, item.id), (height, width), interpolation="linear", dtype=np.float64)
      acc.add(None, None, [0], [boxes], gt_known_cams=cam[None].astype(np.float64))
    result = acc.result()
    settings.update(metric="GT-known localization accuracy", threshold=paper_threshold, iou_threshold=0.5,
                    resize="original image size (bilinear)")
  return {"results": result, "settings": settings}
