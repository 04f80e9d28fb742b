"""Class activation maps on any image: top-k classes, their CAMs, boxes, a figure per image and cams.json.

  python -m camjax.cam_images --config=configs/efficientnet_lite0_imagenet.py \
      --images=photo.jpg photos/ --output=cams_out

For each image: the top-k classes with names and probabilities, their CAMs
overlaid, and one box per class by the CAM paper's protocol (pixels above 20%
of the map's max, largest 8-connected component, its tight box), in the
original image's pixels. The model comes from imported weights (EfficientNet-
Lite, torchvision GoogLeNet) or from a camjax training checkpoint; as a
library, ``CamRunner(model, ...)`` takes any CAM-capable model already built.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger("camjax.cam_images")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
RESIZE_MODES = ("square", "shorter")
WEIGHT_SOURCES = ("efficientnet_lite", "torchvision_googlenet", "torchvision_vgg16", "torchvision_alexnet",
                  "checkpoint")


# ----------------------------------------------------------------------------- inputs


def expand_paths(paths: Iterable[str]) -> list[str]:
  """Files as given, directories expanded to their image files (sorted, not recursive)."""
  out = []
  for p in paths:
    if os.path.isdir(p):
      found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(IMAGE_EXTENSIONS))
      if not found:
        log.warning("directory %s holds no image files (%s)", p, ", ".join(IMAGE_EXTENSIONS))
      out.extend(found)
    elif os.path.isfile(p):
      out.append(p)
    else:
      raise FileNotFoundError(f"--images: {p} is neither a file nor a directory")
  return out


def load_image(path: str) -> np.ndarray:
  """uint8 RGB (H, W, 3), EXIF orientation applied."""
  with Image.open(path) as im:
    im = ImageOps.exif_transpose(im)
    return np.asarray(im.convert("RGB"))


def resized_shape(height: int, width: int, size: int, mode: str) -> tuple[int, int]:
  """Network input size for an image: ``size`` x ``size`` or shorter side ``size`` keeping the aspect."""
  if mode == "square":
    return size, size
  if mode == "shorter":
    scale = size / min(height, width)
    return max(size, int(round(height * scale))), max(size, int(round(width * scale)))
  raise ValueError(f"cam_images.resize must be one of {RESIZE_MODES}, got {mode!r}")


def preprocess(image: np.ndarray, shape: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Bilinear (antialiased) resize to ``shape`` = (H, W), scale to [0, 1], then (x - mean) / std."""
  im = Image.fromarray(image)
  if im.size != (shape[1], shape[0]):
    im = im.resize((shape[1], shape[0]), Image.BILINEAR)
  x = np.asarray(im, np.float32) / 255.0
  return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def upsample_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Bilinear resize (half-pixel centres, edges clamped) of an (h, w) map to ``shape`` = (H, W)."""
  import cv2

  return cv2.resize(np.asarray(cam, np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------- the CAM path


@dataclasses.dataclass
class ImageResult:
  """CAM output for one image; ``maps`` are at feature resolution, boxes in original pixels."""

  path: str
  image: np.ndarray  # uint8 (H, W, 3), the original
  class_ids: np.ndarray  # (K,)
  probs: np.ndarray  # (K,)
  maps: np.ndarray  # (K, h, w) float32
  boxes: list[list[int] | None]

  def cams(self) -> np.ndarray:
    """(K, H, W) maps upsampled to the original image."""
    return np.stack([upsample_map(m, self.image.shape[:2]) for m in self.maps])

  def record(self, class_names: Sequence[str] | None) -> dict:
    preds = []
    for cid, prob, box in zip(self.class_ids, self.probs, self.boxes):
      cid = int(cid)
      name = class_names[cid] if class_names is not None and cid < len(class_names) else f"class {cid}"
      preds.append({"class_id": cid, "class_name": name, "prob": float(prob), "box": box})
    return {"image": self.path, "width": int(self.image.shape[1]), "height": int(self.image.shape[0]),
            "predictions": preds}


class CamRunner:
  """A CAM-capable model plus its preprocessing: images in, top-k classes, maps and boxes out."""

  def __init__(self, model: Any, *, image_size: int = 224, mean: Sequence[float] = (0.485, 0.456, 0.406),
               std: Sequence[float] = (0.229, 0.224, 0.225), top_k: int = 5, threshold: float = 0.2,
               resize: str = "square", batch_size: int = 8):
    if resize not in RESIZE_MODES:
      raise ValueError(f"cam_images.resize must be one of {RESIZE_MODES}, got {resize!r}")
    if not 0.0 <= threshold < 1.0:
      raise ValueError(f"cam_images.threshold must be in [0, 1), got {threshold}")
    if batch_size < 1 or image_size < 1:
      raise ValueError("cam_images.batch_size and data.image_size must be positive")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and not 1 <= top_k <= num_classes:
      raise ValueError(f"cam_images.top_k must be in [1, {num_classes}], got {top_k}")
    from camjax import cam

    cam.cam_weights(model)  # fails now, with the reason, for models without a GAP head
    model.eval()
    self.model = model
    self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
    self.top_k, self.threshold, self.resize, self.batch_size = top_k, threshold, resize, batch_size

  def forward(self, batch: np.ndarray):
    """Logits, top-k ids/probs and feature-resolution maps of a preprocessed (B, H, W, 3) batch."""
    from camjax import cam

    out = cam.class_activation_maps(self.model, batch, top_k=self.top_k, upsample=False)
    return np.asarray(out.class_ids), np.asarray(out.probs), np.asarray(out.maps)

  def box(self, cam_full: np.ndarray) -> list[int] | None:
    from camjax.localization import boxes_from_cam

    boxes = boxes_from_cam(cam_full, self.threshold, protocol="paper")
    return [int(v) for v in boxes[0]] if len(boxes) else None

  def run(self, images: Sequence[np.ndarray], paths: Sequence[str] | None = None) -> list[ImageResult]:
    """CAM results for uint8 images of any sizes (square mode batches them; shorter mode runs one by one)."""
    paths = list(paths) if paths is not None else [f"image_{i}" for i in range(len(images))]
    results: list[ImageResult] = []
    step = self.batch_size if self.resize == "square" else 1
    for start in range(0, len(images), step):
      chunk = images[start:start + step]
      shape = resized_shape(*chunk[0].shape[:2], self.image_size, self.resize)
      batch = np.stack([preprocess(im, shape, self.mean, self.std) for im in chunk])
      if len(chunk) < step:  # pad to a fixed batch: one compiled program for every chunk
        batch = np.concatenate([batch, np.zeros((step - len(chunk), *batch.shape[1:]), batch.dtype)])
      ids, probs, maps = self.forward(batch)
      for j, im in enumerate(chunk):
        boxes = [self.box(upsample_map(m, im.shape[:2])) for m in maps[j]]
        results.append(ImageResult(paths[start + j], im, ids[j], probs[j], maps[j], boxes))
    return results


# ----------------------------------------------------------------------------- figures and cams.json


def figure(result: ImageResult, class_names: Sequence[str] | None, *, alpha: float = 0.5, cmap: str = "jet",
           tile: int = 224) -> np.ndarray:
  """Input plus one overlay per top class with "name prob" above it and its box in red."""
  from camjax import viz

  def short(cid: int) -> str:
    if class_names is None or cid >= len(class_names):
      return f"class {cid}"
    return class_names[cid].split(",")[0].strip()

  # Feature-resolution maps: the figure resizes them (bilinear) to its tiles.
  return viz.topk_figure(result.image, list(result.maps), [short(int(c)) for c in result.class_ids],
                         [float(p) for p in result.probs], pred_boxes=result.boxes, alpha=alpha, cmap=cmap,
                         tile=tile, title=os.path.basename(result.path))


def _figure_path(output: str, image_path: str, used: set[str]) -> str:
  stem = os.path.splitext(os.path.basename(image_path))[0] or "image"
  name, n = f"{stem}_cam.png", 1
  while name in used:
    n += 1
    name = f"{stem}_{n}_cam.png"
  used.add(name)
  return os.path.join(output, name)


def resolve_class_names(spec: str, num_classes: int) -> tuple[str, ...] | None:
  """``imagenet`` (1000 classes), a text file with one name per line, or '' for plain class ids."""
  if not spec:
    return None
  if spec == "imagenet":
    if num_classes != 1000:
      log.warning("cam_images.class_names=imagenet but the model has %d classes; using class ids", num_classes)
      return None
    from camjax.imagenet_classes import class_names

    return class_names()
  if not os.path.isfile(spec):
    raise FileNotFoundError(f"cam_images.class_names={spec!r}: no such file; give 'imagenet', '' or a text file")
  from camjax.imagenet_classes import class_names

  names = class_names(spec)
  if len(names) != num_classes:
    raise ValueError(f"cam_images.class_names file {spec} has {len(names)} names, the model {num_classes} classes")
  return names


def process(runner: CamRunner, image_paths: Sequence[str], output: str, *,
            class_names: Sequence[str] | None = None, alpha: float = 0.5, cmap: str = "jet",
            tile: int = 224, write_figures: bool = True) -> list[dict]:
  """Decode, CAM, box, draw: writes ``output/<stem>_cam.png`` per image and ``output/cams.json``.

  Unreadable images are logged and listed in cams.json with an ``error`` field;
  the others go on.
  """
  os.makedirs(output, exist_ok=True)
  records: list[dict | None] = []  # in input order; None until the image's batch has run
  used: set[str] = set()
  pending: list[tuple[int, str, np.ndarray]] = []

  def flush() -> None:
    from camjax import viz

    results = runner.run([im for _, _, im in pending], [p for _, p, _ in pending])
    for (slot, _, _), result in zip(pending, results):
      record = result.record(class_names)
      if write_figures:
        fig_path = _figure_path(output, result.path, used)
        viz.save_png(figure(result, class_names, alpha=alpha, cmap=cmap, tile=tile), fig_path)
        record["figure"] = fig_path
      records[slot] = record
    pending.clear()

  for path in image_paths:
    records.append(None)
    try:
      image = load_image(path)
    except Exception as e:  # noqa: BLE001 - any decode failure is reported per image
      log.error("cannot read image %s: %s", path, e)
      records[-1] = {"image": path, "error": f"{type(e).__name__}: {e}"}
      continue
    pending.append((len(records) - 1, path, image))
    if len(pending) >= runner.batch_size:
      flush()
  if pending:
    flush()
  with open(os.path.join(output, "cams.json"), "w", encoding="utf-8") as f:
    json.dump(records, f, indent=1)
  return records


# ----------------------------------------------------------------------------- models from configs


def _checkpoint_state_dir(workdir: str) -> str:
  """``WORKDIR/checkpoints/<newest step>/state`` (also accepts a step directory)."""
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.isdir(os.path.join(path, "state")):
    return os.path.join(path, "state")
  base = os.path.join(path, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(base) if d.isdigit()) if os.path.isdir(base) else []
  if not steps:
    raise FileNotFoundError(f"cam_images.workdir={workdir!r} holds no checkpoints/<step>/state; "
                            "train first or point it at a camjax workdir")
  return os.path.join(base, str(steps[-1]), "state")


def model_from_checkpoint(config: Any, workdir: str) -> Any:
  """The config's model with parameters and BatchNorm statistics from a camjax training checkpoint."""
  import orbax.checkpoint as ocp
  from flax import nnx

  from camjax import train
  from camjax.weights import assign

  model = nnx.eval_shape(lambda: train.build_model(config))
  state_dir = _checkpoint_state_dir(workdir)
  saved = ocp.StandardCheckpointer().restore(state_dir)
  import jax

  stored = {}
  for group in ("params", "batch_stats"):
    for path, value in jax.tree_util.tree_flatten_with_path(saved.get(group, {}))[0]:
      stored["/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)] = value
  problems = []
  for path, node in nnx.iter_graph(model):
    if not isinstance(node, (nnx.Param, nnx.BatchStat)):
      continue
    name = "/".join(map(str, path))
    want = node.get_value()
    if name not in stored:
      problems.append(f"missing {name}")
    elif tuple(np.shape(stored[name])) != tuple(want.shape):
      problems.append(f"{name}: checkpoint {tuple(np.shape(stored[name]))} != model {tuple(want.shape)}")
    else:
      node.set_value(jax.numpy.asarray(stored[name], want.dtype))
  if problems:
    raise ValueError(f"checkpoint {state_dir} does not fit model {config.model.name} "
                     f"(check --config.model.*): " + "; ".join(problems[:20]))
  assign.fill_rng_state(model, 0)
  model.eval()
  return model


def model_from_config(config: Any, workdir: str | None = None) -> Any:
  """Build the model ``config.cam_images.weights`` names, with its weights loaded, in eval mode."""
  from flax import nnx

  from camjax import train
  from camjax.weights import assign, torchvision

  s = config.cam_images
  if s.weights not in WEIGHT_SOURCES:
    raise ValueError(f"cam_images.weights must be one of {WEIGHT_SOURCES}, got {s.weights!r}")
  if s.weights == "checkpoint":
    workdir = workdir or s.workdir
    if not workdir:
      raise ValueError("cam_images.weights=checkpoint needs --workdir or --config.cam_images.workdir")
    return model_from_checkpoint(config, workdir)
  if s.weights == "efficientnet_lite":
    from camjax.weights import efficientnet_lite

    overrides = config.model.overrides.to_dict()
    if config.model.dtype != "float32":
      overrides["dtype"] = train.COMPUTE_DTYPES[config.model.dtype]
    return efficientnet_lite.pretrained(config.model.name, path=s.weights_path or None,
                                        num_classes=config.model.num_classes, pooling=config.model.pooling,
                                        **overrides)
  if not s.weights_path:
    raise ValueError(f"cam_images.weights={s.weights} needs --config.cam_images.weights_path=FILE.pth")
  model = nnx.eval_shape(lambda: train.build_model(config))
  torchvision.load_pretrained(model, s.weights_path, s.weights, head=True)
  assign.fill_rng_state(model, 0)
  left = assign.abstract_paths(model)
  if left:
    raise ValueError(f"{s.weights_path} leaves {', '.join(left[:5])} untrained: CAM needs a trained classifier; "
                     "use a model whose head the file holds (e.g. googlenet) or a camjax checkpoint")
  model.eval()
  return model


def runner_from_config(config: Any, model: Any) -> CamRunner:
  s = config.cam_images
  return CamRunner(model, image_size=config.data.image_size, mean=config.data.mean, std=config.data.std,
                   top_k=s.top_k, threshold=s.threshold, resize=s.resize, batch_size=s.batch_size)


def run(config: Any, image_paths: Sequence[str], output: str, *, model: Any = None,
        workdir: str | None = None) -> list[dict]:
  """The command's work: expand paths, build (or take) the model, write figures and cams.json."""
  paths = expand_paths(image_paths)
  if not paths:
    raise ValueError("no images given: pass --images=FILE_OR_DIR [MORE ...]")
  model = model if model is not None else model_from_config(config, workdir)
  runner = runner_from_config(config, model)
  names = resolve_class_names(config.cam_images.class_names, int(getattr(model, "num_classes", 0)))
  s = config.cam_images
  return process(runner, paths, output, class_names=names, alpha=s.alpha, cmap=s.cmap, tile=s.figure_tile)


def _main(argv: Sequence[str]) -> None:
  from absl import flags

  FLAGS = flags.FLAGS
  extra = [a for a in argv[1:]]
  unknown = [a for a in extra if a.startswith("-")]
  if unknown:
    raise SystemExit(f"unknown arguments: {' '.join(unknown)}")
  images = list(FLAGS.images or []) + extra
  records = run(FLAGS.config, images, FLAGS.output, workdir=FLAGS.workdir)
  ok = [r for r in records if "predictions" in r]
  for r in ok:
    top = r["predictions"][0]
    print(f"{r['image']}: {top['class_name'].split(',')[0]} ({top['prob']:.2f}) box {top['box']}")
  print(f"{len(ok)} images, {len(records) - len(ok)} unreadable; wrote {os.path.join(FLAGS.output, 'cams.json')}")


def main() -> None:
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", "configs/efficientnet_lite0_imagenet.py", "Config file.",
                                  lock_config=True)
  flags.DEFINE_multi_string("images", None, "Image files or directories (more may follow as plain arguments).")
  flags.DEFINE_string("output", "cam_images_out", "Directory for the figures and cams.json.")
  flags.DEFINE_string("workdir", None, "camjax training workdir (cam_images.weights=checkpoint).")
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  app.run(_main)


if __name__ == "__main__":
  sys.exit(main())
