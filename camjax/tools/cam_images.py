"""Class activation maps on any image: top-k classes, their CAMs, boxes, a figure per image and cams.json.

  python -m camjax.cam_images --config=configs/efficientnet_lite0_imagenet.py \
      --images=photo.jpg photos/ --output=cams_out

For each image: the top-k classes with names and probabilities, their CAMs
overlaid, and one box per class by the CAM paper's protocol (pixels above 20%
of the map's max, largest 8-connected component, its tight box), in the
original image's pixels. The model comes from imported weights (EfficientNet-
Lite, torchvision GoogLeNet) or from a camjax training run
(``--config.cam_images.weights=checkpoint --config.cam_images.workdir=RUN``):
then the network and its preprocessing are the run's own, read from the
``config.json`` that ``camjax.main`` wrote there; ``--config.*`` overrides given
on the command line still win. As a library, ``CamRunner(model, ...)`` takes any
CAM-capable model already built.

Input the user can fix (paths, an output that cannot be written, a setting out
of range, a workdir without a run) is a ``UserError``, found before the model is
loaded whenever possible; the command prints it as one ``camjax: error:`` line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps

from camjax import app
from camjax.errors import UserError

log = logging.getLogger("camjax.cam_images")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
RESIZE_MODES = ("square", "shorter")
WEIGHT_SOURCES = ("efficientnet_lite", "torchvision_googlenet", "torchvision_vgg16", "torchvision_alexnet",
                  "checkpoint")
CMAPS = ("jet", "turbo", "gray")  # the colour maps camjax.report.figures.colormap draws
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # camjax/tools/ -> repo
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "efficientnet_lite0_imagenet.py")
# What a camjax run decides for CAMs on images: its network and the preprocessing it was trained with.
RUN_DATA_FIELDS = ("name", "builder_config", "data_dir", "image_size", "mean", "std")


# ----------------------------------------------------------------------------- inputs


def expand_paths(paths: Iterable[str]) -> list[str]:
  """Files as given, directories expanded to their image files (sorted, not recursive).

  A path that does not exist or a directory without image files is a UserError.
  """
  out = []
  for p in paths:
    if os.path.isdir(p):
      try:
        names = os.listdir(p)
      except OSError as e:
        raise UserError(f"--images: cannot list directory {p} ({e.strerror}); fix its permissions") from e
      found = sorted(os.path.join(p, f) for f in names
                     if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(p, f)))
      if not found:
        raise UserError(f"--images: directory {p} holds no image files (read: {' '.join(IMAGE_EXTENSIONS)}); "
                        "add images to it or pass image files")
      out.extend(found)
    elif os.path.isfile(p):
      out.append(p)
    else:
      raise UserError(f"--images: {p} does not exist (neither a file nor a directory); fix the path")
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
  raise UserError(f"cam_images.resize must be one of {RESIZE_MODES}, got {mode!r}")


def preprocess(image: np.ndarray, shape: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Bilinear (antialiased) resize to ``shape`` = (H, W), scale to [0, 1], then (x - mean) / std."""
  im = Image.fromarray(image)
  if im.size != (shape[1], shape[0]):
    im = im.resize((shape[1], shape[0]), Image.BILINEAR)
  x = np.asarray(im, np.float32) / 255.0
  return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def upsample_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Bilinear resize (half-pixel centres, edges clamped) of an (h, w) map to ``shape`` = (H, W)."""
  from camjax.localization import resize_map

  return resize_map(cam, shape)


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

  def __init__(self, model: Any, *, image_size: int = 224, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, top_k: int = 5, threshold: float = 0.2,
               resize: str = "square", batch_size: int = 8):
    """``mean`` / ``std``: the normalisation the model was trained with; None means ImageNet's."""
    if resize not in RESIZE_MODES:
      raise UserError(f"cam_images.resize must be one of {RESIZE_MODES}, got {resize!r}")
    if not 0.0 <= threshold < 1.0:
      raise UserError(f"cam_images.threshold must be in [0, 1), got {threshold}")
    if batch_size < 1 or image_size < 1:
      raise UserError("cam_images.batch_size and data.image_size must be positive")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and not 1 <= top_k <= num_classes:
      raise UserError(f"cam_images.top_k must be in [1, {num_classes}], got {top_k}")
    from camjax import cam
    from camjax.data import transforms  # imported here: the checks above must stay fast

    cam.check_class_maps(model)  # fails now, with the reason, for models without class maps
    model.eval()
    self.model = model
    mean = transforms.IMAGENET_MEAN if mean is None else mean
    std = transforms.IMAGENET_STD if std is None else std
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
  from camjax.report import figures as viz

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


def _dataset_class_names(data: Any, num_classes: int) -> tuple[str, ...] | None:
  """Class names of a run's data set when they are at hand, else None (synthetic data has none).

  ImageNet's readable names, the label file of the prepared data set, or the
  built-in camjax_shapes names; nothing is built or downloaded for them.
  """
  name = str(data.get("name", "") or "")
  if name == "ilsvrc2012_loc" and num_classes == 1000:
    from camjax.data.imagenet_classes import class_names

    return class_names()  # the readable names, in the synset order the data set uses
  if not name or name == "synthetic":
    return None
  from camjax.data import default_data_dir

  # TFDS writes the ClassLabel names next to the prepared records: <data_dir>/<name>/<config>/<version>/.
  base = os.path.join(os.path.expanduser(data.get("data_dir", "") or default_data_dir()), name)
  config_dir = os.path.join(base, str(data.get("builder_config", "") or ""))
  for root in (config_dir, base):
    versions = sorted(os.listdir(root), reverse=True) if os.path.isdir(root) else []
    for version in versions:
      path = os.path.join(root, version, "label.labels.txt")
      if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
          names = tuple(line.strip() for line in f if line.strip())
        if len(names) == num_classes:
          return names
  if name == "camjax_shapes":
    from camjax.data.shapes import CLASS_NAMES

    return tuple(CLASS_NAMES) if len(CLASS_NAMES) == num_classes else None
  return None


def resolve_class_names(spec: str, num_classes: int, *, data: Any = None) -> tuple[str, ...] | None:
  """``auto``, ``imagenet`` (1000 classes), a text file with one name per line, or '' for plain class ids.

  ``auto``: the names of ``data`` (a camjax run's data section) when known,
  else ImageNet's for a 1000-class model, else class ids.
  """
  if not spec:
    return None
  if spec == "auto":
    names = _dataset_class_names(data, num_classes) if data is not None else None
    if names is not None or num_classes != 1000:
      return names
    spec = "imagenet"
  if spec == "imagenet":
    if num_classes != 1000:
      log.warning("cam_images.class_names=imagenet but the model has %d classes; using class ids", num_classes)
      return None
    from camjax.data.imagenet_classes import class_names

    return class_names()
  if not os.path.isfile(spec):
    raise UserError(f"cam_images.class_names={spec!r}: no such file; give 'auto', 'imagenet', '' or a text file")
  from camjax.data.imagenet_classes import class_names

  names = class_names(spec)
  if len(names) != num_classes:
    raise UserError(f"cam_images.class_names file {spec} has {len(names)} names but the model has {num_classes} "
                    "classes; give a file with one name per class")
  return names


def process(runner: CamRunner, image_paths: Sequence[str], output: str, *,
            class_names: Sequence[str] | None = None, alpha: float = 0.5, cmap: str = "jet",
            tile: int = 224, write_figures: bool = True) -> list[dict]:
  """Decode, CAM, box, draw: writes ``output/<stem>_cam.png`` per image and ``output/cams.json``.

  Unreadable images are logged and listed in cams.json with an ``error`` field;
  the others go on. When not one of the images can be read this is a UserError
  and nothing is written, so a cams.json of an earlier run stays as it was.
  """
  os.makedirs(output, exist_ok=True)
  records: list[dict | None] = []  # in input order; None until the image's batch has run
  used: set[str] = set()
  pending: list[tuple[int, str, np.ndarray]] = []

  def flush() -> None:
    from camjax.report import figures as viz

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
  if records and all("error" in r for r in records):
    first = records[0]
    raise UserError(f"none of the {len(records)} images could be read (first: {first['image']}: {first['error']}); "
                    f"nothing written to {output}; pass images in {', '.join(IMAGE_EXTENSIONS)} or another "
                    "format Pillow decodes")
  with open(os.path.join(output, "cams.json"), "w", encoding="utf-8") as f:
    json.dump(records, f, indent=1)
  return records


# ----------------------------------------------------------------------------- settings, checked before any work


def check_settings(config: Any, workdir: str | None = None) -> None:
  """Every ``cam_images`` setting that can be checked without the model or the images: fail in milliseconds."""
  if "cam_images" not in config:
    raise UserError("the config has no cam_images section; use --config=configs/efficientnet_lite0_imagenet.py "
                    "(weights=checkpoint reads the run's model from its workdir)")
  s = config.cam_images
  if s.weights not in WEIGHT_SOURCES:
    raise UserError(f"cam_images.weights={s.weights!r}; set --config.cam_images.weights to one of: "
                    f"{', '.join(WEIGHT_SOURCES)}")
  if s.cmap not in CMAPS:
    raise UserError(f"cam_images.cmap={s.cmap!r} is not a colour map; set --config.cam_images.cmap to one of: "
                    f"{', '.join(CMAPS)}")
  if s.resize not in RESIZE_MODES:
    raise UserError(f"cam_images.resize={s.resize!r}; set --config.cam_images.resize to one of: "
                    f"{', '.join(RESIZE_MODES)}")
  if not 0.0 <= s.threshold < 1.0:
    raise UserError(f"cam_images.threshold={s.threshold}; set it in [0, 1) (the paper uses 0.2)")
  if not 0.0 <= s.alpha <= 1.0:
    raise UserError(f"cam_images.alpha={s.alpha}; set it in [0, 1]")
  for field in ("top_k", "batch_size", "figure_tile"):
    if s[field] < 1:
      raise UserError(f"cam_images.{field}={s[field]}; set it to a positive number")
  if s.class_names not in ("", "auto", "imagenet") and not os.path.isfile(s.class_names):
    raise UserError(f"cam_images.class_names={s.class_names!r}: no such file; give 'auto', 'imagenet', '' "
                    "or a text file with one name per line")
  if s.weights == "checkpoint":
    checkpoint_workdir(config, workdir)
    return
  if s.weights != "efficientnet_lite" and not s.weights_path:
    raise UserError(f"cam_images.weights={s.weights} needs --config.cam_images.weights_path=FILE.pth")
  if s.weights_path and not os.path.isfile(os.path.expanduser(s.weights_path)):
    raise UserError(f"cam_images.weights_path={s.weights_path} does not exist; fix the path")
  if not 1 <= s.top_k <= config.model.num_classes:
    raise UserError(f"cam_images.top_k={s.top_k}; set it in [1, {config.model.num_classes}] (the model's classes)")


# ----------------------------------------------------------------------------- camjax runs


def _checkpoint_messages(workdir: str) -> dict[str, str]:
  """This command's words for a run that is not there or holds no checkpoint."""
  return {"missing": f"cam_images.workdir={workdir} does not exist; point it at a camjax training workdir",
          "empty": f"cam_images.workdir={workdir} holds no checkpoint (no checkpoints/<step>/state); train first "
                   "(python -m camjax.main) or point it at a camjax training workdir"}


def checkpoint_workdir(config: Any, workdir: str | None = None) -> str:
  """The workdir of ``weights=checkpoint`` (``workdir`` or ``cam_images.workdir``), checked to hold a checkpoint."""
  workdir = workdir or config.cam_images.workdir
  if not workdir:
    raise UserError("cam_images.weights=checkpoint needs --config.cam_images.workdir=RUN_DIR (a camjax "
                    "training workdir)")
  from camjax.train import checkpoint

  checkpoint.find_checkpoints(workdir, **_checkpoint_messages(workdir))
  return workdir


def read_run_config(workdir: str) -> dict:
  """The ``config.json`` ``camjax.main`` wrote in a run's workdir, as a dict (lists turned into tuples)."""
  from camjax.train import checkpoint

  saved = checkpoint.run_config(workdir)
  path = os.path.join(checkpoint.run_dir(workdir), checkpoint.RUN_CONFIG_FILE)
  if saved is None:
    raise UserError(f"{checkpoint.run_dir(workdir)} has no config.json (python -m camjax.main writes it when a run "
                    "starts), so its model and preprocessing are unknown; point cam_images.workdir at a camjax "
                    "training workdir")
  for section in ("model", "data"):
    if not isinstance(saved.get(section), dict):
      raise UserError(f"{path} has no {section} section; is it a camjax run's config.json?")
  return saved


def config_from_run(config: Any, saved: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Any:
  """``config`` with the network and preprocessing of a camjax run (``saved``: its config.json).

  The run's whole ``model`` section (name, classes, pooling, bias, dtype,
  overrides) and its data set name, image size, mean and std replace this
  config's; the ``cam_images`` section stays. ``overrides`` (the command line's
  ``--config.*`` values, flat ``"section.field": value``) are applied last, so
  what the user typed wins. The run's ``data.eval_mode`` is not used: CAMs on
  photos map the whole image, so a centre crop would cut part of it away.
  """
  import ml_collections

  from camjax.train import checkpoint

  method = saved.get("method")
  out = checkpoint.with_run_model(config, saved["model"], method if isinstance(method, dict) else None)
  for key in RUN_DATA_FIELDS:
    if key in saved["data"]:
      out.data[key] = saved["data"][key]
  for key, value in (overrides or {}).items():
    *parents, leaf = key.split(".")
    node = out
    for name in parents:
      if name not in node:
        node[name] = ml_collections.ConfigDict()
      node = node[name]
    node[leaf] = value
  out.lock()
  return out


def describe_run(config: Any, workdir: str) -> str:
  """One line saying which network and preprocessing the CAMs use."""
  m, d = config.model, config.data
  extra = f" {m.overrides.to_dict()}" if m.overrides.to_dict() else ""
  return (f"model {m.name}{extra} ({m.num_classes} classes, {m.pooling}) and preprocessing {d.image_size} px, "
          f"mean {tuple(d.mean)}, std {tuple(d.std)} from {workdir}/config.json")


# ----------------------------------------------------------------------------- models from configs


def model_from_checkpoint(config: Any, workdir: str) -> Any:
  """The config's model with parameters and BatchNorm statistics from a camjax training checkpoint."""
  from camjax.train import checkpoint

  return checkpoint.model_from_workdir(config, workdir, **_checkpoint_messages(workdir),
                                       fix="drop the --config.model.* overrides or fix the run's config.json")


def model_from_config(config: Any, workdir: str | None = None) -> Any:
  """Build the model ``config.cam_images.weights`` names, with its weights loaded, in eval mode."""
  from flax import nnx

  from camjax import train
  from camjax.weights import assign, torchvision

  s = config.cam_images
  if s.weights not in WEIGHT_SOURCES:
    raise UserError(f"cam_images.weights must be one of {WEIGHT_SOURCES}, got {s.weights!r}")
  if s.weights == "checkpoint":
    return model_from_checkpoint(config, checkpoint_workdir(config, workdir))
  if s.weights == "efficientnet_lite":
    from camjax.weights import efficientnet_lite

    overrides = config.model.overrides.to_dict()
    if config.model.dtype != "float32":
      overrides["dtype"] = train.COMPUTE_DTYPES[config.model.dtype]
    return efficientnet_lite.pretrained(config.model.name, path=s.weights_path or None,
                                        num_classes=config.model.num_classes, pooling=config.model.pooling,
                                        **overrides)
  if not s.weights_path:
    raise UserError(f"cam_images.weights={s.weights} needs --config.cam_images.weights_path=FILE.pth")
  model = nnx.eval_shape(lambda: train.build_model(config))
  torchvision.load_pretrained(model, s.weights_path, s.weights, head=True)
  assign.fill_rng_state(model, 0)
  left = assign.abstract_paths(model)
  if left:
    raise UserError(f"{s.weights_path} leaves {', '.join(left[:5])} untrained: CAM needs a trained classifier; "
                    "use a model whose head the file holds (e.g. googlenet) or a camjax checkpoint")
  model.eval()
  return model


def runner_from_config(config: Any, model: Any) -> CamRunner:
  s = config.cam_images
  return CamRunner(model, image_size=config.data.image_size, mean=config.data.mean, std=config.data.std,
                   top_k=s.top_k, threshold=s.threshold, resize=s.resize, batch_size=s.batch_size)


def prepare(config: Any, image_paths: Sequence[str], output: str, *, workdir: str | None = None,
            overrides: Mapping[str, Any] | None = None) -> tuple[Any, list[str], str]:
  """Every check that needs no model: settings, image paths, the output directory, the run of a checkpoint.

  Returns (the config to use: a run's network and preprocessing for
  ``weights=checkpoint``, the image files, the output directory).
  """
  check_settings(config, workdir)
  paths = expand_paths(image_paths)
  if not paths:
    raise UserError("no images given: pass --images=FILE_OR_DIR [MORE ...]")
  output = app.writable_dir(output, "--output")
  if config.cam_images.weights == "checkpoint":
    run_workdir = checkpoint_workdir(config, workdir)
    config = config_from_run(config, read_run_config(run_workdir), overrides)
    from camjax.train import checkpoint

    log.info("using the run's %s", describe_run(config, checkpoint.run_dir(run_workdir)))
    top_k, num_classes = config.cam_images.top_k, config.model.num_classes
    if top_k > num_classes and "cam_images.top_k" not in (overrides or {}):
      with config.unlocked():
        config.cam_images.top_k = num_classes  # the default top-5 of a run with fewer classes: all of them
    elif not 1 <= top_k <= num_classes:
      raise UserError(f"cam_images.top_k={top_k}; the run's model has {num_classes} classes: "
                      f"set --config.cam_images.top_k in [1, {num_classes}]")
  return config, paths, output


def run(config: Any, image_paths: Sequence[str], output: str, *, model: Any = None,
        workdir: str | None = None, overrides: Mapping[str, Any] | None = None) -> list[dict]:
  """The command's work: check everything cheap, build (or take) the model, write figures and cams.json.

  ``overrides``: the ``--config.*`` values the user gave, which win over a
  camjax run's config.json (``weights=checkpoint``).
  """
  config, paths, output = prepare(config, image_paths, output, workdir=workdir, overrides=overrides)
  model = model if model is not None else model_from_config(config, workdir)
  runner = runner_from_config(config, model)
  s = config.cam_images
  data = config.data if s.weights == "checkpoint" else None
  names = resolve_class_names(s.class_names, int(getattr(model, "num_classes", 0)), data=data)
  return process(runner, paths, output, class_names=names, alpha=s.alpha, cmap=s.cmap, tile=s.figure_tile)


def _main(argv: Sequence[str]) -> int:
  from absl import flags
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax's INFO lines say nothing to someone running CAMs
  FLAGS = flags.FLAGS
  extra = list(argv[1:])
  unknown = [a for a in extra if a.startswith("-")]
  if unknown:
    raise UserError(f"unknown arguments: {' '.join(unknown)}; run with --helpfull to list the flags")
  config = app.config_value()
  images = list(FLAGS.images or []) + extra
  records = run(config, images, FLAGS.output, workdir=FLAGS.workdir, overrides=FLAGS["config"].override_values)
  print(summary_table(records, FLAGS.output))
  return 0


def summary_table(records: Sequence[dict], output: str) -> str:
  """The console summary of a run: each image's top class, probability and box, then the counts."""
  ok = [r for r in records if "predictions" in r]
  rows = [(r["image"], r["predictions"][0]["class_name"].split(",")[0], r["predictions"][0]["prob"],
           str(r["predictions"][0]["box"])) for r in ok]
  bad = [r["image"] for r in records if "error" in r]
  unreadable = f" ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})" if bad else ""
  summary = f"{len(ok)} images, {len(bad)} unreadable{unreadable}; wrote {os.path.join(output, 'cams.json')}"
  return app.format_table(("image", "top class", "prob", "box"), rows, footer=summary) if rows else summary


def main() -> None:
  from absl import flags
  from ml_collections import config_flags

  # With a default file, ml_collections reads the file and the --config.* overrides while the flag is defined,
  # before absl parses anything: bad input there gets the same one line as in app.parse_absl_flags.
  if "--verbose" in sys.argv or "--verbose=true" in sys.argv:
    app.set_verbose(True)
  try:
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file (default: EfficientNet-Lite0 on ImageNet).",
                                    lock_config=True)
  except (KeyError, AttributeError, OSError, TypeError, ValueError) as e:
    sys.exit(app.report(UserError(app.config_flag_message(e))))
  flags.DEFINE_multi_string("images", None, "Image files or directories (more may follow as plain arguments).")
  flags.DEFINE_string("output", "cam_images_out", "Directory for the figures and cams.json.")
  flags.DEFINE_string("workdir", None, "camjax training workdir (cam_images.weights=checkpoint).")
  app.define_verbose_flag()
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  log.setLevel(logging.INFO)
  app.run_absl(_main)


if __name__ == "__main__":
  main()
