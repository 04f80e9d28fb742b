"""GoogLeNet-GMP: the same network with global max pooling (paper ablation).

  python -m camjax.main --config=configs/googlenet_gmp.py --workdir=runs/googlenet_gmp

Fine-tuning as in Zhou et al. 2016; the shared settings, the pretrained weights and
the ILSVRC download: configs/ilsvrc_base.py.
"""

from configs import ilsvrc_base


def get_config():
  c = ilsvrc_base.get_config()
  c.model.name = "googlenet_gap"
  c.model.pooling = "gmp"
  return c
