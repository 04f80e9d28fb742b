"""Fine-grained recognition with localizable features (Zhou et al. 2016, Sec. 4.1, Tbl. 4).

1. GAP features of full images -> linear classifier -> accuracy ("full image").
2. The classifier's own CAM gives a box per image (paper protocol: the map of
   the top-1 predicted class on test images, of the true class on training
   images; pixels above 20% of the max, largest 8-connected component). The
   original image is cropped to that box (mapped back from the evaluation frame
   to the original pixels) and resized to the input size -> features -> a new
   classifier trained on crop features -> accuracy ("crop (CAM box)"), and the
   localization rate: the fraction of test images whose CAM box has IoU >= 0.5
   with a ground-truth box.
3. The same with the ground-truth box (the union of an image's boxes) on train
   and test ("crop (GT box)"), an upper bound for step 2.

The backbone comes from a camjax training checkpoint (``config.backbone_workdir``;
a workdir without a checkpoint is an error) or, when that field is '', loudly,
from a fresh initialisation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from camjax import cam
from camjax.train import sharding
from camjax.errors import UserError
from camjax.features.extraction import (FeatureSet, device_batches, extract_features, model_pooling,
                                        replicate_model)
from camjax.features.linear import LinearHeadModel, Selection, select_and_fit

log = logging.getLogger("camjax.features")

RESULT_FILE = "finegrained.json"
ROW_NAMES = {"full": "full image", "cam_crop": "crop (CAM box)", "gt_crop": "crop (GT box)"}
CAM_CLASSES = ("true", "predicted")


# ----------------------------------------------------------------------------- boxes from maps


def box_from_cam(cam_map: np.ndarray, threshold: float) -> np.ndarray:
  """Inclusive (x0, y0, x1, y1) by the CAM paper protocol (``camjax.localization.boxes_from_cam``).

  Maps of a linear classifier need not be positive; when no pixel is above
  ``threshold * max`` (a map with max <= 0) the map is min-max normalized
  first, and a constant map gives the whole image.
  """
  from camjax import localization  # host-side evaluator, NumPy only

  cam_map = np.asarray(cam_map, np.float32)
  boxes = localization.boxes_from_cam(cam_map, threshold, protocol="paper")
  if boxes.shape[0] == 0 and float(cam_map.max() - cam_map.min()) > 0:
    boxes = localization.boxes_from_cam(localization.min_max(cam_map), threshold, protocol="paper")
  if boxes.shape[0] == 0:
    height, width = cam_map.shape
    return np.array([0, 0, width - 1, height - 1], np.int64)
  return np.asarray(boxes[0], np.int64)


def best_iou(box: np.ndarray, gt_boxes: np.ndarray) -> float:
  """Best IoU of ``box`` with any of ``gt_boxes`` (inclusive pixel boxes); NaN when there are none."""
  from camjax import localization

  gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
  if gt_boxes.shape[0] == 0:
    return float("nan")
  return float(np.max(localization.iou(np.asarray(box)[None], gt_boxes)))


# ----------------------------------------------------------------------------- sources of crops


def eval_region(height: int, width: int, mode: str, size: int, resize_size: int | None = None) -> tuple[float, ...]:
  """(left, top, right, bottom) of the original image that the evaluation image shows.

  The same regions as camjax.data.transforms.resize / resize_center_crop.
  """
  if mode == "resize":
    return 0.0, 0.0, float(width), float(height)
  if mode == "resize_crop":
    from camjax.data.transforms import center_crop_region

    return center_crop_region(height, width, size, resize_size)
  raise ValueError(f"eval mode must be 'resize' or 'resize_crop', got {mode!r}")


class CroppedSource:
  """Records of ``source`` with the image cut to a region and resampled to ``size`` x ``size``.

  ``regions`` maps a record index to a normalized box (x0, y0, x1, y1) (a
  continuous extent, 0..1) in the ``frame`` "eval" (the evaluation image,
  e.g. a CAM box) or "original" (the stored image); ``"gt"`` instead of a box
  means the union of the record's ground-truth boxes. Records without a region
  are refused (they become invalid rows). Masks are dropped; the cropped
  record keeps no boxes.
  """

  def __init__(self, source: Any, regions: Mapping[int, Any], *, size: int, eval_mode: str = "resize",
               resize_size: int | None = None):
    self._source = source
    self._regions = dict(regions)
    self._size = int(size)
    self._eval_mode = eval_mode
    self._resize_size = resize_size
    self.dataset_info = None  # records have no mask

  def __len__(self) -> int:
    return len(self._source)

  def region_in_original(self, index: int, height: int, width: int) -> tuple[float, float, float, float]:
    region = self._regions[index]
    if isinstance(region, str):  # "gt" resolved by __getitem__
      raise ValueError(region)
    frame, (x0, y0, x1, y1) = region
    if frame == "original":
      left, top, right, bottom = 0.0, 0.0, float(width), float(height)
    else:
      left, top, right, bottom = eval_region(height, width, self._eval_mode, self._size, self._resize_size)
    sx, sy = right - left, bottom - top
    return left + x0 * sx, top + y0 * sy, left + x1 * sx, top + y1 * sy

  def __getitem__(self, index: int) -> dict:
    from camjax.data import transforms as T

    if index not in self._regions:
      raise KeyError(f"no crop region for record {index}")
    record = self._source[index]
    image = T.as_rgb(np.asarray(record["image"]))
    height, width = image.shape[:2]
    if isinstance(self._regions[index], str):
      boxes = np.asarray(record.get("bboxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
      if boxes.shape[0] == 0:
        raise ValueError(f"record {index} has no ground-truth box to crop to")
      ymin, xmin = boxes[:, 0].min(), boxes[:, 1].min()
      ymax, xmax = boxes[:, 2].max(), boxes[:, 3].max()
      region = (xmin * width, ymin * height, xmax * width, ymax * height)
    else:
      region = self.region_in_original(index, height, width)
    left, top, right, bottom = region
    left, top = max(0.0, left), max(0.0, top)
    right, bottom = min(float(width), right), min(float(height), bottom)
    if right - left <= 0 or bottom - top <= 0:
      raise ValueError(f"empty crop region {region} for record {index}")
    crop = T.crop_resize(T.Example(image, np.zeros((0, 4), np.int64)), (left, top, right, bottom),
                         (self._size, self._size))
    out = {"image": crop.image, "label": record["label"], "bboxes": np.zeros((0, 4), np.float32)}
    if "id" in record:
      out["id"] = record["id"]
    return out


# ----------------------------------------------------------------------------- CAM boxes of a split


@dataclasses.dataclass
class CamBoxes:
  """Per example (sorted by index): CAM box in the evaluation frame, its class, prediction, IoU."""

  indices: np.ndarray  # (N,) int64
  boxes: np.ndarray  # (N, 4) int64 inclusive pixel, evaluation frame
  class_ids: np.ndarray  # (N,) the class whose map gave the box
  predicted: np.ndarray  # (N,) top-1 class of the classifier
  labels: np.ndarray  # (N,)
  ious: np.ndarray  # (N,) best IoU with a ground-truth box; NaN without boxes
  image_size: int

  def localization_rate(self, iou_threshold: float = 0.5) -> float | None:
    """Fraction of examples with ground truth whose box has IoU >= ``iou_threshold``."""
    known = ~np.isnan(self.ious)
    if not known.any():
      return None
    return float(np.mean(self.ious[known] >= iou_threshold))

  def regions(self) -> dict[int, tuple[str, tuple[float, ...]]]:
    """CAM boxes as continuous normalized extents of the evaluation image, for ``CroppedSource``."""
    s = float(self.image_size)
    return {int(i): ("eval", (b[0] / s, b[1] / s, (b[2] + 1) / s, (b[3] + 1) / s))
            for i, b in zip(self.indices, self.boxes)}


def cam_boxes(head: nnx.Module, batches: Iterable[Mapping[str, np.ndarray]], *, classes: str = "predicted",
              threshold: float = 0.2, mesh: jax.sharding.Mesh | None = None,
              progress: Callable[[int], None] | None = None) -> CamBoxes:
  """Boxes from the CAMs of ``head`` (any CAM-capable model, e.g. a ``LinearHeadModel``).

  classes: "predicted" (top-1 of the head, the test-time protocol) or "true"
  (the label, for training images).
  """
  if classes not in CAM_CLASSES:
    raise ValueError(f"classes must be one of {CAM_CLASSES}, got {classes!r}")
  mesh = mesh or sharding.make_mesh()
  replicate_model(head, mesh)
  rows = {k: [] for k in ("indices", "boxes", "class_ids", "predicted", "labels", "ious")}
  image_size = None
  for on_device, host in device_batches(batches, mesh, host_keys=("valid", "index", "label", "boxes", "num_boxes")):
    images = on_device["image"]
    image_size = int(images.shape[1])
    labels = np.asarray(host["label"]).astype(np.int64)
    ids = jnp.asarray(labels, jnp.int32) if classes == "true" else None
    out = cam.class_activation_maps(head, images, top_k=1, class_ids=ids, upsample=True)
    logits, class_ids, maps = sharding.to_host((out.logits, out.class_ids, out.upsampled))
    valid = np.asarray(host["valid"]).astype(bool)
    for r in np.flatnonzero(valid):
      box = box_from_cam(maps[r, 0], threshold)
      n = int(host["num_boxes"][r]) if "num_boxes" in host else 0
      gt = np.asarray(host["boxes"][r][:n]) if n else np.zeros((0, 4))
      rows["indices"].append(int(host["index"][r]))
      rows["boxes"].append(box)
      rows["class_ids"].append(int(class_ids[r, 0]))
      rows["predicted"].append(int(np.argmax(logits[r])))
      rows["labels"].append(int(labels[r]))
      rows["ious"].append(best_iou(box, gt))
    if progress is not None:
      progress(int(valid.sum()))
  if image_size is None:
    raise UserError("no batches to compute CAM boxes from; is the split empty? (check features.max_examples)")
  order = np.argsort(np.asarray(rows["indices"], np.int64), kind="stable")
  pick = lambda k, dtype: np.asarray(rows[k], dtype)[order] if rows[k] else np.zeros((0,), dtype)
  return CamBoxes(indices=pick("indices", np.int64),
                  boxes=np.asarray(rows["boxes"], np.int64).reshape(-1, 4)[order],
                  class_ids=pick("class_ids", np.int64), predicted=pick("predicted", np.int64),
                  labels=pick("labels", np.int64), ious=pick("ious", np.float64), image_size=image_size)


# ----------------------------------------------------------------------------- the pipeline


def _say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def backbone_training_config(config: Any) -> Any:
  """``config`` with the model section of the backbone's own run.

  ``camjax.main`` writes ``WORKDIR/config.json``; reading a checkpoint needs the
  network it was trained with, whatever overrides that run used (only the
  weights are read, so the run's optimizer does not matter). Fields the saved
  run does not mention keep this config's values; the other sections stay those
  of ``config``.
  """
  from camjax.train import checkpoint

  saved = _saved_config(config.backbone_workdir) if config.backbone_workdir else {}
  method = saved.get("method") if isinstance(saved.get("method"), Mapping) else None
  merged = checkpoint.with_run_model(config, saved["model"] if isinstance(saved.get("model"), Mapping) else {}, method)
  merged.pretrained.path = ""  # the checkpoint holds every weight; do not re-import pretrained ones
  return merged


def _saved_config(workdir: str) -> dict[str, Any]:
  """The backbone run's config.json as a dict ({} when there is none)."""
  from camjax.train import checkpoint

  return checkpoint.run_config(workdir) or {}


def _saved_data_name(workdir: str) -> str:
  """The data set the backbone was trained on ('' when unknown)."""
  return str(_saved_config(workdir).get("data", {}).get("name", "")) if workdir else ""


def with_backbone_preprocessing(config: Any) -> Any:
  """``config`` with ``data.mean`` / ``data.std`` of the backbone's run (its inputs must look as in training).

  Other data fields (data set, image size) stay this config's: a backbone
  can be applied to another data set, as in the paper (ImageNet -> CUB).
  """
  saved = _saved_config(config.backbone_workdir).get("data", {}) if config.backbone_workdir else {}
  out = config.copy_and_resolve_references()
  changed = []
  for key in ("mean", "std"):
    if key in saved and tuple(float(v) for v in saved[key]) != tuple(float(v) for v in config.data[key]):
      changed.append(f"data.{key}={tuple(saved[key])}")
      with out.unlocked():
        out.data[key] = tuple(float(v) for v in saved[key])
  if changed:
    _say(f"note: using the backbone run's preprocessing {', '.join(changed)} "
         f"(from {config.backbone_workdir}/config.json)")
  return out


def _backbone_messages(workdir: str) -> dict[str, str]:
  """This command's words for a backbone run that is not there or holds no checkpoint."""
  from camjax import train

  return {"missing": f"backbone_workdir={workdir} is not a directory; train a backbone there first or set "
                     "--config.backbone_workdir to a camjax training workdir ('' for an untrained backbone)",
          "empty": f"backbone_workdir={workdir} has no checkpoint in {train.checkpoint_dir(workdir)}; train it first "
                   f"(python -m camjax.main --config=<training config> --workdir={workdir}) or fix "
                   "--config.backbone_workdir"}


def check_backbone_workdir(config: Any) -> str:
  """The checkpoint folder of ``config.backbone_workdir`` ('' when it is empty, which means a fresh backbone).

  A workdir that does not exist or holds no checkpoint is a UserError: a
  mistyped path must not silently give an untrained backbone.
  """
  from camjax.train import checkpoint

  workdir = config.backbone_workdir
  if not workdir:
    return ""
  messages = _backbone_messages(workdir)
  if not os.path.isdir(workdir):
    raise UserError(messages["missing"])
  return checkpoint.find_checkpoints(workdir, **messages).directory


def load_backbone(config: Any) -> tuple[nnx.Module, dict[str, Any]]:
  """The backbone from the newest checkpoint in ``config.backbone_workdir``, or fresh (said loudly) when it is ''.

  Returns (model, info) where info says where the weights came from.
  """
  from camjax import train
  from camjax.train import checkpoint

  workdir = config.backbone_workdir
  if check_backbone_workdir(config):
    bconfig = backbone_training_config(config)
    model, step = checkpoint.restore_model(bconfig, workdir, **_backbone_messages(workdir),
                                           fix=f"fix {os.path.join(workdir, 'config.json')} or the --config.model.* "
                                               "values")
    return model, {"source": "checkpoint", "workdir": os.path.abspath(workdir), "step": int(step),
                   "model": bconfig.model.name, "num_classes": int(bconfig.model.num_classes),
                   "data": _saved_data_name(workdir)}
  banner = "=" * 78
  message = (f"{banner}\nWARNING: config.backbone_workdir is empty.\nWARNING: the backbone {config.model.name!r} is a "
             f"FRESH, UNTRAINED initialisation (seed {config.training.seed}): its features are random projections "
             "and the\nWARNING: numbers below say nothing about a trained network. Train first (python -m camjax.main "
             "--config=<training config> --workdir=<dir>),\nWARNING: then pass --config.backbone_workdir=<dir>."
             f"\n{banner}")
  log.warning(message)
  if jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)
  fresh = config.copy_and_resolve_references()
  with fresh.unlocked():
    fresh.pretrained.path = ""
  model = train.build_model(fresh)
  model.eval()
  return model, {"source": "fresh init (untrained)", "workdir": "", "step": 0, "model": config.model.name,
                 "num_classes": int(config.model.num_classes), "data": ""}


def _data_source(config: Any, split: str) -> tuple[Any, int]:
  """(random-access records of ``split``, number of classes of the data set)."""
  from camjax import data

  builder = data.prepare_from_config(config)
  if split not in builder.info.splits:
    raise UserError(f"data set {config.data.name} has no split {split!r}; set features.*_split to one of: "
                     f"{', '.join(builder.info.splits)}")
  num_classes = int(builder.info.features["label"].num_classes)
  from camjax.data.pipeline import HeadSource

  return HeadSource(builder.as_data_source(split), int(config.features.max_examples)), num_classes


def _batches_fn(config: Any) -> Callable[[Any], Any]:
  from camjax.data import pipeline

  def make(source):
    return pipeline.eval_batches(
        source, global_batch_size=int(config.features.batch_size), image_size=int(config.data.image_size),
        mode=config.data.eval_mode, mean=tuple(config.data.mean), std=tuple(config.data.std),
        max_boxes=int(config.data.max_boxes), on_bad_data="skip", worker_count=int(config.data.worker_count))

  return make


def check_config(config: Any) -> None:
  """Fail at start, with one line saying what to change, on values that cannot work."""
  f = config.features
  if f.classifier not in ("svm", "softmax"):
    raise UserError(f"features.classifier={f.classifier!r}; set --config.features.classifier to svm or softmax")
  if not f.C_grid or any(float(c) <= 0 for c in f.C_grid):
    raise UserError(f"features.C_grid={tuple(f.C_grid)}; set --config.features.C_grid to positive numbers")
  if f.train_cam_class not in CAM_CLASSES:
    raise UserError(f"features.train_cam_class={f.train_cam_class!r}; set --config.features.train_cam_class to one "
                    f"of {CAM_CLASSES}")
  if not 0.0 < float(f.cam_threshold) < 1.0:
    raise UserError(f"features.cam_threshold={f.cam_threshold}; set --config.features.cam_threshold in (0, 1)")
  unknown = set(f.rows) - set(ROW_NAMES)
  if unknown or "full" not in f.rows:
    raise UserError(f"features.rows={tuple(f.rows)}; it must include 'full' and be among {tuple(ROW_NAMES)}")
  if not f.train_split or not f.test_split:
    raise UserError("set --config.features.train_split and --config.features.test_split")
  if int(f.batch_size) <= 0:
    raise UserError(f"features.batch_size={f.batch_size}; set --config.features.batch_size to a positive number")
  if config.data.eval_mode not in ("resize", "resize_crop"):
    raise UserError(f"data.eval_mode={config.data.eval_mode!r}; set --config.data.eval_mode to resize or resize_crop")
  from camjax import data

  if config.data.name not in data.builder_names():
    raise UserError(f"unknown data set {config.data.name!r}; set --config.data.name to one of: "
                    f"{', '.join(data.builder_names())}")
  check_backbone_workdir(config)


def _fit(config: Any, train: FeatureSet, val: FeatureSet | None, num_classes: int,
         loss: str | None = None) -> Selection:
  f = config.features
  return select_and_fit(
      train.features, train.labels, num_classes=num_classes, loss=loss or f.classifier, grid=tuple(f.C_grid),
      val_features=None if val is None else val.features, val_labels=None if val is None else val.labels,
      holdout_fraction=float(f.holdout_fraction), seed=int(f.seed), max_iter=int(f.max_iter))


def _row(name: str, sel: Selection, test: FeatureSet, train: FeatureSet) -> dict[str, Any]:
  clf = sel.classifier
  return {"row": ROW_NAMES[name], "key": name, "accuracy": clf.accuracy(test.features, test.labels),
          "train_accuracy": clf.accuracy(train.features, train.labels), "C": sel.best_C,
          "C_selected_on": sel.val_source, "val_accuracy": {str(k): v for k, v in sel.val_accuracy.items()},
          "num_train": len(train), "num_test": len(test), "converged": bool(clf.converged)}


def run(config: Any, workdir: str) -> dict[str, Any]:
  """The whole Sec. 4.1 pipeline; prints the table and writes ``WORKDIR/finegrained.json``."""
  check_config(config)
  config = with_backbone_preprocessing(config)
  f = config.features
  start = time.perf_counter()
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
  model, backbone = load_backbone(config)
  pooling = model_pooling(model)
  make_batches = _batches_fn(config)
  splits = {"train": f.train_split, "test": f.test_split}
  if f.val_split:
    splits["val"] = f.val_split
  opened = {role: _data_source(config, split) for role, split in splits.items()}
  sources = {role: src for role, (src, _) in opened.items()}
  num_classes = opened["train"][1]
  is_main = jax.process_index() == 0
  feature_dir = os.path.join(workdir, "features")

  def bar(what: str, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="img", dynamic_ncols=True, leave=False,
                disable=not (is_main and f.progress_bar))

  def features(role: str, source: Any, kind: str) -> FeatureSet:
    t = time.perf_counter()
    with bar(f"{kind} {splits[role]}", len(source)) as progress:
      fs = extract_features(model, make_batches(source), pooling=pooling, mesh=mesh, progress=progress.update,
                            meta={"split": splits[role], "kind": kind, "backbone": backbone})
    if f.save_features and is_main:
      fs.save(os.path.join(feature_dir, f"{kind}_{role}.npz"))
    _say(f"  features {kind:8s} {splits[role]:>12s}: {len(fs)} x {fs.features.shape[1]} "
         f"({time.perf_counter() - t:.1f}s)")
    return fs

  # 1. Full images.
  _say(f"backbone: {config.model.name} ({backbone['source']}"
       + (f", step {backbone['step']} of {backbone['workdir']})" if backbone["source"] == "checkpoint" else ")"))
  full = {role: features(role, src, "full") for role, src in sources.items()}
  for role, fs in full.items():
    if len(fs) and (fs.labels.max() >= num_classes):
      raise UserError(f"split {splits[role]} has labels up to {fs.labels.max()} but the data set declares "
                       f"{num_classes} classes; check config.data")
  sel_full = _fit(config, full["train"], full.get("val"), num_classes)
  rows = [_row("full", sel_full, full["test"], full["train"])]
  result: dict[str, Any] = {"backbone": backbone, "model": config.model.name, "data": config.data.name,
                            "classifier": f.classifier, "pooling": pooling, "splits": splits, "rows": rows,
                            "image_size": int(config.data.image_size), "data_mean": list(config.data.mean),
                            "data_std": list(config.data.std)}
  head_logits_ok = (backbone["source"] == "checkpoint" and full["test"].logits is not None
                    and full["test"].logits.shape[1] == num_classes
                    and backbone.get("data") in ("", config.data.name))
  if head_logits_ok:
    result["head_accuracy"] = full["test"].head_accuracy()
    result["linear_minus_head"] = rows[0]["accuracy"] - result["head_accuracy"]
  if f.classifier != "softmax":  # the head's own loss on the same features: how far the head is from optimal
    soft = _fit(config, full["train"], full.get("val"), num_classes, loss="softmax").classifier
    result["full_softmax_regression_accuracy"] = soft.accuracy(full["test"].features, full["test"].labels)

  # 2. Crops to the CAM box of the fitted classifier.
  if "cam_crop" in f.rows:
    head = LinearHeadModel.from_classifier(model, sel_full.classifier, pooling=pooling)
    boxes = {}
    for role, src in sources.items():
      t = time.perf_counter()
      classes = f.train_cam_class if role == "train" else "predicted"
      with bar(f"CAM boxes {splits[role]}", len(src)) as progress:
        boxes[role] = cam_boxes(head, make_batches(src), classes=classes, threshold=float(f.cam_threshold),
                                mesh=mesh, progress=progress.update)
      _say(f"  CAM boxes ({classes:9s}) {splits[role]:>12s}: {len(boxes[role].indices)} "
           f"({time.perf_counter() - t:.1f}s)")
    crops = {role: features(role, CroppedSource(src, boxes[role].regions(), size=int(config.data.image_size),
                                                eval_mode=config.data.eval_mode), "cam_crop")
             for role, src in sources.items()}
    sel = _fit(config, crops["train"], crops.get("val"), num_classes)
    row = _row("cam_crop", sel, crops["test"], crops["train"])
    row["localization_rate"] = boxes["test"].localization_rate(0.5)
    row["train_localization_rate"] = boxes["train"].localization_rate(0.5)
    row["test_cam_class"] = "predicted"
    row["train_cam_class"] = f.train_cam_class
    rows.append(row)
    result["localization_rate"] = row["localization_rate"]
    if is_main:
      os.makedirs(feature_dir, exist_ok=True)
      for role, b in boxes.items():
        np.savez(os.path.join(feature_dir, f"cam_boxes_{role}.npz"), **{
            k: getattr(b, k) for k in ("indices", "boxes", "class_ids", "predicted", "labels", "ious")})

  # 3. Crops to the ground-truth box.
  if "gt_crop" in f.rows:
    gt = {role: features(role, CroppedSource(src, {i: "gt" for i in range(len(src))},
                                             size=int(config.data.image_size), eval_mode=config.data.eval_mode),
                         "gt_crop")
          for role, src in sources.items()}
    if len(gt["train"]) and len(gt["test"]):
      val = gt.get("val") if gt.get("val") is not None and len(gt["val"]) else None
      sel = _fit(config, gt["train"], val, num_classes)
      rows.append(_row("gt_crop", sel, gt["test"], gt["train"]))
    else:
      _say("  no ground-truth boxes in train or test: the GT-box row is left out")
  result["seconds"] = time.perf_counter() - start
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, RESULT_FILE), "w") as fh:
      json.dump(result, fh, indent=2, sort_keys=True)
    print(format_table(result), flush=True)
  return result


def format_table(result: Mapping[str, Any]) -> str:
  """The applicable rows of the paper's Tbl. 4 as plain text (``camjax.app.format_table``)."""
  from camjax import app

  b = result["backbone"]
  title = (f"Fine-grained classification (Zhou et al. 2016, Tbl. 4): {result['model']} on {result['data']}, "
           f"{result['classifier']} on {result['pooling'].upper()} features, backbone: {b['source']}")
  rows = [(row["row"], f"{100 * row['accuracy']:.2f}%", f"{row['C']:g}") for row in result["rows"]]
  notes = []
  if result.get("localization_rate") is not None:
    notes.append(f"localization rate (test CAM boxes with IoU >= 0.5): {100 * result['localization_rate']:.2f}%")
  if result.get("full_softmax_regression_accuracy") is not None:
    notes.append(f"softmax regression on full-image features: {100 * result['full_softmax_regression_accuracy']:.2f}%")
  if result.get("head_accuracy") is not None:
    notes.append(f"trained softmax head on full images: {100 * result['head_accuracy']:.2f}% "
                 f"(linear {result['classifier']} - head = {100 * result['linear_minus_head']:+.2f} points)")
  return app.format_table(("train / test", "accuracy", "C"), rows, title=title, footer="\n".join(notes))
