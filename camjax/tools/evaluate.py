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
from typing import Any

from camjax import app
from camjax.errors import UserError
# The scoring core lives in camjax.localization.saved_maps; its names stay reachable from here.
from camjax.localization.saved_maps import (METADATA_FILES, RESIZE, MapSource, evaluate, image_boxes,  # noqa: F401
                                            load_mask, normalize_wsol, read_metadata, scale_box)


def format_table(results: dict[str, Any]) -> str:
  """The scores as the console table every camjax command prints."""
  return app.format_table(("metric", "value"), list(results.items()))


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
  parser.add_argument("--metadata", required=True,
                      help="directory with image_ids.txt, image_sizes.txt, localization.txt")
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
