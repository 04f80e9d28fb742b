"""Quickstart: a small GAP network on the built-in camjax_shapes data set (64 px, 12 classes).

  python -m camjax.main --config=configs/quickstart.py --workdir=runs/quickstart

Builds the data set on first use (no download), trains on a laptop CPU in
minutes, then scores both localization protocols and writes the results to
the workdir. Everything can be overridden, e.g. --config.training.num_steps=500.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.mode = "train_and_eval"
  c.model.name = "small_gap"
  c.model.num_classes = 12
  with c.unlocked():
    c.model.overrides.widths = (16, 32, 64, 160)
    c.model.overrides.blocks_per_stage = (1, 2, 2, 3)
    c.model.overrides.last_batch_norm = False
  c.data.name = "camjax_shapes"
  c.data.builder_config = "px64"
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 64
  c.data.max_boxes = 4
  # Flips only: crops that cut the object cost more than they bring in a 7-minute schedule.
  c.data.augment.scale = (1.0, 1.0)
  c.data.augment.ratio = (1.0, 1.0)
  c.data.mean = (0.5, 0.5, 0.5)
  c.data.std = (0.25, 0.25, 0.25)
  c.optimizer.name = "adamw"
  c.optimizer.lr = 0.003
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 100
  c.optimizer.new_layer_lr_mult = 1.0
  c.training.global_batch_size = 64
  c.training.num_steps = 1500
  c.training.log_every = 50
  c.training.checkpoint_every = 500
  c.eval.batch_size = 100
  c.eval.max_examples = 0  # the whole test split
  c.eval.baseline = True
  c.report.enabled = True
  return c
