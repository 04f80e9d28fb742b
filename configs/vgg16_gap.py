"""VGG16-GAP on ILSVRC 2012.

  python -m camjax.main --config=configs/vgg16_gap.py --workdir=runs/vgg16_gap

Fine-tuning as in Zhou et al. 2016; the shared settings, the pretrained weights and
the ILSVRC download: configs/ilsvrc_base.py.
"""

from configs import ilsvrc_base


def get_config():
  c = ilsvrc_base.get_config()
  c.model.name = "vgg16_gap"
  return c
