"""GoogLeNet (Inception v1) family in torchvision's layout: the original and GoogLeNet-GAP.

Reference for the layout and the parameter count: torchvision's ``googlenet``
with ``aux_logits=False`` (6,624,904 parameters for 1000 classes). Every conv
is a ``BasicConv2d``: conv without bias + BatchNorm(eps=1e-3) + ReLU. As in
torchvision, each inception's "5x5" branch (``branch3``) uses a 3x3 conv where
the paper has 5x5. Module paths equal torchvision's state-dict keys with ``/``
for ``.``: ``inception4e/branch2/1/conv/kernel`` <- ``inception4e.branch2.1.conv.weight``
(kernels OIHW -> HWIO; BatchNorm scale/bias/mean/var <- weight/bias/running_mean/running_var).
``branch4`` keeps its parameter-free max pool at index 0 so its conv sits at
index 1 as in torch. The head is ``head.classifier`` <- ``fc``. torchvision's
``transform_input`` (re-normalising inputs for its ported weights) is not part
of the model: normalise images in the input pipeline.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from camjax.models.heads import GapHead
from camjax.models.layers import CONV_INIT, MaxPool, Op, max_pool, scaled
from camjax.models.norm import BatchNorm
from camjax.models.registry import register

# name: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), in network order.
INCEPTIONS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}
# Max pools that run before these inceptions (torchvision maxpool3 and maxpool4).
POOL_BEFORE = {"inception4a": (3, 2), "inception5a": (2, 2)}

# Spatial path to inception4e: conv1 7x7/2 pad 3, maxpool1, maxpool2, maxpool3 (ceil mode).
INCEPTION4E_OPS = (Op("conv", 7, 2, 3), Op("pool", 3, 2, 0, True), Op("pool", 3, 2, 0, True), Op("pool", 3, 2, 0, True))


class BasicConv2d(nnx.Module):
  """Conv (no bias) + BatchNorm(eps=1e-3) + ReLU, torchvision's GoogLeNet unit."""

  def __init__(self, cin: int, cout: int, kernel: int, *, strides: int = 1, padding: int = 0,
               dtype: Any = None, rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=strides, padding=padding, use_bias=False,
                         dtype=dtype, kernel_init=CONV_INIT, rngs=rngs)
    self.bn = BatchNorm(cout, epsilon=1e-3, momentum=0.9, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.conv(x)))


class Inception(nnx.Module):
  """Four parallel branches concatenated on channels: 1x1; 1x1->3x3; 1x1->3x3; maxpool->1x1."""

  def __init__(self, cin: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
               pool_proj: int, *, dtype: Any = None, rngs: nnx.Rngs):
    self.branch1 = BasicConv2d(cin, ch1x1, 1, dtype=dtype, rngs=rngs)
    self.branch2 = nnx.List([BasicConv2d(cin, ch3x3red, 1, dtype=dtype, rngs=rngs),
                             BasicConv2d(ch3x3red, ch3x3, 3, padding=1, dtype=dtype, rngs=rngs)])
    self.branch3 = nnx.List([BasicConv2d(cin, ch5x5red, 1, dtype=dtype, rngs=rngs),
                             BasicConv2d(ch5x5red, ch5x5, 3, padding=1, dtype=dtype, rngs=rngs)])
    self.branch4 = nnx.List([MaxPool(3, 1, 1, ceil_mode=True),
                             BasicConv2d(cin, pool_proj, 1, dtype=dtype, rngs=rngs)])
    self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

  def __call__(self, x: jax.Array) -> jax.Array:
    outs = [self.branch1(x)]
    for branch in (self.branch2, self.branch3, self.branch4):
      y = x
      for layer in branch:
        y = layer(y)
      outs.append(y)
    return jnp.concatenate(outs, axis=-1)


class _GoogLeNetBase(GapHead):
  """Stem and inceptions up to ``last`` (inclusive), with torchvision's pools in between."""

  name = "googlenet"
  last = "inception5b"

  def _build_backbone(self, width_mult: float, in_channels: int, dtype: Any, rngs: nnx.Rngs) -> int:
    c = lambda n: scaled(n, width_mult)  # noqa: E731
    self.conv1 = BasicConv2d(in_channels, c(64), 7, strides=2, padding=3, dtype=dtype, rngs=rngs)
    self.conv2 = BasicConv2d(c(64), c(64), 1, dtype=dtype, rngs=rngs)
    self.conv3 = BasicConv2d(c(64), c(192), 3, padding=1, dtype=dtype, rngs=rngs)
    cin = c(192)
    names = list(INCEPTIONS)
    self.inceptions = tuple(names[:names.index(self.last) + 1])
    for name in self.inceptions:
      block = Inception(cin, *(c(w) for w in INCEPTIONS[name]), dtype=dtype, rngs=rngs)
      setattr(self, name, block)
      cin = block.out_channels
    return cin

  def _backbone(self, x: jax.Array) -> jax.Array:
    x = max_pool(self.conv1(x), 3, 2, ceil_mode=True)
    x = max_pool(self.conv3(self.conv2(x)), 3, 2, ceil_mode=True)
    for name in self.inceptions:
      if name in POOL_BEFORE:
        x = max_pool(x, *POOL_BEFORE[name], ceil_mode=True)
      x = getattr(self, name)(x)
    return x


@register("googlenet_gap")
class GoogLeNetGap(_GoogLeNetBase):
  """GoogLeNet-GAP: conv1..inception4e (pool4 and everything after removed; 224 px -> 14x14),
  then a 3x3/1 pad 1 conv with 1024 units (with bias, no BatchNorm, as in the paper) + ReLU,
  global pooling and a linear classifier.

  ``pooling="gmp"`` gives global max pooling; ``use_bias`` switches the classifier
  bias (off by default); ``width_mult`` scales every width. The backbone's
  paths and shapes equal torchvision's ``googlenet`` up to ``inception4e``.
  """

  name = "googlenet_gap"
  last = "inception4e"
  backbone_ops = INCEPTION4E_OPS


@register("googlenet")
class GoogLeNet(_GoogLeNetBase):
  """The original GoogLeNet without auxiliary heads (torchvision layout, 6,624,904 parameters).

  Its head already is global average pooling (7x7 at 224 px) -> dropout (0.4,
  the paper's rate; torchvision uses 0.2) -> linear with bias, so it is CAM
  compatible: ``features`` is the inception5b map and ``pooling="gmp"`` works.
  """

  name = "googlenet"
  last = "inception5b"
  backbone_ops = INCEPTION4E_OPS + (Op("pool", 2, 2, 0, True),)
  cam_width = None  # no added conv: the head pools inception5b
  default_use_bias = True
  default_dropout_rate = 0.4
