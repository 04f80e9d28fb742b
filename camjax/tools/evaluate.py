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

Bad input (a missing metadata file, a map that is missing, not 2-D float or not finite, a box
outside its image, an unreadable mask, an --output that cannot be written) ends the command
with one ``camjax: error:`` line naming the image id, and exit code 2. ``--output`` is checked
before scoring and replaced only when scoring succeeds (written to a temporary file first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from typing import Any, Iterator

import cv2
import numpy as np

from camjax import app
from camjax import localization as loc
from camjax.errors import UserError

RESIZE = 224
METADATA_FILES = ("image_ids.txt", "image_sizes.txt", "localization.txt")
_NEEDS = "--metadata must hold image_ids.txt, image_sizes.txt and localization.txt"


def _image(index: int, image_id: str) -> str:
  """How every message names an image: its position and its id."""
  return f"image {index} ({image_id})"


def read_metadata(metadata_dir: str) -> dict[str, Any]:
  """Image ids, sizes and either boxes (``kind="boxes"``) or mask paths (``kind="masks"``)."""
  if not os.path.isdir(metadata_dir):
    raise UserError(f"--metadata {metadata_dir} is not a directory; {_NEEDS}")

  def lines(name: str) -> list[list[str]]:
    path = os.path.join(metadata_dir, name)
    if not os.path.isfile(path):
      raise UserError(f"missing {path}: {_NEEDS}")
    try:
      with open(path) as f:
        return [line.rstrip("\n").split(",") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
      raise UserError(f"cannot read {path} ({e}); {_NEEDS} as text files") from e

  image_ids = [row[0] for row in lines("image_ids.txt")]
  if not image_ids:
    raise UserError(f"{os.path.join(metadata_dir, 'image_ids.txt')} lists no image; give one image id per line")
  sizes = {}
  for n, row in enumerate(lines("image_sizes.txt")):
    try:
      width, height = int(row[1]), int(row[2])
      if len(row) != 3 or width <= 0 or height <= 0:
        raise ValueError
    except (ValueError, IndexError):
      raise UserError(f"image_sizes.txt line {n + 1}: expected id,width,height with positive integer sizes; "
                      f"got {','.join(row)}") from None
    sizes[row[0]] = (width, height)
  boxes: dict[str, list[tuple[int, ...]]] = {}
  masks: dict[str, list[str]] = {}
  ignores: dict[str, str] = {}
  loc_rows = lines("localization.txt")
  kind = "masks" if loc_rows and len(loc_rows[0]) == 3 else "boxes"
  for n, row in enumerate(loc_rows):
    if kind == "boxes":
      try:
        if len(row) != 5:
          raise ValueError
        box = tuple(int(float(v)) for v in row[1:])
      except (ValueError, OverflowError):
        raise UserError(f"localization.txt line {n + 1}: expected id,x0,y0,x1,y1 (numbers); "
                        f"got {','.join(row)}") from None
      boxes.setdefault(row[0], []).append(box)
    else:
      if len(row) != 3:
        raise UserError(f"localization.txt line {n + 1}: expected id,mask_path,ignore_path; got {','.join(row)}")
      masks.setdefault(row[0], []).append(row[1])
      if row[2]:
        ignores[row[0]] = row[2]
  for i, image_id in enumerate(image_ids):
    if kind == "boxes" and image_id not in boxes:
      raise UserError(f"{_image(i, image_id)}: no box in localization.txt; add one or remove it from image_ids.txt")
    if kind == "masks" and image_id not in masks:
      raise UserError(f"{_image(i, image_id)}: no mask in localization.txt; add one or remove it from image_ids.txt")
    if kind == "boxes" and image_id not in sizes:
      raise UserError(f"{_image(i, image_id)}: no size in image_sizes.txt; add its id,width,height")
  return {"image_ids": image_ids, "sizes": sizes, "kind": kind, "boxes": boxes, "masks": masks, "ignores": ignores}


def image_boxes(meta: dict[str, Any], index: int, image_id: str, *, scale: bool) -> np.ndarray:
  """The image's boxes as (M, 4) int64, checked against its size; scaled to the 224 map when ``scale``.

  A box must satisfy ``0 <= x0 <= x1 < width`` and ``0 <= y0 <= y1 < height`` in the
  original pixels (then its WSOL-scaled copy lies inside the 224 x 224 map too).
  """
  width, height = meta["sizes"][image_id]
  out = []
  for box in meta["boxes"][image_id]:
    x0, y0, x1, y1 = box
    text = ",".join(map(str, box))
    if x1 < x0 or y1 < y0:
      raise UserError(f"{_image(index, image_id)}: box {text} in localization.txt has x1 < x0 or y1 < y0; "
                      "boxes are x0,y0,x1,y1")
    if x0 < 0 or y0 < 0 or x1 >= width or y1 >= height:
      raise UserError(f"{_image(index, image_id)}: box {text} in localization.txt falls outside the "
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
  img = cv2.imread(path, cv2.IMREAD_GRAYSCALE) if os.path.isfile(path) else None  # no OpenCV warning
  if img is None:
    raise UserError(f"cannot read mask {path}; fix the path in localization.txt or --mask-root")
  return cv2.resize(img.astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST) > 0.5


def _image_masks(meta: dict[str, Any], root: str, index: int, image_id: str) -> tuple[np.ndarray, np.ndarray]:
  """Foreground (union of the instance masks) and ignore mask of one image, at 224 x 224."""
  def read(relative: str) -> np.ndarray:
    try:
      return load_mask(os.path.join(root, relative))
    except UserError as e:
      raise UserError(f"{_image(index, image_id)}: {e}") from e

  foreground = np.any([read(p) for p in meta["masks"][image_id]], axis=0)
  ignore = meta["ignores"].get(image_id)
  return foreground, read(ignore) if ignore else np.zeros((RESIZE, RESIZE), bool)


def _chunks(n: int, size: int) -> Iterator[range]:
  for start in range(0, n, size):
    yield range(start, min(n, start + size))


def evaluate(scoremaps: str, metadata: str, protocol: str = "wsol", *, cam_curve_interval: float = 0.01,
             multi_contour: bool = True, iou_thresholds: tuple[int, ...] = (30, 50, 70), mask_root: str | None = None,
             paper_threshold: float = 0.2, num_workers: int | None = None, batch_size: int = 256) -> dict[str, Any]:
  """Stream every image of ``metadata`` through the chosen protocol's accumulator.

  Bad input (metadata, maps, masks, boxes) raises a ``UserError`` naming the image by index and id.
  """
  if protocol not in ("wsol", "paper"):
    raise UserError(f"--protocol must be wsol or paper; got {protocol!r}")
  meta = read_metadata(metadata)
  if protocol == "paper" and meta["kind"] != "boxes":
    raise UserError("--protocol paper needs box metadata (localization.txt with id,x0,y0,x1,y1); "
                    "use --protocol wsol for masks (PxAP)")
  root = mask_root if mask_root is not None else metadata
  if meta["kind"] == "masks" and not os.path.isdir(root):
    raise UserError(f"--mask-root {root} is not a directory; give the folder the mask paths are relative to")
  source = MapSource(scoremaps)
  ids = meta["image_ids"]
  thresholds = np.arange(0, 1, cam_curve_interval)
  settings = {"protocol": protocol, "scoremaps": scoremaps, "metadata": metadata, "num_images": len(ids)}
  if protocol == "wsol" and meta["kind"] == "masks":
    acc = loc.PxapAccumulator(thresholds)
    for chunk in _chunks(len(ids), batch_size):
      maps = np.stack([normalize_wsol(source(i, ids[i])) for i in chunk])
      fg, ignore = (np.stack(m) for m in zip(*[_image_masks(meta, root, i, ids[i]) for i in chunk]))
      acc.add(maps, fg, ignore)
    result = acc.result()
    settings.update(cam_curve_interval=cam_curve_interval, metric="PxAP", resize=RESIZE)
  elif protocol == "wsol":
    acc = loc.WsolAccumulator(thresholds, iou_thresholds, multi_contour, num_workers=num_workers)
    try:
      for chunk in _chunks(len(ids), batch_size):
        boxes = [image_boxes(meta, i, ids[i], scale=True) for i in chunk]
        maps = np.stack([normalize_wsol(source(i, ids[i])) for i in chunk])
        acc.add(maps, boxes)
    finally:
      acc.close()
    result = acc.result()
    settings.update(cam_curve_interval=cam_curve_interval, multi_contour=multi_contour,
                    iou_thresholds=list(iou_thresholds), resize=RESIZE, interpolation="cubic")
  else:
    acc = loc.PaperAccumulator(paper_threshold)
    for i, image_id in enumerate(ids):
      boxes = image_boxes(meta, i, image_id, scale=False)
      width, height = meta["sizes"][image_id]
      cam = cv2.resize(source(i, image_id).astype(np.float64), (width, height), interpolation=cv2.INTER_LINEAR)
      acc.add(None, None, [0], [boxes], gt_known_cams=cam[None].astype(np.float64))
    result = acc.result()
    settings.update(metric="GT-known localization accuracy", threshold=paper_threshold, iou_threshold=0.5,
                    resize="original image size (bilinear)")
  return {"results": result, "settings": settings}


def format_table(results: dict[str, Any]) -> str:
  rows = [(k, f"{v:.2f}" if isinstance(v, float) else str(v)) for k, v in results.items()]
  width = max(len(k) for k, _ in rows)
  line = "-" * (width + 12)
  return "\n".join([line] + [f"{k:<{width}}  {v:>8}" for k, v in rows] + [line])


def write_json(path: str, data: Any) -> None:
  """Write ``data`` to ``path`` atomically: a reader (or a failed run) never sees half a file."""
  directory = os.path.dirname(os.path.abspath(path))
  try:
    mode = os.stat(path).st_mode & 0o7777
  except FileNotFoundError:
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
  try:
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  except OSError as e:
    raise UserError(f"cannot write --output={path} ({e.strerror}); choose another --output") from e
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(data, f, indent=2)
      f.write("\n")
    os.chmod(tmp, mode)
    os.replace(tmp, path)
  except BaseException:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise


def build_parser() -> argparse.ArgumentParser:
  parser = app.ArgumentParser(prog="python -m camjax.evaluate", description=__doc__.split("\n\n")[0])
  parser.add_argument("--scoremaps", required=True, help="directory of <image_id>.npy or one .npz keyed by image id")
  parser.add_argument("--metadata", required=True, help="directory with image_ids.txt, image_sizes.txt, localization.txt")
  parser.add_argument("--protocol", choices=("wsol", "paper"), default="wsol")
  parser.add_argument("--output", help="write the results as JSON here (checked before scoring, written on success)")
  parser.add_argument("--cam-curve-interval", type=float, default=0.01)
  parser.add_argument("--multi-contour", action=argparse.BooleanOptionalAction, default=True,
                      help="all contours (MaxBoxAccV2, default) or only the largest (--no-multi-contour: MaxBoxAcc)")
  parser.add_argument("--iou-thresholds", default="30,50,70", help="comma-separated IoU thresholds in percent")
  parser.add_argument("--mask-root", help="root of mask paths for PxAP metadata (default: --metadata)")
  parser.add_argument("--paper-threshold", type=float, default=0.2)
  parser.add_argument("--num-workers", type=int, default=0, help="processes for box extraction (0: every core)")
  return parser


def run(argv: list[str] | None = None) -> int:
  """The command's work; user errors are raised as ``UserError`` (``main`` reports them)."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if not 0 < args.cam_curve_interval < 1:
    parser.error("--cam-curve-interval must be in (0, 1), e.g. 0.01 or 0.001")
  try:
    iou_thresholds = tuple(int(t) for t in args.iou_thresholds.split(","))
  except ValueError:
    parser.error("--iou-thresholds must be comma-separated integers, e.g. 30,50,70")
  if not all(0 < t <= 100 for t in iou_thresholds):
    parser.error("--iou-thresholds are percentages in (0, 100], e.g. 30,50,70")
  if not 0 <= args.paper_threshold < 1:
    parser.error("--paper-threshold must be in [0, 1), e.g. 0.2")
  if args.output:
    app.writable_file(args.output, "--output")  # before the scoring, which can take a while
  out = evaluate(args.scoremaps, args.metadata, args.protocol, cam_curve_interval=args.cam_curve_interval,
                 multi_contour=args.multi_contour, iou_thresholds=iou_thresholds, mask_root=args.mask_root,
                 paper_threshold=args.paper_threshold, num_workers=args.num_workers)
  print(format_table(out["results"]))
  if args.output:
    write_json(args.output, out)
    print(f"wrote {args.output}")
  return 0


def main(argv: list[str] | None = None) -> int:
  """Exit code: 0, or 2 with one ``camjax: error:`` line for bad input."""
  return app.guard(lambda: run(argv))


if __name__ == "__main__":
  sys.exit(main())
