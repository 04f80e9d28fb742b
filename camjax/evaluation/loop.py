"""Evaluation of a trained state: jitted CAMs on the mesh, scores on the host, JSON in the workdir.

One forward pass per batch gives the logits and, for the top-k classes and the
ground-truth class, the class activation maps upsampled to the image size
(``camjax.cam.class_maps``: CAM, or the model's own maps, as ACoL's).
The maps come to the host batch by batch (each process takes its own rows)
and feed the streaming accumulators of ``camjax.localization``:

- paper protocol (Zhou et al. 2016): top-1/top-5 localization and
  classification errors, GT-known localization accuracy;
- WSOL protocol (Choe et al. 2020): MaxBoxAcc (v1), MaxBoxAccV2, top-1
  localization, and PxAP when the data set has masks (with the ignore
  regions of OpenImages30k, which has no boxes: PxAP alone).

Every process scores its share; the counts are summed across processes and
process 0 writes ``eval_results.json`` and the ``eval`` records of ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from camjax import cam
from camjax.data.openimages import IgnoreRegions
from camjax.train import data as train_data, sharding
from camjax.errors import UserError
from camjax.localization.maps import min_max  # per-map min-max to [0, 1], as the saved-map scorer
from camjax.train.metrics import MetricsWriter
from camjax.models.base import NotCamCompatible

log = logging.getLogger("camjax.eval")

RESULTS_FILE = "eval_results.json"


def _cam_fn(model_def: Any, top_k: int, dtype: Any, with_maps: bool):
  """(params, stats, other, images, labels) -> logits, class ids (B, top_k + 1), maps (B, top_k + 1, S, S)."""

  def fn(params, stats, other, images, labels):
    model = model_def.merge(params, stats, other, train=False)
    logits, features = model(images.astype(dtype))
    logits = logits.astype(jnp.float32)
    ids = jnp.concatenate([jax.lax.top_k(logits, top_k)[1], labels[:, None]], axis=1).astype(jnp.int32)
    if not with_maps:
      return logits, ids, jnp.zeros((images.shape[0], 0), jnp.float32)
    maps = cam.upsample_maps(cam.class_maps(model, features, ids), images.shape[1:3])
    return logits, ids, maps

  return fn


def _local(x: jax.Array, mesh: Any) -> np.ndarray:
  """This process's rows of a batch-sharded global array."""
  if jax.process_count() == 1:
    return np.asarray(x)
  spec = jax.sharding.PartitionSpec(sharding.DATA)
  return np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, spec))


def _merge_across_processes(accumulator: Any) -> None:
  """Sum an accumulator's counts over processes (every process ends with the totals)."""
  if jax.process_count() == 1:
    return
  states = sharding.gather_json({k: np.asarray(v).tolist() for k, v in accumulator.state().items()})
  total = {k: np.sum([np.asarray(s[k]) for s in states], axis=0) for k in states[0]}
  accumulator.load_state(total)


def num_eval_batches(batches: Any) -> int | None:
  """Batches every process runs in evaluation (the same on all), for the progress bar's total; None if unknown."""
  try:
    return len(batches)
  except TypeError:
    return None


def _is_cam_model(model_def: Any, state: dict) -> bool:
  model = model_def.merge(state["params"], state["batch_stats"], state["other"], train=False)
  try:
    cam.check_class_maps(model)
    return True
  except NotCamCompatible:
    return False


def evaluate(model_state: Any, config: Any, workdir: str) -> dict:
  """Score ``model_state`` (a ``camjax.train.TrainResult``) on the eval split; write JSON to ``workdir``."""
  from camjax import localization

  mesh, model_def, state = model_state.mesh, model_state.model_def, model_state.state
  top_k = int(min(config.eval.top_k, config.model.num_classes))
  with_maps = _is_cam_model(model_def, state)
  if not with_maps:
    log.warning("%s has no global-pooling linear head: only classification is scored "
                "(use camjax.saliency for its localization maps)", config.model.name)
  from camjax.train import COMPUTE_DTYPES

  batch_sharding = sharding.batch_sharding(mesh)
  fn = jax.jit(_cam_fn(model_def, top_k, COMPUTE_DTYPES[config.model.dtype], with_maps),
               out_shardings=(batch_sharding, batch_sharding, batch_sharding))

  protocols = set(config.eval.protocols) if with_maps else set()
  thresholds = np.arange(0.0, 1.0, config.eval.wsol_threshold_step)
  paper = localization.PaperAccumulator(config.eval.paper_threshold) if "paper" in protocols else None
  # Ignore regions mean mask annotations without boxes (OpenImages30k): there the WSOL protocol is PxAP alone.
  ignore_regions = IgnoreRegions.for_eval(config) if "wsol" in protocols else None
  wsol = (localization.WsolAccumulator(thresholds, tuple(config.eval.iou_thresholds), "both")
          if "wsol" in protocols and ignore_regions is None else None)
  pxap = None
  baseline = None
  if config.eval.baseline and protocols:
    from camjax.evaluation.baseline import CentreBaseline

    baseline = CentreBaseline(train_data.mean_box_fraction(config), top_k=top_k,
                              paper_threshold=config.eval.paper_threshold, cam_thresholds=thresholds,
                              iou_thresholds=config.eval.iou_thresholds)
  correct1 = correct5 = count = 0
  per_image: list[list] | None = [] if config.report.enabled and "paper" in protocols else None

  batches = train_data.eval_batches(config, process_index=jax.process_index(), process_count=jax.process_count())
  from tqdm import tqdm

  bar = tqdm(batches, desc="eval", unit="batch", total=num_eval_batches(batches),
             disable=jax.process_index() != 0 or not config.training.progress_bar)
  for batch in bar:
    if pxap is None and "mask" in batch and "wsol" in protocols:
      # Created on every process from the first batch (padded or not), so all take part in the merge.
      pxap = localization.PxapAccumulator(thresholds)
    images = jax.make_array_from_process_local_data(batch_sharding, np.asarray(batch["image"], np.float32))
    labels = jax.make_array_from_process_local_data(batch_sharding, np.asarray(batch["label"], np.int32))
    _, ids, maps = (_local(x, mesh) for x in fn(state["params"], state["batch_stats"], state["other"], images, labels))
    valid = np.asarray(batch["valid"], bool)
    if not valid.any():
      continue
    ids, maps = ids[valid], maps[valid]
    label = np.asarray(batch["label"])[valid]
    count += int(valid.sum())
    correct1 += int((ids[:, 0] == label).sum())
    correct5 += int((ids[:, :min(5, top_k)] == label[:, None]).any(axis=1).sum())
    if not protocols:
      continue
    nb = np.asarray(batch["num_boxes"])[valid]
    boxes = [np.asarray(b[:n]).round().astype(np.int64) for b, n in zip(np.asarray(batch["boxes"])[valid], nb)]
    if paper is not None:
      paper.add(maps[:, :top_k], ids[:, :top_k], [int(v) for v in label], boxes, gt_known_cams=maps[:, top_k])
    if per_image is not None:
      per_image.extend(_image_rows(np.asarray(batch["index"])[valid], label, ids[:, 0], maps[:, top_k], boxes,
                                   config.eval.paper_threshold))
    gt_maps = min_max(maps[:, top_k], dtype=np.float32)
    if wsol is not None:
      wsol.add(gt_maps, boxes, top1_correct=ids[:, 0] == label)
    masks = np.asarray(batch["mask"])[valid] > 0 if "mask" in batch else None
    if pxap is not None:
      ignore = None if ignore_regions is None else ignore_regions(np.asarray(batch["index"])[valid])
      pxap.add(gt_maps, masks, ignore)
    if baseline is not None:
      baseline.add(maps.shape[-2:], ids, [int(v) for v in label], boxes, masks)

  totals = sharding.gather_json([correct1, correct5, count])
  correct1, correct5, count = (int(sum(t[i] for t in totals)) for i in range(3))
  if count == 0:
    raise UserError(f"the eval split {config.data.eval_split!r} gave no valid example; check --config.data.eval_split "
                    "and --config.eval.max_examples")
  results: dict[str, Any] = {
      "step": int(model_state.step), "num_images": count,
      "classification": {"top1_acc": 100.0 * correct1 / count, "top5_acc": 100.0 * correct5 / count},
  }
  for name, acc in (("paper", paper), ("wsol", wsol), ("pxap", pxap)):
    if acc is not None:
      _merge_across_processes(acc)
      results[name] = acc.result()
  if wsol is not None:
    wsol.close()
  if baseline is not None:
    results["baseline"] = {}
    for name, acc in baseline.accumulators().items():
      _merge_across_processes(acc)
      results["baseline"][name] = acc.result()
    baseline.wsol.close()
  if per_image is not None:
    results["report"] = report_data(sum(sharding.gather_json(per_image), []), wsol, pxap)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, RESULTS_FILE), "w") as f:
      json.dump({k: v for k, v in results.items() if k != "report"}, f, indent=2, default=float)
    with MetricsWriter(workdir) as writer:
      writer.write(model_state.step, _flatten({k: v for k, v in results.items() if k != "report"}), split="eval")
  return results


def _image_rows(indices: np.ndarray, labels: np.ndarray, top1: np.ndarray, gt_maps: np.ndarray,
                boxes: list[np.ndarray], threshold: float) -> list[list]:
  """[eval index, label, top-1 class, IoU of the true class's paper-protocol box] per image, for the report."""
  from camjax import localization

  rows = []
  for index, label, pred, cam_map, gt in zip(indices, labels, top1, gt_maps, boxes):
    box = localization.boxes_from_cam(cam_map, threshold, protocol="paper")
    best = float(localization.iou(box, gt).max()) if len(box) and len(gt) else 0.0
    rows.append([int(index), int(label), int(pred), best])
  return rows


def report_data(rows: list[list], wsol: Any, pxap: Any, *, extremes: int = 6) -> dict[str, Any]:
  """What the report draws beyond the scores: per-class table, best/worst images, BoxAcc and PR curves.

  ``rows`` are every process's ``_image_rows``; the IoU is the paper protocol's GT-known box (IoU >= 0.5 counts).
  """
  per_class: dict[int, dict[str, float]] = {}
  for _, label, pred, best in rows:
    row = per_class.setdefault(label, {"images": 0, "top1": 0.0, "gt_known_loc": 0.0})
    row["images"] += 1
    row["top1"] += pred == label
    row["gt_known_loc"] += best >= 0.5
  for row in per_class.values():
    row["top1"] = 100.0 * row["top1"] / row["images"]
    row["gt_known_loc"] = 100.0 * row["gt_known_loc"] / row["images"]
  ranked = sorted(rows, key=lambda r: (-r[3], r[0]))
  data: dict[str, Any] = {
      "per_class": {str(k): per_class[k] for k in sorted(per_class)},
      "best": [{"index": r[0], "label": r[1], "top1": r[2], "iou": r[3]} for r in ranked[:extremes]],
      "worst": [{"index": r[0], "label": r[1], "top1": r[2], "iou": r[3]} for r in ranked[::-1][:extremes]],
  }
  if wsol is not None:
    data["cam_thresholds"] = [float(t) for t in wsol.cam_thresholds]
    curve = wsol.curve(multi_contour=True)
    data["box_acc"] = {str(t): curve[k].tolist() for k, t in enumerate(wsol.iou_thresholds)}
  if pxap is not None:
    from camjax.localization import pixel_precision_recall

    precision, recall, keep = pixel_precision_recall(pxap.fg_hist, pxap.bg_hist)
    data["pxap_pr"] = {"precision": precision[keep].tolist(), "recall": recall[keep].tolist()}
  return data


def _flatten(results: dict) -> dict:
  """Numeric leaves of the nested results as ``a/b/c`` keys for ``metrics.jsonl`` (steps, lists, strings dropped)."""
  flat = traverse_util.flatten_dict(results)  # tuple keys (not sep='/'): the 'step' test sees the key itself
  return {"/".join(map(str, path)): value for path, value in flat.items()
          if isinstance(value, (int, float)) and path[-1] not in ("step",)}
