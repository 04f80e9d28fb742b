"""Shared settings of the ILSVRC 2012 experiments (run a named config instead, e.g. googlenet_gap).

  python -m camjax.main --config=configs/googlenet_gap.py --workdir=runs/googlenet_gap
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.num_classes = 1000
  c.data.name = "ilsvrc2012_loc"
  c.data.image_size = 224
  c.data.eval_mode = "resize"
  c.optimizer.name = "sgd"
  c.optimizer.lr = 0.001
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.schedule = "step"
  c.optimizer.boundaries = (0.5, 0.75)
  c.optimizer.decay_factor = 0.1
  c.optimizer.new_layer_patterns = ("cam_conv/.*", "head/.*")
  c.optimizer.new_layer_lr_mult = 10.0
  c.training.global_batch_size = 256
  c.training.num_epochs = 20.0
  c.training.log_every = 100
  c.training.checkpoint_every = 2000
  c.eval.batch_size = 200
  return c
