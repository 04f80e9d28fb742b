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
import dataclasses
import inspect
import os
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from camjax import app
from camjax.errors import UserError
from camjax.tools import compare_figure

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
  parser.add_argument("--faithfulness", dest="faithfulness", action="store_true", default=True)
  parser.add_argument("--no_faithfulness", dest="faithfulness", action="store_false",
                      help="localization only (faithfulness runs many forward passes per image)")
  parser.add_argument("--chunk_size", type=int, help="masked forward passes at a time (Score-CAM family, ...)")
  parser.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                      help="a method's keyword, e.g. ss_cam.num_samples=8 or faithfulness.steps=20")
  parser.add_argument("--figure_images", type=int, default=4, help="rows of methods.png")
  parser.add_argument("--figure_tile", type=int, default=128, help="pixels per tile of methods.png")
  parser.add_argument("--seed", type=int, default=0, help="random key of the noisy methods and ROAD")
  parser.add_argument("--progress", dest="progress", action="store_true", default=True)
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
    if name != "faithfulness" and key not in _keywords(methods.ALL[name]):
      raise UserError(f"--option={spec}: {name} has no keyword {key!r}; it takes "
                      f"{', '.join(_keywords(methods.ALL[name]))}")
    try:
      out.setdefault(name, {})[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out.setdefault(name, {})[key] = value
  return out


def _keywords(fn: Callable) -> list[str]:
  fixed = ("model", "images", "layer", "class_ids", "upsample")
  return [p for p in inspect.signature(fn).parameters if p not in fixed]


def check_args(args: Any) -> None:
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


def pooled_layer(model: Any, image_size: int) -> str:
  """The layer whose output the model returns as its features: the map global pooling reads."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from camjax import methods
  from camjax.methods._core import tap_layer

  names = methods.layer_names(model, image_size)
  graphdef, state = nnx.split(model)
  found: list[str] = []

  def forward(images):
    net = nnx.merge(graphdef, state)
    net.eval()
    taps = {name: tap_layer(net, name) for name in names}
    _, features = net(images)
    found.extend(name for name, tap in taps.items() if tap.output is features)
    return features

  jax.eval_shape(forward, jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32))
  if not found:
    raise UserError(f"{type(model).__name__} returns features that no named layer outputs; "
                    "camjax.methods needs the layer global pooling reads")
  return found[0]


def run_split(args: Any, overrides: Sequence[str]) -> Images:
  """The run's model (newest checkpoint) and the config's eval split."""
  from camjax.tools import ablation, cam_images
  from camjax.train import checkpoint

  config = ablation.load_config(args.config, overrides)
  missing = f"--workdir={args.workdir} does not exist; point it at a camjax training workdir"
  empty = (f"--workdir={args.workdir} holds no checkpoint (no checkpoints/<step>/state); train first "
           "(python -m camjax.main) or point it at a camjax training workdir")
  checkpoint.find_checkpoints(args.workdir, missing=missing, empty=empty)
  saved = checkpoint.run_config(args.workdir)
  if saved is not None:
    given = {k[len("--config."):].split("=")[0] for k in overrides}
    config = cam_images.config_from_run(config, saved, {k: config[k] if "." not in k else _get(config, k)
                                                        for k in given})
  with config.unlocked():
    config.eval.max_examples = args.max_examples or config.eval.max_examples
    config.eval.batch_size = args.batch_size or config.eval.batch_size
  model, step = checkpoint.restore_model(config, args.workdir, missing=missing, empty=empty,
                                         fix="compare with the config that trained it")
  return Images.from_config(config, model, step=step, workdir=args.workdir)


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


def photo_split(args: Any) -> Images:
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
  return Images.from_arrays(
      model, inputs, names, batch_size=args.batch_size or 4, mean=transforms.IMAGENET_MEAN,
      std=transforms.IMAGENET_STD, class_names=class_names(),
      source=f"{args.model} (ImageNet weights) on {len(images)} photos ({args.images})")


# ----------------------------------------------------------------------------- images, scores, the loop


@dataclasses.dataclass
class Images:
  """A model and the images every method sees: ``batches()`` gives a fresh pass over the same batches.

  A batch is a dict with "image" (B, H, W, 3) model inputs and "valid" (B,); a split
  with ground truth also has "label", "boxes", "num_boxes" and maybe "mask"
  (``camjax.train.data.eval_batches``); photos have "name".
  """

  model: Any
  batches: Callable[[], Iterable[dict]]
  num_images: int | None
  image_size: int
  mean: Sequence[float]
  std: Sequence[float]
  source: str
  class_names: Sequence[str] | None = None
  protocol: dict | None = None  # cam_thresholds, iou_thresholds, paper_threshold: the split has ground truth
  info: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def from_config(cls, config: Any, model: Any, *, step: int | None = None, workdir: str = "") -> "Images":
    """The config's eval split (``eval.max_examples``, ``eval.batch_size``) with its scoring settings."""
    from camjax.tools import cam_images
    from camjax.train import data as train_data

    def batches() -> Iterable[dict]:
      return train_data.eval_batches(config, process_index=0, process_count=1)

    d = config.data
    total = len(train_data._source(config, d.eval_split))
    total = min(total, config.eval.max_examples) if config.eval.max_examples else total
    name = f"{d.name}/{d.builder_config}" if d.builder_config else d.name
    protocol = {"cam_thresholds": np.arange(0.0, 1.0, config.eval.wsol_threshold_step),
                "iou_thresholds": tuple(config.eval.iou_thresholds), "paper_threshold": config.eval.paper_threshold}
    return cls(model, batches, total, int(d.image_size), tuple(d.mean), tuple(d.std),
               f"{config.model.name} (step {step}, {workdir}) on {name} {d.eval_split} ({total} images)",
               cam_images.resolve_class_names("auto", config.model.num_classes, data=d), protocol,
               {"model": config.model.name, "step": step, "workdir": workdir, "data": name, "split": d.eval_split})

  @classmethod
  def from_arrays(cls, model: Any, inputs: np.ndarray, names: Sequence[str], *, batch_size: int,
                  mean: Sequence[float], std: Sequence[float], class_names: Sequence[str] | None,
                  source: str) -> "Images":
    """Preprocessed images without ground truth, padded to whole batches (one compile per method)."""
    def batches() -> Iterable[dict]:
      for start in range(0, len(inputs), batch_size):
        chunk = inputs[start:start + batch_size]
        pad = batch_size - len(chunk)
        yield {"image": np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)]),
               "valid": np.arange(batch_size) < len(chunk),
               "name": list(names[start:start + batch_size]) + [""] * pad}

    return cls(model, batches, len(inputs), int(inputs.shape[1]), tuple(mean), tuple(std), source, class_names)


@dataclasses.dataclass
class Settings:
  methods: Sequence[str]
  options: dict = dataclasses.field(default_factory=dict)  # {method or "faithfulness": {keyword: value}}
  chunk_size: int | None = None
  faithfulness: bool = True
  figure_images: int = 4
  seed: int = 0
  progress: bool = True


class Localization:
  """The eval loop's scores of ground-truth class maps: paper GT-known, MaxBoxAcc(V2), PxAP."""

  def __init__(self, cam_thresholds: np.ndarray, iou_thresholds: Sequence[int], paper_threshold: float):
    from camjax import localization

    self.cam_thresholds = cam_thresholds
    self.paper = localization.PaperAccumulator(paper_threshold)
    self.wsol = localization.WsolAccumulator(cam_thresholds, iou_thresholds, "both")
    self.pxap = None

  def add(self, maps: np.ndarray, labels: Sequence[int], boxes: Sequence[np.ndarray], masks: np.ndarray | None,
          top1_correct: np.ndarray) -> None:
    from camjax import localization

    self.paper.add(None, None, list(labels), boxes, gt_known_cams=maps)
    unit = localization.min_max(maps, dtype=np.float32)
    self.wsol.add(unit, boxes, top1_correct=top1_correct)
    if masks is not None:
      self.pxap = self.pxap or localization.PxapAccumulator(self.cam_thresholds)
      self.pxap.add(unit, masks)

  def result(self) -> dict:
    paper, wsol = self.paper.result(), self.wsol.result()
    self.wsol.close()
    out = {"gt_known_loc": paper["gt_known_loc_acc"], **{k: wsol[k] for k in ("MaxBoxAcc", "MaxBoxAccV2") if k in wsol}}
    if self.pxap is not None:
      out["PxAP"] = self.pxap.result()["PxAP"]
    out.update({k: v for k, v in wsol.items() if k.startswith(("MaxBoxAcc@", "top1_loc@", "v1/best_threshold@"))})
    return out


def ground_truth(batch: dict, valid: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
  """Labels, integer boxes and foreground masks of a batch's valid rows, as the eval loop reads them."""
  labels = np.asarray(batch["label"])[valid]
  counts = np.asarray(batch["num_boxes"])[valid]
  boxes = [np.asarray(b[:n]).round().astype(np.int64) for b, n in zip(np.asarray(batch["boxes"])[valid], counts)]
  masks = np.asarray(batch["mask"])[valid] > 0 if "mask" in batch else None
  return labels, boxes, masks


def method_call(images: Images, name: str, layer: str, settings: Settings) -> Callable:
  """``(inputs, class_ids) -> (maps (B, K, H, W), logits)`` for one method with its settings."""
  import jax

  from camjax import methods

  fn = methods.ALL[name]
  keywords = _keywords(fn)
  kwargs = dict(settings.options.get(name, {}))
  if settings.chunk_size and "chunk_size" in keywords:
    kwargs.setdefault("chunk_size", settings.chunk_size)
  if "key" in keywords:
    kwargs.setdefault("key", jax.random.key(settings.seed))
  kwargs["layer"] = None if name in methods.ATTRIBUTION else layer
  return lambda inputs, ids: fn(images.model, inputs, class_ids=ids, upsample=True, **kwargs)


class Timer:
  """Seconds and rows per batch; the first batch (which compiles) is kept apart when there are more."""

  def __init__(self):
    self.first: tuple[float, int] | None = None
    self.seconds, self.rows = 0.0, 0

  def add(self, seconds: float, rows: int) -> None:
    if self.first is None:
      self.first = (seconds, rows)
    else:
      self.seconds, self.rows = self.seconds + seconds, self.rows + rows

  def per_image(self) -> float:
    return self.seconds / self.rows if self.rows else self.first[0] / self.first[1]

  def result(self, prefix: str) -> dict:
    out = {f"{prefix}seconds_per_image": self.per_image(), f"{prefix}includes_compile": not self.rows}
    if self.rows:
      out[f"{prefix}compile_seconds"] = max(0.0, self.first[0] - self.per_image() * self.first[1])
    return out


def _timed(fn: Callable, timer: Timer, rows: int) -> Any:
  import jax

  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  timer.add(time.perf_counter() - start, rows)
  return out


def score_method(images: Images, name: str, call: Callable, settings: Settings, faithfulness: Any,
                 keep: dict, desc: str) -> dict:
  """Maps of every image by one method, scored batch by batch; ``keep`` collects the figure's maps."""
  import jax
  import jax.numpy as jnp
  from tqdm import tqdm

  scorer = Localization(**images.protocol) if images.protocol else None
  map_timer, faith_timer = Timer(), Timer()
  sums: dict[str, float] = {}
  count = nonfinite = 0
  kept = keep["maps"].setdefault(name, [])
  options = settings.options.get("faithfulness", {})
  with tqdm(total=images.num_images, desc=desc, unit="img", disable=not settings.progress, file=sys.stderr,
            leave=False) as bar:
    for batch in images.batches():
      valid = np.asarray(batch["valid"], bool)
      if not valid.any():
        continue
      inputs = jnp.asarray(batch["image"], jnp.float32)
      ids = jnp.asarray(batch["label"], jnp.int32)[:, None] if scorer else None
      maps, logits = _timed(lambda: call(inputs, ids), map_timer, len(valid))
      top1 = np.asarray(jnp.argmax(logits, axis=-1))
      ids = jnp.asarray(top1, jnp.int32)[:, None] if ids is None else ids
      host = np.asarray(maps[:, 0], np.float32)[valid]
      bad = ~np.isfinite(host).all(axis=(1, 2))
      nonfinite += int(bad.sum())
      host[bad] = 0.0
      if faithfulness is not None:
        scores = _timed(lambda: faithfulness.score(images.model, inputs, jnp.nan_to_num(maps), ids,
                                                   key=jax.random.key(settings.seed), **options),
                        faith_timer, len(valid))
        for metric, value in scores.items():
          sums[metric] = sums.get(metric, 0.0) + float(np.asarray(value, np.float64)[valid, 0].sum())
      labels, boxes, masks = ground_truth(batch, valid) if scorer else (top1[valid], None, None)
      if scorer is not None:
        scorer.add(host, labels, boxes, masks, top1[valid] == labels)
      kept.extend(host[:max(0, settings.figure_images - len(kept))])
      _keep_rows(keep["rows"], images, batch, valid, labels, boxes, settings.figure_images)
      count += int(valid.sum())
      bar.update(int(valid.sum()))
  row = {"layer": getattr(call, "layer", None), "images": count, **map_timer.result("")}
  if scorer is not None:
    row["localization"] = scorer.result()
  if faithfulness is not None:
    row["faithfulness"] = {k: v / count for k, v in sums.items()}
    row.update(faith_timer.result("faithfulness_"))
  if nonfinite:
    row["nonfinite_maps"] = nonfinite
  return row


def _keep_rows(rows: list, images: Images, batch: dict, valid: np.ndarray, labels: np.ndarray,
               boxes: list | None, wanted: int) -> None:
  """The figure's first ``wanted`` images: shown as the model sees them, with class, name and boxes."""
  for j, row in enumerate(np.flatnonzero(valid)[:max(0, wanted - len(rows))]):
    rows.append({"image": compare_figure.display_image(batch["image"][row], images.mean, images.std),
                 "class": int(labels[j]), "name": batch.get("name", [""] * len(valid))[row],
                 "boxes": None if boxes is None else boxes[j]})


def _faithfulness_module() -> Any:
  try:
    from camjax.methods import faithfulness
  except ModuleNotFoundError as e:
    if e.name != "camjax.methods.faithfulness":
      raise
    raise UserError("this camjax has no camjax.methods.faithfulness; pass --no_faithfulness") from e
  return faithfulness


def compare(images: Images, settings: Settings) -> tuple[dict, dict | None]:
  """Every method of ``settings`` on ``images``: the results (``methods.json``) and the figure's data."""
  import jax

  from camjax import methods

  layer = pooled_layer(images.model, images.image_size)
  faithfulness = _faithfulness_module() if settings.faithfulness else None
  rows: dict[str, dict] = {}
  keep: dict = {"rows": [], "maps": {}}
  start = time.perf_counter()
  for i, name in enumerate(settings.methods):
    desc = f"[{i + 1}/{len(settings.methods)}] {name}"
    row = score_method(images, name, method_call(images, name, layer, settings), settings, faithfulness, keep, desc)
    row["layer"] = None if name in methods.ATTRIBUTION else layer
    rows[name] = row
    spent = row["seconds_per_image"] + row.get("faithfulness_seconds_per_image", 0.0)
    print(f"{desc}: {row['images']} images, {1000 * row['seconds_per_image']:.1f} ms/image for the maps, "
          f"{1 / spent:.1f} images/s in all, {time.perf_counter() - start:.0f} s elapsed", file=sys.stderr, flush=True)
  metrics = list(settings.options.get("faithfulness", {}).get("metrics", faithfulness.METRICS)) if faithfulness else []
  target = "ground-truth class" if images.protocol else "top-1 class"
  results = {
      "title": f"CAM methods on {images.source}", "description": _description(images, layer, target, rows),
      "source": images.source, **images.info, "layer": layer, "target": target, "faithfulness_metrics": metrics,
      "num_images": next(iter(rows.values()))["images"] if rows else 0, "device": str(jax.devices()[0]),
      "settings": {"chunk_size": settings.chunk_size, "options": settings.options, "seed": settings.seed},
      "methods": rows}
  return results, figure_data(images, rows, keep)


def _description(images: Images, layer: str, target: str, rows: dict) -> str:
  text = (f"Maps of the {target}: CAM methods at `{layer}` (the map global pooling reads), attribution methods "
          "at the input pixels.")
  if images.protocol:
    p = images.protocol
    text += (" Localization in percent, higher is better: MaxBoxAcc (IoU 50, largest box) and MaxBoxAccV2 (mean "
             f"over IoU {'/'.join(map(str, p['iou_thresholds']))}, all boxes) at the best of "
             f"{len(p['cam_thresholds'])} CAM thresholds (Choe et al. 2020), PxAP where the data set has masks, "
             f"GT-known localization of the CAM paper (box at {p['paper_threshold']:g} of the map's maximum, "
             "IoU >= 0.5).")
  if any("faithfulness" in r for r in rows.values()):
    text += " Faithfulness: mean over images of `camjax.methods.faithfulness` (arrows: the better direction)."
  return text + " ms / image: the maps alone, after one compile per method."


def figure_data(images: Images, rows: dict, keep: dict) -> dict | None:
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

    checkpoint.find_checkpoints(args.workdir, missing=f"--workdir={args.workdir} does not exist; point it at a "
                                "camjax training workdir", empty=f"--workdir={args.workdir} holds no checkpoint "
                                "(no checkpoints/<step>/state); train first (python -m camjax.main)")
  output = app.writable_dir(output, "--output")
  split = run_split(args, overrides) if args.workdir else photo_split(args)
  settings = Settings(
      methods=names, options=options, chunk_size=args.chunk_size, faithfulness=args.faithfulness,
      figure_images=args.figure_images, seed=args.seed, progress=args.progress)
  results, figure_data = compare(split, settings)
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
