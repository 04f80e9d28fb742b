"""Baseline: the original VGG16 (fully connected head) on ILSVRC 2012.

  python -m camjax.main --config=configs/vgg16.py --workdir=runs/vgg16

The backprop / Grad-CAM baseline of the paper's tables; no layer is new.
ILSVRC must be downloaded by hand: --config.data.manual_dir=<dir with the tars>.
"""

from configs import ilsvrc_base


def get_config():
  c = ilsvrc_base.get_config()
  c.model.name = "vgg16"
  c.optimizer.new_layer_patterns = ()
  return c
