"""AlexNet family: the fully connected original and its GAP variants (CAM paper, Sec. 3.1).

Layer sizes follow torchvision's single-tower ``alexnet`` (conv1 64@11x11/4
pad 2, conv2 192@5x5 pad 2, conv3 384, conv4 256, conv5 256 @3x3 pad 1, max
pools 3/2), in the same order and shapes, so torchvision weights map one to one:

  conv1 <- features.0    conv2 <- features.3    conv3 <- features.6
  conv4 <- features.8    conv5 <- features.10
  fc6 <- classifier.1    fc7 <- classifier.4    fc8 <- classifier.6

(kernels transpose OIHW -> HWIO and (out, in) -> (in, out); ``fc6`` consumes
the pooled map flattened in NCHW order, as torch does). With pad 2 both 224
and 227 px inputs give a 13x13 conv5 map: 224 -> 55 -> 27 -> 13 and
227 -> 56 -> 27 -> 13 (the pools floor), so Caffe's 227 px habit still yields
the paper's 13x13 mapping resolution.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from flax import nnx

from camjax.models.heads import FcHead, GapHead
from camjax.models.layers import CONV_INIT, Op, max_pool, scaled
from camjax.models.registry import register

TORCH_NAMES = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "fc6": "classifier.1",
    "fc7": "classifier.4",
    "fc8": "classifier.6",
}

# Spatial path up to conv5 (pool5 excluded): conv1, pool1, conv2, pool2; conv3-5 keep size.
CONV5_OPS = (Op("conv", 11, 4, 2), Op("pool", 3, 2), Op("conv", 5, 1, 2), Op("pool", 3, 2))


class AlexNetFeatures(nnx.Module):
  """conv1..conv5 with ReLU and pool1/pool2; returns the conv5 map (after ReLU, no pool5)."""

  def __init__(self, *, width_mult: float = 1.0, in_channels: int = 3, dtype: Any = None, rngs: nnx.Rngs):
    c = [scaled(n, width_mult) for n in (64, 192, 384, 256, 256)]
    conv = functools.partial(nnx.Conv, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs)
    self.conv1 = conv(in_channels, c[0], (11, 11), strides=4, padding=2)
    self.conv2 = conv(c[0], c[1], (5, 5), padding=2)
    self.conv3 = conv(c[1], c[2], (3, 3), padding=1)
    self.conv4 = conv(c[2], c[3], (3, 3), padding=1)
    self.conv5 = conv(c[3], c[4], (3, 3), padding=1)
    self.out_channels = c[4]

  def __call__(self, x: jax.Array) -> jax.Array:
    x = max_pool(nnx.relu(self.conv1(x)), 3, 2)
    x = max_pool(nnx.relu(self.conv2(x)), 3, 2)
    x = nnx.relu(self.conv3(x))
    x = nnx.relu(self.conv4(x))
    return nnx.relu(self.conv5(x))


class _AlexNetGapBase(GapHead):
  """conv1..conv5, optional extra 3x3 convs (``extra``), then the GAP head (``cam_conv``, ``head``)."""

  name = "alexnet_gap"
  features_class = AlexNetFeatures
  backbone_ops = CONV5_OPS
  extra_widths: tuple[int, ...] = ()

  def _build_backbone(self, width_mult: float, in_channels: int, dtype: Any, rngs: nnx.Rngs) -> int:
    cin = super()._build_backbone(width_mult, in_channels, dtype, rngs)
    extra = []
    for width in self.extra_widths:
      width = scaled(width, width_mult)
      extra.append(nnx.Conv(cin, width, (3, 3), padding=1, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs))
      cin = width
    self.extra = nnx.List(extra)
    return cin

  def _backbone(self, x: jax.Array) -> jax.Array:
    x = super()._backbone(x)
    for conv in self.extra:
      x = nnx.relu(conv(x))
    return x


@register("alexnet_gap")
class AlexNetGap(_AlexNetGapBase):
  """AlexNet-GAP: conv1..conv5 (pool5 and the FC layers removed), 13x13 map at 224 or 227 px,
  then a 3x3/1 pad 1 conv with 1024 units + ReLU, global pooling and a linear classifier.

  ``pooling="gmp"`` gives the global-max-pooling variant; ``use_bias`` switches the
  classifier bias (off by default, as in the paper); ``width_mult`` scales every
  width (tests use tiny ones).
  """

  name = "alexnet_gap"


@register("alexnet_star_gap")
class AlexNetStarGap(_AlexNetGapBase):
  """AlexNet*-GAP: AlexNet-GAP with two more conv layers before global pooling.

  The paper adds two convolutional layers after the AlexNet backbone to make
  up for the removed FC capacity. Exact choice here: after conv5 (ReLU),
  ``extra[0]`` = 3x3/1 pad 1 conv 512 + ReLU, ``extra[1]`` = 3x3/1 pad 1 conv
  512 + ReLU, then the 1024-unit 3x3 CAM conv + ReLU, so the map stays 13x13.
  """

  name = "alexnet_star_gap"
  extra_widths = (512, 512)


@register("alexnet")
class AlexNet(FcHead):
  """The original (single-tower, torchvision layout) AlexNet with its fully connected head.

  pool5 -> adaptive average pool to 6x6 (identity at 224/227 px) -> dropout ->
  fc6 4096 -> ReLU -> dropout -> fc7 4096 -> ReLU -> fc8; 61,100,840 parameters
  for 1000 classes. Returns ``(logits, conv5 map after ReLU, before pool5)``.
  Not CAM compatible (the FC head mixes locations): use Grad-CAM from
  ``camjax.saliency`` on the returned features instead.
  """

  name = "alexnet"
  features_class = AlexNetFeatures
  backbone_ops = CONV5_OPS
  pool5 = (3, 2)
  fc_grid = 6
  dropout_first = True
  feature_layer = "conv5"
  gap_variants = ("alexnet_gap", "alexnet_star_gap")
