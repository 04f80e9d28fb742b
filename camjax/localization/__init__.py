"""Host-side localization evaluator: boxes, IoU and scores under both published protocols.

Pure NumPy/SciPy plus OpenCV's contour finder (which defines the WSOL standard); it never
imports JAX, so it scores maps produced by any framework. Metric definitions:
``docs/protocol.md``.

WSOL standard (Choe et al. 2020): ``box_accuracy_curve``, ``max_box_acc``, ``pxap`` and the
streaming ``WsolAccumulator`` / ``PxapAccumulator``. CAM paper (Zhou et al. 2016):
``paper_localization``, ``paper_heuristic_localization`` and ``PaperAccumulator``.

What goes in: ``metadata`` (the one reader of the standard's split files), ``maps``
(``min_max`` and the host resizer ``resize_map``, shared with the eval loop and the figures)
and ``saved_maps`` (scoring maps saved by any framework; ``camjax.evaluate`` is its command).
"""

from camjax.localization.boxes import boxes_from_cam, iou, paper_box, quantize, wsol_boxes_at_level
from camjax.localization.maps import min_max, resize_map
from camjax.localization.paper import (PaperAccumulator, heuristic_boxes, paper_heuristic_localization,
                                       paper_localization)
from camjax.localization.wsol import (DEFAULT_CAM_THRESHOLDS, DEFAULT_IOU_THRESHOLDS, PxapAccumulator, WsolAccumulator,
                                      box_accuracy_curve, max_box_acc, pixel_precision_recall, pxap,
                                      pxap_from_histograms)

__all__ = [
    "DEFAULT_CAM_THRESHOLDS", "DEFAULT_IOU_THRESHOLDS", "PaperAccumulator", "PxapAccumulator", "WsolAccumulator",
    "box_accuracy_curve", "boxes_from_cam", "heuristic_boxes", "iou", "max_box_acc", "min_max", "paper_box",
    "paper_heuristic_localization", "paper_localization", "pixel_precision_recall", "pxap", "pxap_from_histograms",
    "quantize", "resize_map", "wsol_boxes_at_level",
]
