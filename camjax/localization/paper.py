"""The CAM paper's localization protocol (Zhou et al. 2016, Sec. 3.2 and Tbl. 3).

Maps are class activation maps already upsampled to the image (or evaluation) size by
the caller, one per predicted class in score order. Boxes come from ``paper_box``: pixels
above a fraction of the map's maximum, largest 8-connected component, tight box.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from camjax.errors import UserError
from camjax.localization import _checks
from camjax.localization.boxes import iou, paper_box

DEFAULT_HEURISTIC_THRESHOLDS = (20, 100, 110)


def _labels_per_box(label: Any, num_boxes: int, index: int) -> np.ndarray:
  """Per-box class labels: one int for all boxes of the image, or one per box."""
  arr = np.asarray(label)
  if not np.issubdtype(arr.dtype, np.integer):
    raise UserError(f"image {index}: ground-truth labels must be integers; got {arr.dtype}")
  if arr.ndim == 0:
    return np.full(num_boxes, int(arr), np.int64)
  arr = arr.reshape(-1)
  if arr.shape[0] != num_boxes:
    raise UserError(f"image {index}: {arr.shape[0]} box labels for {num_boxes} ground-truth boxes")
  return arr.astype(np.int64)


def _correct(box: np.ndarray | None, cls: int, gt_boxes: np.ndarray, gt_labels: np.ndarray,
             iou_threshold: float) -> bool:
  """Class is a ground-truth class and the box has IoU >= threshold with a box of that class."""
  if box is None or len(box) == 0:
    return False
  mine = gt_boxes[gt_labels == cls]
  return len(mine) > 0 and bool(iou(box.reshape(-1, 4), mine).max() >= iou_threshold)


def heuristic_boxes(cam: np.ndarray, thresholds: Sequence[float] = DEFAULT_HEURISTIC_THRESHOLDS,
                    scale: float = 255.0) -> tuple[np.ndarray | None, np.ndarray | None]:
  """(loose, tight) boxes of one map for the test-set heuristic (paper Tbl. 3).

  One box per threshold (``t / scale`` of the map's maximum, largest component). Loose is
  the largest box by area; the others are visited by decreasing area (ties in threshold
  order) and dropped when they overlap a kept larger box by more than half of that larger
  box's area; tight is the second kept box, or the loose one when none is left.
  """
  boxes = [b[0] for b in (paper_box(cam, t / scale) for t in thresholds) if len(b)]
  if not boxes:
    return None, None
  arr = np.array(boxes, np.int64)
  areas = (arr[:, 2] - arr[:, 0] + 1) * (arr[:, 3] - arr[:, 1] + 1)
  order = np.argsort(-areas, kind="stable")
  kept = [order[0]]
  for j in order[1:]:
    bx = arr[j]
    overlap = False
    for k in kept:
      kx = arr[k]
      iw = max(0, min(bx[2], kx[2]) - max(bx[0], kx[0]) + 1)
      ih = max(0, min(bx[3], kx[3]) - max(bx[1], kx[1]) + 1)
      if iw * ih > 0.5 * areas[k]:
        overlap = True
        break
    if not overlap:
      kept.append(j)
  loose = arr[kept[0]]
  tight = arr[kept[1]] if len(kept) > 1 else loose
  return loose, tight


class PaperAccumulator:
  """Streaming counts for the paper's protocol.

  Args:
    threshold: fraction of the map's maximum (0.2 in the paper).
    iou_threshold: 0.5 in the paper.
    heuristic: if True, guesses follow the test-set heuristic (top-3 classes, loose+tight
      boxes for classes 1-2, loose for class 3: five guesses scored as top-5; top-1 is the
      first guess) with ``heuristic_thresholds`` on a 0..255 scale of the max-normalized map.
  """

  _KEYS = ("num_images", "num_topk", "top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known_loc", "num_gt_known")

  def __init__(self, threshold: float = 0.2, iou_threshold: float = 0.5, *, heuristic: bool = False,
               heuristic_thresholds: Sequence[float] = DEFAULT_HEURISTIC_THRESHOLDS):
    self.threshold = float(threshold)
    self.iou_threshold = float(iou_threshold)
    self.heuristic = bool(heuristic)
    self.heuristic_thresholds = tuple(float(t) for t in heuristic_thresholds)
    self.counts = {k: 0 for k in self._KEYS}
    self.top_k = None

  def add(self, cams_topk: Any, topk_classes: Any, gt_labels: Sequence[Any], gt_boxes: Sequence[Any],
          gt_known_cams: Any = None) -> None:
    """Score a batch.

    cams_topk: float (N, K, H, W), the maps of the K top-scoring classes, best first (K >= 1;
      5 for top-5; >= 3 with ``heuristic``). May be None when only ``gt_known_cams`` is given.
    topk_classes: int (N, K) class ids in the same order (None with ``cams_topk=None``).
    gt_labels: N entries, each an int (all boxes of that class) or an int array (M_i,).
    gt_boxes: N int arrays (M_i, 4), inclusive (x0, y0, x1, y1) in map pixels.
    gt_known_cams: optional float (N, H, W), the map of the ground-truth class.
    """
    offset = self.counts["num_images"]
    if cams_topk is None and gt_known_cams is None:
      raise UserError("give cams_topk (with topk_classes) and/or gt_known_cams")
    cams = None
    if cams_topk is not None:
      cams = np.asarray(cams_topk)
      if cams.ndim != 4:
        raise UserError(f"cams_topk must have shape (N, K, H, W); got {cams.shape}")
      n, k, height, width = cams.shape
      if self.heuristic and k < 3:
        raise UserError(f"the test-set heuristic needs the top-3 classes' maps; got K={k}")
      classes = np.asarray(topk_classes)
      if classes.shape != (n, k) or not np.issubdtype(classes.dtype, np.integer):
        raise UserError(f"topk_classes must be integers of shape {(n, k)}; got {classes.dtype} {classes.shape}")
      for j in range(k):  # class by class, so a bad map is named by its image
        _checks.as_map_stack(cams[:, j], name="cams_topk", unit_range=False, offset=offset)
      if self.top_k is None:
        self.top_k = min(k, 5)
    known = None
    if gt_known_cams is not None:
      known = _checks.as_map_stack(gt_known_cams, name="gt_known_cams", unit_range=False, offset=offset)
      if cams is not None and known.shape != (cams.shape[0],) + cams.shape[2:]:
        raise UserError(f"gt_known_cams shape {known.shape} does not match cams_topk {cams.shape}")
      n, height, width = known.shape
    boxes = _checks.as_box_list(gt_boxes, count=n, height=height, width=width, offset=offset)
    if len(gt_labels) != n:
      raise UserError(f"gt_labels has {len(gt_labels)} entries for {n} images")
    for i in range(n):
      labels = _labels_per_box(gt_labels[i], len(boxes[i]), offset + i)
      if cams is not None:
        self._score_topk(cams[i], classes[i], boxes[i], labels)
        self.counts["num_topk"] += 1
      if known is not None:
        box = paper_box(known[i], self.threshold)
        self.counts["gt_known_loc"] += int(len(box) > 0 and iou(box, boxes[i]).max() >= self.iou_threshold)
        self.counts["num_gt_known"] += 1
    self.counts["num_images"] += n

  def _score_topk(self, cams: np.ndarray, classes: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> None:
    k5 = min(len(classes), 5)
    truth = set(labels.tolist())
    self.counts["top1_cls"] += int(int(classes[0]) in truth)
    self.counts["top5_cls"] += int(any(int(c) in truth for c in classes[:k5]))
    if self.heuristic:
      guesses = []
      for rank in range(3):
        loose, tight = heuristic_boxes(cams[rank], self.heuristic_thresholds)
        guesses.append((int(classes[rank]), loose))
        if rank < 2:
          guesses.append((int(classes[rank]), tight))
    else:
      guesses = [(int(classes[r]), paper_box(cams[r], self.threshold)) for r in range(k5)]
    hits = [_correct(b, c, boxes, labels, self.iou_threshold) for c, b in guesses]
    self.counts["top1_loc"] += int(hits[0])
    self.counts["top5_loc"] += int(any(hits))

  def state(self) -> dict[str, np.ndarray]:
    """Plain counts; add the same keys across processes, then ``load_state``."""
    return {k: np.array(v, np.int64) for k, v in self.counts.items()}

  def load_state(self, state: dict[str, Any]) -> "PaperAccumulator":
    self.counts = {k: int(state[k]) for k in self._KEYS}
    return self

  def merge(self, other: "PaperAccumulator") -> "PaperAccumulator":
    for k in self._KEYS:
      self.counts[k] += other.counts[k]
    self.top_k = self.top_k or other.top_k
    return self

  def result(self) -> dict[str, Any]:
    """Errors and accuracies in percent.

    Keys: "top1_loc_err", "top5_loc_err", "top1_cls_err", "top5_cls_err" (when top-k maps
    were given), "gt_known_loc_acc" (when ground-truth class maps were given), counts.
    """
    c = self.counts
    out: dict[str, Any] = {"num_images": c["num_images"]}
    n = c["num_images"]
    if n == 0:
      raise ValueError("no images were added; call add() before result()")
    if c["num_topk"]:
      for key in ("top1_cls", "top5_cls", "top1_loc", "top5_loc"):
        out[f"{key}_err"] = 100.0 - 100.0 * c[key] / c["num_topk"]
      if self.top_k is not None:
        out["top_k"] = self.top_k
    if c["num_gt_known"]:
      out["gt_known_loc_acc"] = 100.0 * c["gt_known_loc"] / c["num_gt_known"]
    return out


def paper_localization(cams_topk: Any, topk_classes: Any, gt_labels: Sequence[Any], gt_boxes: Sequence[Any], *,
                       gt_known_cams: Any = None, threshold: float = 0.2, iou_threshold: float = 0.5) -> dict[str, Any]:
  """Top-1/top-5 localization and classification errors, and GT-known localization accuracy."""
  acc = PaperAccumulator(threshold, iou_threshold)
  acc.add(cams_topk, topk_classes, gt_labels, gt_boxes, gt_known_cams)
  return acc.result()


def paper_heuristic_localization(cams_top3: Any, top3_classes: Any, gt_labels: Sequence[Any], gt_boxes: Sequence[Any],
                                 *, thresholds: Sequence[float] = DEFAULT_HEURISTIC_THRESHOLDS,
                                 iou_threshold: float = 0.5) -> dict[str, Any]:
  """The test-set heuristic of paper Tbl. 3: five guesses from the top-3 maps, scored as top-5."""
  acc = PaperAccumulator(iou_threshold=iou_threshold, heuristic=True, heuristic_thresholds=thresholds)
  acc.add(cams_top3, top3_classes, gt_labels, gt_boxes)
  return acc.result()
