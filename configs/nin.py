"""Network in Network (already ends in global average pooling) on ILSVRC 2012.

  python -m camjax.main --config=configs/nin.py --workdir=runs/nin

Fine-tuning on ILSVRC 2012 (CLS-LOC) as in Zhou et al. 2016: SGD with momentum
0.9, weight decay 5e-4 on kernels, a step schedule, no new layers
(NIN's class maps feed GAP directly). Start from ImageNet
weights with --config.pretrained.path=<torchvision .pth file or camjax workdir>.
ILSVRC must be downloaded by hand: --config.data.manual_dir=<dir with the tars>.
"""

from configs import ilsvrc_base


def get_config():
  c = ilsvrc_base.get_config()
  c.model.name = "nin"
  c.optimizer.new_layer_patterns = ()
  return c
