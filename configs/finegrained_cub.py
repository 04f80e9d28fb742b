"""Fine-grained recognition on CUB-200-2011 with localizable features (paper Sec. 4.1, Tbl. 4).

GAP features of an ImageNet-trained CAM network (GoogLeNet-GAP, as in the paper),
a linear SVM on full images, on crops to the CAM box and on crops to the
ground-truth box, and the localization rate of the CAM boxes. Needs the CUB
download in --config.data.manual_dir and an ImageNet training workdir:

  python -m camjax.features --config=configs/finegrained_cub.py --workdir=runs/finegrained_cub \
      --config.backbone_workdir=runs/googlenet_gap --config.data.manual_dir=~/downloads/cub
"""

from configs import default
from configs.finegrained_tiny import features_section


def get_config():
  c = default.get_config()
  c.model.name = "googlenet_gap"
  c.model.num_classes = 1000  # the backbone's own (ImageNet) head; the SVM gets CUB's 200 classes
  with c.unlocked():
    c.backbone_workdir = "runs/googlenet_gap"
    # CUB has no validation split: C is chosen on a seeded 20% of train, then refitted on all of train.
    c.features = features_section(val_split="", batch_size=64)
  c.data.name = "cub200_2011"
  c.data.builder_config = "boxes"
  c.data.image_size = 224
  c.data.eval_mode = "resize"
  c.data.on_bad_data = "skip"
  c.eval.batch_size = 64
  return c
