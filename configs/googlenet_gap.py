"""GoogLeNet-GAP (the CAM paper's main network) on ILSVRC 2012.

  python -m camjax.main --config=configs/googlenet_gap.py --workdir=runs/googlenet_gap

Fine-tuning on ILSVRC 2012 (CLS-LOC) as in Zhou et al. 2016: SGD with momentum
0.9, weight decay 5e-4 on kernels, a step schedule, the layers added for CAM
(3x3 conv + classifier) at 10x the base learning rate. Start from ImageNet
weights with --config.pretrained.path=<torchvision .pth file or camjax workdir>.
ILSVRC must be downloaded by hand: --config.data.manual_dir=<dir with the tars>.
"""

from configs import ilsvrc_base


def get_config():
  c = ilsvrc_base.get_config()
  c.model.name = "googlenet_gap"
  return c
