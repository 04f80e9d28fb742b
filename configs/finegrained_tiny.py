"""Fine-grained pipeline (paper Sec. 4.1) in seconds: tiny built-in data set, tiny network. Used by tests.

  python -m camjax.features --config=configs/finegrained_tiny.py --workdir=/tmp/camjax_finegrained_tiny
"""

import ml_collections

from configs import default


def features_section(**overrides) -> ml_collections.ConfigDict:
  """The ``features`` section shared by every fine-grained config."""
  f = ml_collections.ConfigDict()
  f.train_split = "train"
  f.val_split = "validation"  # '' = choose C on a seeded hold-out of train
  f.test_split = "test"
  f.max_examples = 0  # per split, 0 = all (a quick look: a few hundred)
  f.batch_size = 64  # global batch of the feature passes
  f.classifier = "svm"  # svm (one-vs-rest squared hinge) | softmax
  f.C_grid = (0.01, 0.1, 1.0, 10.0)
  f.holdout_fraction = 0.2
  f.max_iter = 500  # L-BFGS iterations per fit
  f.seed = 0
  f.cam_threshold = 0.2  # fraction of the map's max (paper protocol)
  f.train_cam_class = "true"  # CAM of the true class on training images | "predicted"
  f.rows = ("full", "cam_crop", "gt_crop")
  f.save_features = True
  f.progress_bar = True
  f.update(overrides)
  return f


def get_config():
  c = default.get_config()
  c.model.name = "small_gap"
  c.model.num_classes = 12
  with c.unlocked():
    c.model.overrides.widths = (4, 8)
    c.model.overrides.blocks_per_stage = 1
    c.backbone_workdir = ""  # a camjax training workdir; '' = fresh initialisation (said loudly)
    c.features = features_section(batch_size=64, progress_bar=False)
  c.data.name = "camjax_shapes"
  c.data.builder_config = "tiny"
  c.data.image_size = 32
  c.data.max_boxes = 2
  c.data.mean = (127.5, 127.5, 127.5)
  c.data.std = (64.0, 64.0, 64.0)
  c.eval.batch_size = 64
  return c
