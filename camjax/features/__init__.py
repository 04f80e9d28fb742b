"""Generic localizable deep features (Zhou et al. 2016, Sec. 4).

- ``extraction``: pooled (GAP) features of a split, every example once, to .npz.
- ``linear``: one-vs-rest linear SVM and softmax regression on those features
  (deterministic full-batch L-BFGS, C chosen on validation data), and
  ``LinearHeadModel``, which gives any fitted classifier CAMs through
  ``camjax.cam`` exactly like a trained head.
- ``finegrained``: Sec. 4.1, classify full images, CAM-box crops and
  ground-truth-box crops; the localization rate of the CAM boxes.
- ``discovery``: Sec. 4.2, a detector trained on folders of images, ranking and
  CAMs of the top-ranked images.

Command line: ``python -m camjax.features --config=configs/finegrained_quickstart.py --workdir=DIR``
and ``python -m camjax.features discover --positives DIR --negatives DIR --output DIR``.
"""

from camjax.features.extraction import FeatureSet, array_batches, extract_features
from camjax.features.linear import (LOSSES, LinearClassifier, LinearHeadModel, Selection, fit_linear,
                                    holdout_split, select_and_fit)

__all__ = [
    "FeatureSet", "LOSSES", "LinearClassifier", "LinearHeadModel", "Selection", "array_batches",
    "extract_features", "fit_linear", "holdout_split", "select_and_fit",
]
