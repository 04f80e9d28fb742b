"""Baseline: the original GoogLeNet head (pool, linear) on ILSVRC 2012.

  python -m camjax.main --config=configs/googlenet.py --workdir=runs/googlenet

The backprop / Grad-CAM baseline of the paper's tables; no layer is new.
ILSVRC must be downloaded by hand: --config.data.manual_dir=<dir with the tars>.
"""

from configs import ilsvrc_base


def get_config():
  c = ilsvrc_base.get_config()
  c.model.name = "googlenet"
  c.optimizer.new_layer_patterns = ()
  return c
