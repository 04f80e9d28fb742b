"""Every method of ``camjax.methods`` on one model and the same images: localization, faithfulness, speed.

  python -m camjax.methods compare --config=configs/quickstart.py --workdir=runs/quickstart \\
      [--methods=grad_cam,score_cam,...] [--max_examples=N] [--output=DIR] [--no_faithfulness]
  python -m camjax.methods compare --model=efficientnet_lite0 --images=skimage   # or --images=DIR

With ``--workdir``: the run's newest checkpoint (its network and preprocessing
from its config.json) on the config's evaluation split; every method explains
the ground-truth class and is scored as ``camjax.evaluation`` scores CAMs:
MaxBoxAcc, MaxBoxAccV2, PxAP (when the data set has masks) and the CAM paper's
GT-known localization. With ``--model``: ImageNet EfficientNet-Lite0 on photos
without ground truth, explaining its top-1 class: maps and faithfulness only.
Faithfulness (``camjax.methods.faithfulness``) costs many forward passes per
image; ``--no_faithfulness`` leaves it out.

CAM methods read the map that global pooling reads (the layer of the model's own
CAM); attribution methods the input pixels. Time per image: the maps alone,
after one compile per method. Writes ``methods.md``, ``methods.json`` and
``methods.png`` (rows = images, columns = methods) to ``--output``, by default
``<workdir>/methods``; all three are replaced together, only when the run succeeds.
"""

from __future__ import annotations

import ast
import os
import sys
from typing import Any, Sequence

import numpy as np

from camjax import app
from camjax.errors import UserError
from camjax.tools import compare_figure, compare_scoring

PHOTO_MODELS = ("efficientnet_lite0",)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def build_parser(prog: str) -> app.ArgumentParser:
  parser = app.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", help="config file of the run (its eval split, batch size and thresholds)")
  parser.add_argument("--workdir", help="a camjax training workdir: its newest checkpoint is compared")
  parser.add_argument("--model", help=f"imported weights instead of a run: {', '.join(PHOTO_MODELS)}")
  parser.add_argument("--images", help="with --model: 'skimage' (scikit-image's colour photos) or a folder")
  parser.add_argument("--methods", default="", help="comma-separated method names (default: all)")
  parser.add_argument("--max_examples", type=int, help="score the first N images of the split (default: all)")
  parser.add_argument("--batch_size", type=int, help="images per batch (default: eval.batch_size; photos 4)")
  parser.add_argument("--output", help="directory for methods.md/json/png (default: <workdir>/methods)")
  parser.add_argument("--faithfulness", dest="faithfulness", action="store_true", default=True,
                      help="Average Drop/Increase, deletion/insertion AUC and ROAD per method (default)")
  parser.add_argument("--no_faithfulness", dest="faithfulness", action="store_false",
                      help="localization only (faithfulness runs many forward passes per image)")
  parser.add_argument("--chunk_size", type=int, help="masked forward passes at a time (Score-CAM family, ...)")
  parser.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                      help="a method's keyword, e.g. ss_cam.num_samples=8 or faithfulness.steps=20")
  parser.add_argument("--figure_images", type=int, default=4, help="rows of methods.png")
  parser.add_argument("--figure_tile", type=int, default=144, help="pixels per tile of methods.png")
  parser.add_argument("--seed", type=int, default=0, help="random key of the noisy methods and ROAD")
  parser.add_argument("--progress", dest="progress", action="store_true", default=True,
                      help="a progress bar per method on stderr (default)")
  parser.add_argument("--no_progress", dest="progress", action="store_false")
  return parser


# ----------------------------------------------------------------------------- checks before any work


def method_names(spec: str) -> list[str]:
  """The methods ``--methods`` names (all when empty); an unknown one lists the valid ones."""
  from camjax import methods

  names = [n.strip() for n in spec.split(",") if n.strip()] or list(methods.ALL)
  unknown = [n for n in names if n not in methods.ALL]
  if unknown:
    raise UserError(f"--methods: unknown method {', '.join(unknown)}; valid: {', '.join(methods.ALL)}")
  return list(dict.fromkeys(names))


def parse_options(specs: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
  """``--option name.key=value`` -> {name: {key: value}}; the key must be one of the method's keywords."""
  from camjax import methods

  out: dict[str, dict[str, Any]] = {}
  for spec in specs:
    target, _, value = spec.partition("=")
    name, _, key = target.partition(".")
    if not value or not key or name not in (*names, "faithfulness"):
      raise UserError(f"--option={spec}: give NAME.KEY=VALUE with NAME one of the compared methods or "
                      "'faithfulness', e.g. --option=ss_cam.num_samples=8")
    if name != "faithfulness" and key not in compare_scoring.keywords(methods.ALL[name]):
      raise UserError(f"--option={spec}: {name} has no keyword {key!r}; it takes "
                      f"{', '.join(compare_scoring.keywords(methods.ALL[name]))}")
    try:
      out.setdefault(name, {})[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out.setdefault(name, {})[key] = value
  return out


def check_args(args: Any) -> None:
  """Flags that contradict each other or are out of range: found before anything is loaded."""
  if bool(args.workdir) == bool(args.model):
    raise UserError("give --workdir=RUN (a trained run, with --config) or --model=efficientnet_lite0 "
                    "--images=skimage|DIR (photos without ground truth), not both")
  if args.workdir and (args.images or not args.config):
    raise UserError("--workdir compares on the config's eval split: give --config=FILE and no --images")
  if args.model and args.model not in PHOTO_MODELS:
    raise UserError(f"--model={args.model}: choose one of {', '.join(PHOTO_MODELS)}")
  if args.model and not args.images:
    raise UserError("--model needs --images=skimage (scikit-image's colour photos) or --images=DIR")
  for flag in ("max_examples", "batch_size", "chunk_size", "figure_tile"):
    value = getattr(args, flag)
    if value is not None and value < 1:
      raise UserError(f"--{flag}={value}; give a positive number")
  if args.figure_images < 0:
    raise UserError(f"--figure_images={args.figure_images}; give 0 or more")


# ----------------------------------------------------------------------------- the model and its images


def run_split(args: Any, overrides: Sequence[str]) -> compare_scoring.Images:
  """The run's model (newest checkpoint) and the config's eval split."""
  from camjax.tools import ablation, cam_images
  from camjax.train import checkpoint

  config = ablation.load_config(args.config, overrides)
  saved = checkpoint.run_config(args.workdir)
  if saved is not None:  # the run's network and preprocessing; what the user typed on top
    given = {flag[len("--config."):].split("=")[0] for flag in overrides}
    config = cam_images.config_from_run(config, saved, {key: _get(config, key) for key in given})
  with config.unlocked():
    config.eval.max_examples = args.max_examples or config.eval.max_examples
    config.eval.batch_size = args.batch_size or config.eval.batch_size
  model, step = checkpoint.restore_model(config, args.workdir, **checkpoint_messages(args.workdir),
                                         fix="compare with the config that trained it")
  return compare_scoring.Images.from_config(config, model, step=step, workdir=args.workdir)


def checkpoint_messages(workdir: str) -> dict[str, str]:
  """This command's words for a workdir that is not there or holds no checkpoint."""
  return {"missing": f"--workdir={workdir} does not exist; point it at a camjax training workdir",
          "empty": f"--workdir={workdir} holds no checkpoint (no checkpoints/<step>/state); train first "
                   "(python -m camjax.main) or point it at a camjax training workdir"}


def _get(config: Any, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def photos(spec: str) -> tuple[list[np.ndarray], list[str]]:
  """uint8 RGB photos and their names: scikit-image's colour photos or a folder's images."""
  from camjax.tools import cam_images

  if spec == "skimage":
    try:
      import skimage.data
    except ImportError as e:
      raise UserError("--images=skimage needs scikit-image (pip install scikit-image); or give a folder") from e
    return [np.asarray(getattr(skimage.data, n)())[..., :3] for n in SKIMAGE_PHOTOS], list(SKIMAGE_PHOTOS)
  if not os.path.isdir(spec):
    raise UserError(f"--images={spec} is not a folder; give 'skimage' or a folder of images")
  paths = cam_images.expand_paths([spec])
  return [cam_images.load_image(p) for p in paths], [os.path.basename(p) for p in paths]


def photo_split(args: Any) -> compare_scoring.Images:
  """ImageNet EfficientNet-Lite0 and the photos, at its resolution, ImageNet-normalized."""
  from camjax.data import transforms
  from camjax.data.imagenet_classes import class_names
  from camjax.models.efficientnet_lite import VARIANTS
  from camjax.tools import cam_images
  from camjax.weights import efficientnet_lite

  images, names = photos(args.images)
  images, names = images[:args.max_examples or None], names[:args.max_examples or None]
  size = VARIANTS[args.model][2]
  model = efficientnet_lite.pretrained(args.model)
  inputs = np.stack([cam_images.preprocess(im, (size, size), transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
                     for im in images])
  return compare_scoring.Images.from_arrays(
      model, inputs, names, batch_size=args.batch_size or 4, mean=transforms.IMAGENET_MEAN,
      std=transforms.IMAGENET_STD, class_names=class_names(),
      source=f"{args.model} (ImageNet weights) on {len(images)} photos ({args.images})")


# ----------------------------------------------------------------------------- the command


def run(argv: Sequence[str]) -> int:
  parser = build_parser(argv[0] if argv else "python -m camjax.methods compare")
  args, rest = parser.parse_known_args(list(argv[1:]))
  overrides = [a for a in rest if a.startswith("--config.")]
  if len(overrides) != len(rest):
    parser.error(f"unrecognized arguments: {' '.join(a for a in rest if a not in overrides)}")
  check_args(args)
  names = method_names(args.methods)
  options = parse_options(args.option, names)
  if args.images and args.images != "skimage":
    from camjax.tools import cam_images

    cam_images.expand_paths([args.images])  # a folder without images fails before the model loads
  output = args.output or (os.path.join(args.workdir, "methods") if args.workdir else f"methods_{args.model}")
  if args.workdir:
    from camjax.train import checkpoint

    checkpoint.find_checkpoints(args.workdir, **checkpoint_messages(args.workdir))
  if args.faithfulness:
    compare_scoring.faithfulness_module()
  output = app.writable_dir(output, "--output")
  split = run_split(args, overrides) if args.workdir else photo_split(args)
  settings = compare_scoring.Settings(
      methods=names, options=options, chunk_size=args.chunk_size, faithfulness=args.faithfulness,
      figure_images=args.figure_images, seed=args.seed, progress=args.progress)
  results, figure_data = compare_scoring.compare(split, settings)
  picture = compare_figure.figure(**figure_data, tile=args.figure_tile) if figure_data else None
  paths = compare_figure.write_outputs(results, picture, output)
  print(compare_figure.markdown_table(results))
  print(f"wrote {', '.join(paths)}")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Exit code: 0, or 2 with one ``camjax: error:`` line for bad input."""
  return app.guard(lambda: run(list(sys.argv if argv is None else argv)))


if __name__ == "__main__":
  sys.exit(main())
