"""GoogLeNet-GAP fine-tuned on CUB-200-2011 (fine-grained localization, paper Sec. 4).

  python -m camjax.main --config=configs/googlenet_gap_cub.py --workdir=runs/googlenet_gap_cub

From ImageNet weights without the classifier: --config.pretrained.path=<.pth or camjax workdir>.
CUB must be downloaded by hand: --config.data.manual_dir=<dir with CUB_200_2011.tgz>.
"""

from configs import cub_base


def get_config():
  c = cub_base.get_config()
  c.model.name = "googlenet_gap"
  return c
