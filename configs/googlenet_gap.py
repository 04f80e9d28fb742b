"""GoogLeNet-GAP (the CAM paper's main network) on ILSVRC 2012.

  python -m camjax.main --config=configs/googlenet_gap.py --workdir=runs/googlenet_gap

Fine-tuning as in Zhou et al. 2016; the shared settings, the pretrained weights and
the ILSVRC download: configs/ilsvrc_base.py.
"""

from configs import ilsvrc_base


def get_config():
  c = ilsvrc_base.get_config()
  c.model.name = "googlenet_gap"
  return c
