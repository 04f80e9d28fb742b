"""WSOL evaluation standard (Choe et al., CVPR 2020): BoxAcc curves, MaxBoxAcc(V2), PxAP.

Everything is a count that can be summed: ``WsolAccumulator`` and ``PxapAccumulator`` take
batches, so a 50,000-image split never sits in memory, and their ``state()`` dicts add up
across processes (``merge`` / ``load_state``). The one-shot functions are thin wrappers.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
from typing import Any, Sequence

import numpy as np

from camjax.errors import UserError
from camjax.localization import _checks
from camjax.localization.boxes import quantize
from camjax.localization.sweep import LevelTable, best_iou_batch

DEFAULT_CAM_THRESHOLDS = np.arange(0, 1, 0.01)
DEFAULT_IOU_THRESHOLDS = (30, 50, 70)


def _modes(multi_contour: bool | str) -> tuple[bool, ...]:
  if multi_contour == "both":
    return (True, False)
  if isinstance(multi_contour, (bool, np.bool_)):
    return (bool(multi_contour),)
  raise UserError(f"multi_contour must be True, False or 'both'; got {multi_contour!r}")


def _count_chunk(maps: np.ndarray, boxes: Sequence[np.ndarray], table: LevelTable,
                 iou_fractions: np.ndarray, modes: tuple[bool, ...],
                 top1: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
  """Correct counts (modes, IoU thresholds, CAM thresholds), and the same for top-1-correct images."""
  q = maps if maps.dtype == np.uint8 else quantize(maps)
  best = best_iou_batch(q, list(boxes), table, modes)  # (N, modes, T)
  hit = best[:, :, None, :] >= iou_fractions[None, None, :, None]
  correct = hit.sum(axis=0, dtype=np.int64)
  correct_top1 = hit[top1].sum(axis=0, dtype=np.int64) if top1 is not None else np.zeros_like(correct)
  return correct, correct_top1


def _pool_context():
  """fork is cheapest but unsafe once JAX has started its threads; then use forkserver."""
  methods = multiprocessing.get_all_start_methods()
  if "jax" not in sys.modules and "fork" in methods:
    return multiprocessing.get_context("fork")
  return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _resolve_workers(num_workers: int | None) -> int:
  if num_workers is None or num_workers <= 0:
    return os.cpu_count() or 1
  return int(num_workers)


class WsolAccumulator:
  """Streaming BoxAcc counts over CAM thresholds x IoU thresholds (WSOL standard, GT-known).

  Args:
    cam_thresholds: CAM thresholds tau (default 0, 0.01, ..., 0.99).
    iou_thresholds: IoU thresholds delta in percent (default 30, 50, 70).
    multi_contour: True (all borders: MaxBoxAccV2), False (largest border: MaxBoxAcc v1), or
      "both" (both from the same contour pass).
    num_workers: processes used inside ``add`` (1: in-process; None or 0: every core);
      results are identical either way. ``chunk_size`` maps are scored together (and go to
      a worker at a time).

  Usage: ``add(scoremaps, gt_boxes, top1_correct=None)`` per batch; ``result()`` at the end
  (keys as ``max_box_acc``, plus "top1_loc@<delta>" when ``top1_correct`` was given: top-1
  localization at the CAM threshold that maximizes GT-known BoxAcc for that delta);
  ``curve()`` gives BoxAcc in percent. Across processes: sum ``state()`` dicts key by key,
  then ``load_state``; or ``merge`` accumulators. ``close()`` stops the worker processes.
  """

  def __init__(self, cam_thresholds: Any = DEFAULT_CAM_THRESHOLDS,
               iou_thresholds: Sequence[int] = DEFAULT_IOU_THRESHOLDS,
               multi_contour: bool | str = True, *, num_workers: int | None = 1, chunk_size: int = 32):
    self.cam_thresholds = _checks.as_thresholds(cam_thresholds, name="cam_thresholds")
    self._levels = LevelTable(self.cam_thresholds)  # levels per map maximum, kept across batches
    self.iou_thresholds = tuple(int(t) if float(t).is_integer() else float(t) for t in iou_thresholds)
    if not self.iou_thresholds:
      raise UserError("iou_thresholds must list at least one IoU threshold in percent, e.g. (30, 50, 70)")
    self._iou_fractions = np.array([t / 100 for t in self.iou_thresholds], np.float64)
    self.multi_contour = multi_contour
    self._modes = _modes(multi_contour)
    self.num_workers = _resolve_workers(num_workers)
    self.chunk_size = max(1, int(chunk_size))
    shape = (len(self._modes), len(self.iou_thresholds), len(self.cam_thresholds))
    self.correct = np.zeros(shape, np.int64)
    self.correct_top1 = np.zeros(shape, np.int64)
    self.num_images = 0
    self.num_top1 = 0
    self._pool: concurrent.futures.ProcessPoolExecutor | None = None

  def add(self, scoremaps: Any, gt_boxes: Sequence[Any], top1_correct: Any = None) -> None:
    """Score a batch.

    scoremaps: float (N, H, W) in [0, 1] (224 x 224 under the standard), ground-truth class maps.
    gt_boxes: N int arrays (M_i, 4), inclusive (x0, y0, x1, y1) in map pixels, M_i >= 1.
    top1_correct: optional bool (N,): whether the top-1 class was right (top-1 localization).
    """
    maps = _checks.as_map_stack(scoremaps, unit_range=True, offset=self.num_images)
    n, height, width = maps.shape
    boxes = _checks.as_box_list(gt_boxes, count=n, height=height, width=width, offset=self.num_images)
    top1 = None
    if top1_correct is not None:
      top1 = np.asarray(top1_correct, bool).reshape(-1)
      if top1.shape[0] != n:
        raise UserError(f"top1_correct has {top1.shape[0]} entries for {n} score maps")
    # A chunk's boxes are scored together, so its size also bounds the memory in use.
    size = self.chunk_size
    parallel = self.num_workers > 1 and n > size
    if parallel:
      maps = quantize(maps)  # workers get the uint8 levels: 8x less to send
    chunks = [(maps[s:s + size], boxes[s:s + size], self._levels, self._iou_fractions, self._modes,
               None if top1 is None else top1[s:s + size]) for s in range(0, n, size)]
    if parallel:
      if self._pool is None:
        self._pool = concurrent.futures.ProcessPoolExecutor(self.num_workers, mp_context=_pool_context())
      results = [f.result() for f in [self._pool.submit(_count_chunk, *chunk) for chunk in chunks]]
    else:
      results = [_count_chunk(*chunk) for chunk in chunks]
    for correct, correct_top1 in results:
      self.correct += correct
      self.correct_top1 += correct_top1
    self.num_images += n
    if top1 is not None:
      self.num_top1 += n

  def _adopt_pool(self, other: "WsolAccumulator") -> "WsolAccumulator":
    """Reuse another accumulator's running worker processes (saves their start-up)."""
    self._pool, other._pool = other._pool, None
    return self

  def close(self) -> None:
    """Stop the worker processes (also done when the accumulator is garbage collected)."""
    if self._pool is not None:
      self._pool.shutdown()
      self._pool = None

  def __del__(self):
    try:
      self.close()
    except Exception:  # interpreter shutdown
      pass

  def state(self) -> dict[str, np.ndarray]:
    """Plain counts; add the same keys across processes, then ``load_state``."""
    return {"correct": self.correct.copy(), "correct_top1": self.correct_top1.copy(),
            "num_images": np.array(self.num_images, np.int64), "num_top1": np.array(self.num_top1, np.int64)}

  def load_state(self, state: dict[str, Any]) -> "WsolAccumulator":
    correct = np.asarray(state["correct"], np.int64)
    if correct.shape != self.correct.shape:
      raise ValueError(f"state counts have shape {correct.shape}; this accumulator expects {self.correct.shape}")
    self.correct = correct.copy()
    self.correct_top1 = np.asarray(state["correct_top1"], np.int64).copy()
    self.num_images = int(state["num_images"])
    self.num_top1 = int(state["num_top1"])
    return self

  def merge(self, other: "WsolAccumulator") -> "WsolAccumulator":
    """Add another accumulator's counts (same thresholds and mode)."""
    if (other.correct.shape != self.correct.shape or not np.array_equal(other.cam_thresholds, self.cam_thresholds)
        or other.iou_thresholds != self.iou_thresholds or other._modes != self._modes):
      raise ValueError("cannot merge WsolAccumulators with different thresholds or multi_contour")
    self.correct += other.correct
    self.correct_top1 += other.correct_top1
    self.num_images += other.num_images
    self.num_top1 += other.num_top1
    return self

  def curve(self, multi_contour: bool | None = None) -> np.ndarray:
    """BoxAcc in percent, (len(iou_thresholds), len(cam_thresholds))."""
    if self.num_images == 0:
      raise ValueError("no images were added; call add() before curve()/result()")
    m = 0 if multi_contour is None else self._modes.index(bool(multi_contour))
    return self.correct[m] * 100.0 / self.num_images

  def result(self) -> dict[str, Any]:
    """Scores; keys documented in ``max_box_acc``."""
    out: dict[str, Any] = {"num_images": self.num_images}
    for multi in self._modes:
      curve = self.curve(multi)
      best = curve.argmax(axis=1)
      prefix = "" if multi == self._modes[0] else "v1/"
      for k, t in enumerate(self.iou_thresholds):
        out[f"{prefix}MaxBoxAcc@{t}"] = float(curve[k, best[k]])
        out[f"{prefix}best_threshold@{t}"] = float(self.cam_thresholds[best[k]])
      if multi and set(DEFAULT_IOU_THRESHOLDS) <= set(self.iou_thresholds):
        out["MaxBoxAccV2"] = float(np.mean([out[f"MaxBoxAcc@{t}"] for t in DEFAULT_IOU_THRESHOLDS]))
      if not multi and 50 in self.iou_thresholds:
        out["MaxBoxAcc"] = float(out[f"{prefix}MaxBoxAcc@50"])
      if self.num_top1 and multi == self._modes[0]:
        top1_curve = self.correct_top1[self._modes.index(multi)] * 100.0 / self.num_top1
        for k, t in enumerate(self.iou_thresholds):
          out[f"top1_loc@{t}"] = float(top1_curve[k, best[k]])
    return out


def box_accuracy_curve(scoremaps: Any, gt_boxes: Sequence[Any], cam_thresholds: Any = DEFAULT_CAM_THRESHOLDS,
                       iou_thresholds: Sequence[int] = DEFAULT_IOU_THRESHOLDS, multi_contour: bool = True, *,
                       num_workers: int | None = 1) -> np.ndarray:
  """BoxAcc(tau, delta) in percent, shape (len(iou_thresholds), len(cam_thresholds))."""
  acc = WsolAccumulator(cam_thresholds, iou_thresholds, bool(multi_contour), num_workers=num_workers)
  try:
    acc.add(scoremaps, gt_boxes)
  finally:
    acc.close()
  return acc.curve()


def max_box_acc(scoremaps: Any, gt_boxes: Sequence[Any], cam_thresholds: Any = DEFAULT_CAM_THRESHOLDS,
                iou_thresholds: Sequence[int] = DEFAULT_IOU_THRESHOLDS, multi_contour: bool | str = True, *,
                num_workers: int | None = 1) -> dict[str, Any]:
  """MaxBoxAcc per IoU threshold and the CAM threshold reaching it.

  Keys: "MaxBoxAcc@<delta>" and "best_threshold@<delta>" per IoU threshold, "num_images";
  "MaxBoxAccV2" (mean over 30/50/70) in multi-contour mode; "MaxBoxAcc" (version 1 =
  MaxBoxAcc@50 in single-contour mode) when ``multi_contour=False``. With
  ``multi_contour="both"`` one pass gives both: the multi-contour keys as above plus
  "MaxBoxAcc" and the single-contour ones prefixed "v1/".
  """
  acc = WsolAccumulator(cam_thresholds, iou_thresholds, multi_contour, num_workers=num_workers)
  try:
    acc.add(scoremaps, gt_boxes)
  finally:
    acc.close()
  return acc.result()


class PxapAccumulator:
  """Pooled foreground/background score histograms for PxAP (``docs/protocol.md``, PxAP).

  Bin edges are ``[*cam_thresholds, 1, 2, 3]``; ``add`` takes the maps with boolean
  foreground masks (union of instances, already at map size) and optional ignore masks.
  """

  def __init__(self, cam_thresholds: Any = DEFAULT_CAM_THRESHOLDS):
    self.cam_thresholds = _checks.as_thresholds(cam_thresholds, name="cam_thresholds")
    self.edges = np.append(self.cam_thresholds, [1.0, 2.0, 3.0])
    if (np.diff(self.edges) <= 0).any():
      raise UserError("cam_thresholds must increase strictly and stay below 1")
    self.fg_hist = np.zeros(len(self.edges) - 1, np.int64)
    self.bg_hist = np.zeros(len(self.edges) - 1, np.int64)
    self.num_images = 0

  def add(self, scoremaps: Any, gt_masks: Any, ignore_masks: Any = None) -> None:
    """scoremaps float (N, H, W) in [0, 1]; gt_masks bool (N, H, W); ignore_masks bool (N, H, W) or None."""
    maps = _checks.as_map_stack(scoremaps, unit_range=True, offset=self.num_images)
    # An image without foreground adds background pixels only: the histograms are pooled over
    # the split (as the standard's code does), so only a split with no foreground at all fails.
    fg = self._mask(gt_masks, maps.shape, "gt_masks")
    valid = np.ones_like(fg)
    if ignore_masks is not None:
      valid = ~(self._mask(ignore_masks, maps.shape, "ignore_masks") & ~fg)
    self.fg_hist += np.histogram(maps[fg], bins=self.edges)[0]
    self.bg_hist += np.histogram(maps[~fg & valid], bins=self.edges)[0]
    self.num_images += len(maps)

  def _mask(self, masks: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(masks)
    if arr.shape != shape:
      raise UserError(f"{name} must have the score maps' shape {shape}; got {arr.shape}")
    if arr.dtype != bool:
      if not (np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (0, 1)).all()):
        raise UserError(f"{name} must be boolean (or 0/1 integers); got {arr.dtype} "
                        "(threshold resized masks at 0.5 first)")
      arr = arr.astype(bool)
    return arr

  def state(self) -> dict[str, np.ndarray]:
    return {"fg_hist": self.fg_hist.copy(), "bg_hist": self.bg_hist.copy(), "num_images": np.array(self.num_images)}

  def load_state(self, state: dict[str, Any]) -> "PxapAccumulator":
    self.fg_hist = np.asarray(state["fg_hist"], np.int64).copy()
    self.bg_hist = np.asarray(state["bg_hist"], np.int64).copy()
    self.num_images = int(state["num_images"])
    return self

  def merge(self, other: "PxapAccumulator") -> "PxapAccumulator":
    if not np.array_equal(self.edges, other.edges):
      raise ValueError("cannot merge PxapAccumulators with different cam_thresholds")
    self.fg_hist += other.fg_hist
    self.bg_hist += other.bg_hist
    self.num_images += other.num_images
    return self

  def result(self) -> dict[str, Any]:
    """{"PxAP": float, "num_images": int}; a UserError when no image had a foreground pixel."""
    if self.num_images == 0:
      raise ValueError("no images were added; call add() before result()")
    if not self.fg_hist.sum():
      raise UserError(f"PxAP is undefined: none of the {self.num_images} images has a foreground pixel "
                      "(every ground-truth mask is empty); check the masks, e.g. their paths and threshold")
    return {"PxAP": pxap_from_histograms(self.fg_hist, self.bg_hist), "num_images": self.num_images}


def pixel_precision_recall(fg_hist: np.ndarray, bg_hist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(precision, recall, kept) of the pooled pixel histograms, walked from the top bin down.

  ``kept`` is False where no pixel is above the bin (tp + fp == 0): precision is undefined there.
  """
  fg_hist = np.asarray(fg_hist, np.float64)
  bg_hist = np.asarray(bg_hist, np.float64)
  num_fg = fg_hist.sum()
  if num_fg <= 0:
    raise UserError("PxAP is undefined: no foreground pixel in the evaluated set (every ground-truth mask "
                    "is empty); check the masks")
  tp = fg_hist[::-1].cumsum()
  fp = bg_hist[::-1].cumsum()
  keep = (tp + fp) != 0
  with np.errstate(invalid="ignore", divide="ignore"):
    precision = tp / (tp + fp)
  return precision, tp / num_fg, keep


def pxap_from_histograms(fg_hist: np.ndarray, bg_hist: np.ndarray) -> float:
  """AP of the pixel precision-recall curve walked from the top bin down; leaves out tp + fp == 0."""
  precision, recall, keep = pixel_precision_recall(fg_hist, bg_hist)
  return float(100.0 * (precision[1:] * np.diff(recall))[keep[1:]].sum())


def pxap(scoremaps: Any, gt_masks: Any, ignore_masks: Any = None,
         cam_thresholds: Any = DEFAULT_CAM_THRESHOLDS) -> float:
  """PxAP in percent over the whole set (histograms pooled, not averaged per image)."""
  acc = PxapAccumulator(cam_thresholds)
  acc.add(scoremaps, gt_masks, ignore_masks)
  return acc.result()["PxAP"]
