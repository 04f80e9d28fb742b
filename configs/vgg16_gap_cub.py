"""VGG16-GAP fine-tuned on CUB-200-2011.

  python -m camjax.main --config=configs/vgg16_gap_cub.py --workdir=runs/vgg16_gap_cub

From ImageNet weights without the classifier: --config.pretrained.path=<.pth or camjax workdir>.
CUB must be downloaded by hand: --config.data.manual_dir=<dir with CUB_200_2011.tgz>.
"""

from configs import cub_base


def get_config():
  c = cub_base.get_config()
  c.model.name = "vgg16_gap"
  return c
