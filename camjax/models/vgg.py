"""VGG16 family: the fully connected original, VGGnet-GAP (CAM paper, Sec. 3.1) and the WSOL standard's VGG16.

The 13 conv layers (3x3 pad 1, ReLU, no BatchNorm) are torchvision's ``vgg16``
in the same order and shapes, so torchvision weights map one to one (see
``TORCH_NAMES``; kernels transpose OIHW -> HWIO, (out, in) -> (in, out)).
The baseline's ``fc6`` reads the pooled map flattened in NCHW order, as torch does
(``camjax.models.heads.FcHead``).
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from camjax.models.heads import FcHead, GapHead
from camjax.models.layers import CONV_INIT, Op, max_pool, scaled
from camjax.models.registry import register

# (stage, widths); a 2x2/2 max pool follows every stage (pool5 only in the baseline).
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _conv_names() -> list[str]:
  return [f"conv{s + 1}_{i + 1}" for s, stage in enumerate(VGG16_STAGES) for i in range(len(stage))]


def _torch_names() -> dict[str, str]:
  names, index = {}, 0
  for s, stage in enumerate(VGG16_STAGES):
    for i in range(len(stage)):
      names[f"conv{s + 1}_{i + 1}"] = f"features.{index}"
      index += 2  # conv, ReLU
    index += 1  # max pool
  names.update(fc6="classifier.0", fc7="classifier.3", fc8="classifier.6")
  return names


TORCH_NAMES = _torch_names()
CONV5_OPS = tuple(Op("pool", 2, 2) for _ in range(4))  # pool1..pool4; the 3x3 pad 1 convs keep size


class VGG16Features(nnx.Module):
  """conv1_1..conv5_3 with ReLU and pool1..pool4 (pool1..pool3 without ``pool4``); returns the conv5_3 map."""

  def __init__(self, *, width_mult: float = 1.0, in_channels: int = 3, pool4: bool = True, dtype: Any = None,
               rngs: nnx.Rngs):
    self.pools = (1, 2, 3, 4) if pool4 else (1, 2, 3)  # stages with a 2x2/2 max pool before them
    cin = in_channels
    for name, width in zip(_conv_names(), (w for stage in VGG16_STAGES for w in stage)):
      width = scaled(width, width_mult)
      conv = nnx.Conv(cin, width, (3, 3), padding=1, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs)
      setattr(self, name, conv)
      cin = width
    self.out_channels = cin

  def __call__(self, x: jax.Array) -> jax.Array:
    for s, stage in enumerate(VGG16_STAGES):
      if s in self.pools:
        x = max_pool(x, 2, 2)
      for i in range(len(stage)):
        x = nnx.relu(getattr(self, f"conv{s + 1}_{i + 1}")(x))
    return x


@register("vgg16_gap")
class VGG16Gap(GapHead):
  """VGGnet-GAP: conv1_1..conv5_3 with pool5 and the FC layers removed (224 px -> 14x14),
  then a 3x3/1 pad 1 conv with 1024 units + ReLU, global pooling and a linear classifier.

  ``pooling="gmp"`` gives global max pooling; ``use_bias`` switches the classifier
  bias (off by default); ``width_mult`` scales every width.
  """

  name = "vgg16_gap"
  features_class = VGG16Features
  backbone_ops = CONV5_OPS


@register("vgg16_wsol")
class VGG16Wsol(GapHead):
  """The WSOL standard's VGG16 (its ``VggCam``): VGGnet-GAP with a classifier bias, and pool4 removed
  with ``large_feature_map`` (default; 224 px -> 28x28, else 14x14 as vgg16_gap).

  conv1_1..conv5_3 -> 3x3/1 pad 1 conv to 1024 units (``cam_conv``, the
  standard's ``conv6``) + ReLU -> global pooling -> linear with bias. The
  standard's CAM is the channel mean of ``w_c * f``: camjax's CAM divided by
  1024, the same map after min-max normalisation.
  """

  name = "vgg16_wsol"
  default_use_bias = True

  def __init__(self, *, large_feature_map: bool = True, **kwargs: Any):
    self.large_feature_map = bool(large_feature_map)
    self.backbone_ops = CONV5_OPS[:3] if self.large_feature_map else CONV5_OPS
    super().__init__(**kwargs)

  def _build_backbone(self, width_mult: float, in_channels: int, dtype: Any, rngs: nnx.Rngs) -> int:
    self.features = VGG16Features(width_mult=width_mult, in_channels=in_channels,
                                  pool4=not self.large_feature_map, dtype=dtype, rngs=rngs)
    return self.features.out_channels


@register("vgg16")
class VGG16(FcHead):
  """The original VGG16 (configuration D) with its fully connected head.

  pool5 -> adaptive average pool to 7x7 (identity at 224 px) -> fc6 4096 ->
  ReLU -> dropout -> fc7 4096 -> ReLU -> dropout -> fc8; 138,357,544
  parameters for 1000 classes. Returns ``(logits, conv5_3 map after ReLU,
  before pool5)``. Not CAM compatible: use Grad-CAM from ``camjax.saliency``.
  """

  name = "vgg16"
  features_class = VGG16Features
  backbone_ops = CONV5_OPS
  pool5 = (2, 2)
  fc_grid = 7
  dropout_first = False
  feature_layer = "conv5_3"
  gap_variants = ("vgg16_gap",)
