"""A test fixture: a few seconds of training on synthetic data, used by the tests of the training loop.

  python -m camjax.main --config=tests/tiny_config.py --workdir=/tmp/camjax_tiny
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.name = "small_gap"
  c.model.num_classes = 4
  with c.unlocked():
    c.model.overrides.widths = (4, 8)
    c.model.overrides.blocks_per_stage = 1
  c.data.name = "synthetic"
  c.data.image_size = 16
  c.data.max_boxes = 2
  c.data.mean = (0.0, 0.0, 0.0)
  c.data.std = (1.0, 1.0, 1.0)
  c.optimizer.lr = 0.05
  c.optimizer.schedule = "step"
  c.optimizer.boundaries = (0.5,)
  c.optimizer.new_layer_lr_mult = 2.0
  c.training.global_batch_size = 8
  c.training.num_steps = 6
  c.training.log_every = 1
  c.training.checkpoint_every = 2
  c.training.keep_checkpoints = 10
  c.training.progress_bar = False
  c.eval.batch_size = 8
  c.eval.max_examples = 16
  c.eval.wsol_threshold_step = 0.05
  return c
