"""Localizable generic features on the built-in data set (paper Sec. 4), backbone from the quickstart.

Train the quickstart first, then run the fine-grained pipeline (Tbl. 4 rows: full image,
crop to the CAM box, crop to the ground-truth box; localization rate; and the linear SVM
on GAP features next to the trained softmax head, all on the test split):

  python -m camjax.main --config=configs/quickstart.py --workdir=runs/quickstart --mode=train_and_eval
  python -m camjax.features --config=configs/finegrained_quickstart.py --workdir=runs/finegrained_quickstart

Pattern discovery with the same backbone (folders of images):

  python -m camjax.features discover --config=configs/finegrained_quickstart.py \
      --positives=DIR --negatives=DIR --output=runs/discovery
"""

from configs import quickstart
from configs.finegrained_tiny import features_section


def get_config():
  c = quickstart.get_config()
  with c.unlocked():
    c.backbone_workdir = "runs/quickstart"  # its config.json and newest checkpoint are used
    # C is chosen on the validation split; accuracies are on the test split.
    c.features = features_section(batch_size=128)
  return c
