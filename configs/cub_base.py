"""Shared settings of the CUB-200-2011 experiments (run a named config, e.g. googlenet_gap_cub).

  python -m camjax.main --config=configs/googlenet_gap_cub.py --workdir=runs/googlenet_gap_cub
"""

from configs import ilsvrc_base


def get_config():
  c = ilsvrc_base.get_config()
  c.model.num_classes = 200
  c.data.name = "cub200_2011"
  c.data.eval_split = "test"
  c.training.global_batch_size = 64
  c.training.num_epochs = 50.0
  c.training.log_every = 20
  c.training.checkpoint_every = 500
  c.eval.batch_size = 64
  c.pretrained.skip = ("head/.*",)  # the 1000-class classifier does not fit 200 classes
  return c
