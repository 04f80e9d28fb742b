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

from camjax.models.base import NotCamCompatible, PoolingHead, check_pooling
from camjax.models.layers import (
    CONV_INIT, FC_INIT, Op, adaptive_avg_pool, check_images, flatten_chw, max_pool, min_input_size, scaled)
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


class _AlexNetGapBase(nnx.Module):
  """conv1..conv5, optional extra 3x3 convs, the 1024-unit 3x3 CAM conv, global pooling, linear."""

  name = "alexnet_gap"
  extra_widths: tuple[int, ...] = ()

  def __init__(
      self,
      *,
      num_classes: int,
      pooling: str = "gap",
      use_bias: bool = False,
      dropout_rate: float = 0.0,
      width_mult: float = 1.0,
      in_channels: int = 3,
      dtype: Any = None,
      rngs: nnx.Rngs,
  ):
    check_pooling(pooling)
    self.num_classes = num_classes
    self.features = AlexNetFeatures(width_mult=width_mult, in_channels=in_channels, dtype=dtype, rngs=rngs)
    cin = self.features.out_channels
    conv = functools.partial(nnx.Conv, kernel_size=(3, 3), padding=1, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs)
    extra = []
    for width in self.extra_widths:
      extra.append(conv(cin, scaled(width, width_mult)))
      cin = scaled(width, width_mult)
    self.extra = nnx.List(extra)
    self.cam_conv = conv(cin, scaled(1024, width_mult))
    self.head = PoolingHead(
        scaled(1024, width_mult), num_classes, pooling=pooling, use_bias=use_bias,
        dropout_rate=dropout_rate, dtype=dtype, rngs=rngs)
    self.min_size = min_input_size(CONV5_OPS)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    check_images(images, self.min_size, self.name)
    x = self.features(images)
    for conv in self.extra:
      x = nnx.relu(conv(x))
    x = nnx.relu(self.cam_conv(x))
    return self.head(x), x

  def cam_weights(self) -> tuple[jax.Array, jax.Array]:
    return self.head.cam_weights()


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
class AlexNet(nnx.Module):
  """The original (single-tower, torchvision layout) AlexNet with its fully connected head.

  pool5 -> adaptive average pool to 6x6 (identity at 224/227 px) -> dropout ->
  fc6 4096 -> ReLU -> dropout -> fc7 4096 -> ReLU -> fc8; 61,100,840 parameters
  for 1000 classes. Returns ``(logits, conv5 map after ReLU, before pool5)``.
  Not CAM compatible (the FC head mixes locations): use Grad-CAM from
  ``camjax.saliency`` on the returned features instead.
  """

  name = "alexnet"

  def __init__(
      self,
      *,
      num_classes: int,
      pooling: str = "gap",
      dropout_rate: float = 0.5,
      width_mult: float = 1.0,
      in_channels: int = 3,
      dtype: Any = None,
      rngs: nnx.Rngs,
  ):
    if pooling != "gap":
      raise ValueError(f"{self.name} has a fully connected head, so pooling={pooling!r} has no meaning; "
                       f"use alexnet_gap or alexnet_star_gap for global max pooling")
    self.num_classes = num_classes
    self.features = AlexNetFeatures(width_mult=width_mult, in_channels=in_channels, dtype=dtype, rngs=rngs)
    hidden = scaled(4096, width_mult)
    self.dropout6 = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc6 = nnx.Linear(self.features.out_channels * 36, hidden, dtype=dtype, kernel_init=FC_INIT, rngs=rngs)
    self.dropout7 = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc7 = nnx.Linear(hidden, hidden, dtype=dtype, kernel_init=FC_INIT, rngs=rngs)
    self.fc8 = nnx.Linear(hidden, num_classes, dtype=dtype, kernel_init=FC_INIT, rngs=rngs)
    self.min_size = min_input_size(CONV5_OPS + (Op("pool", 3, 2),))

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    check_images(images, self.min_size, self.name)
    features = self.features(images)
    x = flatten_chw(adaptive_avg_pool(max_pool(features, 3, 2), (6, 6)))
    x = nnx.relu(self.fc6(self.dropout6(x)))
    x = nnx.relu(self.fc7(self.dropout7(x)))
    return self.fc8(x), features

  def cam_weights(self):
    raise NotCamCompatible(
        f"{self.name} has a fully connected head, so CAM does not apply; use Grad-CAM from "
        f"camjax.saliency on its conv5 features, or a GAP model such as alexnet_gap")
