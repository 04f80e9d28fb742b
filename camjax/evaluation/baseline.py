"""The centre baseline: what localization scores look like with no image evidence at all.

Paper protocol: one box of the mean ground-truth size at the image centre, for
every class. WSOL protocol and PxAP: a centred Gaussian map whose spread follows
the mean box, so each CAM threshold cuts a centred ellipse (the threshold sweep
then picks the best box size, as it does for real maps). Classification is the
model's own, so top-1 localization compares boxes, not classifiers.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from camjax import localization


def centre_box(size: tuple[int, int], fraction: tuple[float, float]) -> np.ndarray:
  """Inclusive (x0, y0, x1, y1) of a box covering ``fraction`` (w, h) of a (H, W) image, centred."""
  height, width = size
  w = int(np.clip(round(fraction[0] * width), 1, width))
  h = int(np.clip(round(fraction[1] * height), 1, height))
  x0, y0 = (width - w) // 2, (height - h) // 2
  return np.array([x0, y0, x0 + w - 1, y0 + h - 1], np.int64)


def box_map(size: tuple[int, int], box: np.ndarray) -> np.ndarray:
  """1 inside ``box``, 0 elsewhere: the paper protocol turns it back into exactly ``box``."""
  out = np.zeros(size, np.float32)
  x0, y0, x1, y1 = box
  out[y0:y1 + 1, x0:x1 + 1] = 1.0
  return out


def centre_gaussian(size: tuple[int, int], fraction: tuple[float, float]) -> np.ndarray:
  """A centred Gaussian in [0, 1] with standard deviations of half the mean box's sides."""
  height, width = size
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  sx = max(fraction[0] * width / 2, 0.5)
  sy = max(fraction[1] * height / 2, 0.5)
  g = np.exp(-0.5 * (((x - (width - 1) / 2) / sx) ** 2 + ((y - (height - 1) / 2) / sy) ** 2))
  return ((g - g.min()) / (g.max() - g.min())).astype(np.float32)


class CentreBaseline:
  """Streams the same batches as the evaluator and scores the centre baseline beside it."""

  def __init__(self, fraction: tuple[float, float], *, top_k: int, paper_threshold: float,
               cam_thresholds: np.ndarray, iou_thresholds: Sequence[int]):
    self.fraction = fraction
    self.top_k = top_k
    self.paper = localization.PaperAccumulator(paper_threshold)
    self.wsol = localization.WsolAccumulator(cam_thresholds, tuple(iou_thresholds), "both")
    self.pxap = localization.PxapAccumulator(cam_thresholds)
    self.has_masks = False
    self._maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

  def _for_size(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    if size not in self._maps:
      self._maps[size] = (box_map(size, centre_box(size, self.fraction)), centre_gaussian(size, self.fraction))
    return self._maps[size]

  def add(self, size: tuple[int, int], class_ids: np.ndarray, labels: Sequence[int], gt_boxes: Sequence[np.ndarray],
          masks: np.ndarray | None = None) -> None:
    """``class_ids`` (N, top_k) the model's ranking; ``gt_boxes`` inclusive pixel boxes per image."""
    n = len(labels)
    square, gaussian = self._for_size(size)
    topk_maps = np.broadcast_to(square, (n, self.top_k, *size))
    self.paper.add(topk_maps, class_ids[:, :self.top_k], list(labels), gt_boxes,
                   gt_known_cams=np.broadcast_to(square, (n, *size)))
    gaussians = np.broadcast_to(gaussian, (n, *size))
    self.wsol.add(gaussians, gt_boxes, top1_correct=class_ids[:, 0] == np.asarray(labels))
    if masks is not None:
      self.has_masks = True
      self.pxap.add(gaussians, masks)

  def accumulators(self) -> dict[str, Any]:
    out = {"paper": self.paper, "wsol": self.wsol}
    if self.has_masks:
      out["pxap"] = self.pxap
    return out
