"""Inception v3 in torchvision's layout: the original and the WSOL standard's variant.

Reference for the layout: torchvision's ``inception_v3`` (27,161,264
parameters for 1000 classes with its auxiliary head, 23,834,568 without).
Every conv is a ``BasicConv2d``: conv without bias + BatchNorm(eps=1e-3) + ReLU.
Module paths equal torchvision's state-dict keys with ``/`` for ``.``:
``Mixed_6b/branch7x7_2/conv/kernel`` <- ``Mixed_6b.branch7x7_2.conv.weight``
(kernels OIHW -> HWIO; BatchNorm scale/bias/mean/var <- weight/bias/
running_mean/running_var); the classifier is ``head/classifier`` <- ``fc``.
The auxiliary classifier (``AuxLogits``, a training-time loss on Mixed_6e that
torchvision runs only in train mode) is not built: the zoo's networks return
one set of logits, and its keys in a checkpoint are skipped. torchvision's
``transform_input`` is not part of the model: normalise images as
``camjax.weights.torchvision.INPUT_NORMALIZATION`` says.

The average pools in the branches count the zero padding (torch's default
``count_include_pad=True``), so border values match torch's.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from flax import nnx

from camjax.models.conv import Conv
from camjax.models.heads import GapHead
from camjax.models.layers import CONV_INIT, Op, check_images, max_pool, scaled
from camjax.models.norm import BatchNorm
from camjax.models.registry import register
from camjax.wsol import acol, adl, spg

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.9  # flax convention; torch's momentum 0.1

# name -> (block kind, its width argument): pool_features for A, channels_7x7 for C.
MIXED = {
    "Mixed_5b": ("A", 32), "Mixed_5c": ("A", 64), "Mixed_5d": ("A", 64),
    "Mixed_6a": ("B", None),
    "Mixed_6b": ("C", 128), "Mixed_6c": ("C", 160), "Mixed_6d": ("C", 160), "Mixed_6e": ("C", 192),
    "Mixed_7a": ("D", None), "Mixed_7b": ("E", None), "Mixed_7c": ("E", None),
}


def _pads(padding: int | tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
  ph, pw = (padding, padding) if isinstance(padding, int) else padding
  return (ph, ph), (pw, pw)


class BasicConv2d(nnx.Module):
  """Conv (no bias) + BatchNorm(eps=1e-3) + ReLU; ``kernel`` and ``padding`` may be (h, w) pairs."""

  def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], *, strides: int = 1,
               padding: int | tuple[int, int] = 0, dtype: Any = None, rngs: nnx.Rngs):
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    self.conv = Conv(cin, cout, kernel, strides=strides, padding=_pads(padding), use_bias=False, dtype=dtype,
                     kernel_init=CONV_INIT, rngs=rngs)
    self.bn = BatchNorm(cout, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.conv(x)))


def avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3/1 pad 1 average pool counting the zero padding (divides by 9 everywhere), as torch's default."""
  h, w = x.shape[1:3]
  p = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (1, 1, 0), (1, 1, 0), (0, 0, 0)])
  total = sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
  return total / 9


def _maker(dtype: Any, rngs: nnx.Rngs) -> Callable[..., BasicConv2d]:
  """``BasicConv2d`` with the block's dtype and rngs bound; ``kernel`` may be passed by keyword."""
  def conv(cin: int, cout: int, kernel: int | tuple[int, int] = 1, **kwargs: Any) -> BasicConv2d:
    return BasicConv2d(cin, cout, kernel, dtype=dtype, rngs=rngs, **kwargs)

  return conv


class InceptionA(nnx.Module):
  """1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1 (``pool_features``)."""

  def __init__(self, cin: int, pool_features: int, *, c: Any, dtype: Any = None, rngs: nnx.Rngs):
    conv = _maker(dtype, rngs)
    self.branch1x1 = conv(cin, c(64), 1)
    self.branch5x5_1 = conv(cin, c(48), 1)
    self.branch5x5_2 = conv(c(48), c(64), 5, padding=2)
    self.branch3x3dbl_1 = conv(cin, c(64), 1)
    self.branch3x3dbl_2 = conv(c(64), c(96), 3, padding=1)
    self.branch3x3dbl_3 = conv(c(96), c(96), 3, padding=1)
    self.branch_pool = conv(cin, c(pool_features), 1)
    self.out_channels = c(64) + c(64) + c(96) + c(pool_features)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(avg_pool_3x3(x)),
    ], axis=-1)


class InceptionB(nnx.Module):
  """Grid reduction: 3x3 | 1x1 -> 3x3 -> 3x3 | max pool, the last layer of each with ``stride`` and ``padding``.

  torchvision: stride 2, no padding; the WSOL standard: stride 1, padding 1 (keeps the map size).
  """

  def __init__(self, cin: int, *, c: Any, stride: int = 2, padding: int = 0, dtype: Any = None, rngs: nnx.Rngs):
    conv = _maker(dtype, rngs)
    self.stride, self.padding = stride, padding
    self.branch3x3 = conv(cin, c(384), 3, strides=stride, padding=padding)
    self.branch3x3dbl_1 = conv(cin, c(64), 1)
    self.branch3x3dbl_2 = conv(c(64), c(96), 3, padding=1)
    self.branch3x3dbl_3 = conv(c(96), c(96), 3, strides=stride, padding=padding)
    self.out_channels = c(384) + c(96) + cin

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.concatenate([
        self.branch3x3(x),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        max_pool(x, 3, self.stride, self.padding),
    ], axis=-1)


class InceptionC(nnx.Module):
  """1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | avg pool -> 1x1; 192 channels each."""

  def __init__(self, cin: int, channels_7x7: int, *, c: Any, dtype: Any = None, rngs: nnx.Rngs):
    conv = _maker(dtype, rngs)
    c7, out = c(channels_7x7), c(192)
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    self.branch1x1 = conv(cin, out, 1)
    self.branch7x7_1 = conv(cin, c7, 1)
    self.branch7x7_2 = conv(c7, c7, **row)
    self.branch7x7_3 = conv(c7, out, **col)
    self.branch7x7dbl_1 = conv(cin, c7, 1)
    self.branch7x7dbl_2 = conv(c7, c7, **col)
    self.branch7x7dbl_3 = conv(c7, c7, **row)
    self.branch7x7dbl_4 = conv(c7, c7, **col)
    self.branch7x7dbl_5 = conv(c7, out, **row)
    self.branch_pool = conv(cin, out, 1)
    self.out_channels = 4 * out

  def __call__(self, x: jax.Array) -> jax.Array:
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    d = self.branch7x7dbl_1(x)
    for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
      d = layer(d)
    return jnp.concatenate([self.branch1x1(x), b7, d, self.branch_pool(avg_pool_3x3(x))], axis=-1)


class InceptionD(nnx.Module):
  """Grid reduction: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | 3x3/2 max pool."""

  def __init__(self, cin: int, *, c: Any, dtype: Any = None, rngs: nnx.Rngs):
    conv = _maker(dtype, rngs)
    self.branch3x3_1 = conv(cin, c(192), 1)
    self.branch3x3_2 = conv(c(192), c(320), 3, strides=2)
    self.branch7x7x3_1 = conv(cin, c(192), 1)
    self.branch7x7x3_2 = conv(c(192), c(192), (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = conv(c(192), c(192), (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = conv(c(192), c(192), 3, strides=2)
    self.out_channels = c(320) + c(192) + cin

  def __call__(self, x: jax.Array) -> jax.Array:
    b7 = x
    for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
      b7 = layer(b7)
    return jnp.concatenate([self.branch3x3_2(self.branch3x3_1(x)), b7, max_pool(x, 3, 2)], axis=-1)


class InceptionE(nnx.Module):
  """1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) | avg pool -> 1x1; the pairs are concatenated."""

  def __init__(self, cin: int, *, c: Any, dtype: Any = None, rngs: nnx.Rngs):
    conv = _maker(dtype, rngs)
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
    self.branch1x1 = conv(cin, c(320), 1)
    self.branch3x3_1 = conv(cin, c(384), 1)
    self.branch3x3_2a = conv(c(384), c(384), **row)
    self.branch3x3_2b = conv(c(384), c(384), **col)
    self.branch3x3dbl_1 = conv(cin, c(448), 1)
    self.branch3x3dbl_2 = conv(c(448), c(384), 3, padding=1)
    self.branch3x3dbl_3a = conv(c(384), c(384), **row)
    self.branch3x3dbl_3b = conv(c(384), c(384), **col)
    self.branch_pool = conv(cin, c(192), 1)
    self.out_channels = c(320) + 4 * c(384) + c(192)

  def __call__(self, x: jax.Array) -> jax.Array:
    a = self.branch3x3_1(x)
    d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch3x3_2a(a), self.branch3x3_2b(a),
        self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
        self.branch_pool(avg_pool_3x3(x)),
    ], axis=-1)



class ConvRelu(nnx.Module):
  """3x3/1 pad 1 conv with bias + ReLU: the layers the WSOL standard adds after Mixed_6e."""

  def __init__(self, cin: int, cout: int, *, dtype: Any = None, rngs: nnx.Rngs):
    self.conv = Conv(cin, cout, (3, 3), padding=1, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.conv(x))


class _InceptionV3Base(GapHead):
  """The stem and the Mixed blocks up to ``last``, with the geometry the subclass sets."""

  name = "inceptionv3"
  last = "Mixed_7c"
  stem_padding = 0  # of Conv2d_1a_3x3
  stem_pool = (0, False)  # padding and ceil mode of the two 3x3/2 stem max pools
  reduction = (2, 0)  # stride and padding of Mixed_6a's last layers
  pool_before_6a = False

  def _build_backbone(self, width_mult: float, in_channels: int, dtype: Any, rngs: nnx.Rngs) -> int:
    c = lambda n: scaled(n, width_mult)  # noqa: E731
    conv = _maker(dtype, rngs)
    self.Conv2d_1a_3x3 = conv(in_channels, c(32), 3, strides=2, padding=self.stem_padding)
    self.Conv2d_2a_3x3 = conv(c(32), c(32), 3)
    self.Conv2d_2b_3x3 = conv(c(32), c(64), 3, padding=1)
    self.Conv2d_3b_1x1 = conv(c(64), c(80), 1)
    self.Conv2d_4a_3x3 = conv(c(80), c(192), 3)
    cin = c(192)
    names = list(MIXED)
    self.mixed = tuple(names[:names.index(self.last) + 1])
    for name in self.mixed:
      kind, arg = MIXED[name]
      kw = dict(c=c, dtype=dtype, rngs=rngs)
      if kind == "A":
        block = InceptionA(cin, arg, **kw)
      elif kind == "B":
        block = InceptionB(cin, stride=self.reduction[0], padding=self.reduction[1], **kw)
      elif kind == "C":
        block = InceptionC(cin, arg, **kw)
      elif kind == "D":
        block = InceptionD(cin, **kw)
      else:
        block = InceptionE(cin, **kw)
      setattr(self, name, block)
      cin = block.out_channels
    return cin

  def _stem(self, x: jax.Array) -> jax.Array:
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = max_pool(x, 3, 2, *self.stem_pool)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    return max_pool(x, 3, 2, *self.stem_pool)

  def _backbone(self, x: jax.Array) -> jax.Array:
    x = self._stem(x)
    for name in self.mixed:
      if name == "Mixed_6a" and self.pool_before_6a:
        x = max_pool(x, 3, 2, 0, True)
      x = getattr(self, name)(x)
    return x


@register("inceptionv3")
class InceptionV3(_InceptionV3Base):
  """torchvision's Inception v3 without its auxiliary classifier (23,834,568 parameters).

  Its head already is global average pooling of Mixed_7c (8x8 at 299 px, 5x5
  at 224 px) -> dropout 0.5 -> linear with bias, so it is CAM compatible.
  Inputs need at least 75 px, as in torch.
  """

  name = "inceptionv3"
  backbone_ops = (Op("conv", 3, 2), Op("conv", 3), Op("pool", 3, 2), Op("conv", 3), Op("pool", 3, 2),
                  Op("conv", 3, 2), Op("conv", 3, 2))  # stem, Mixed_6a, Mixed_7a
  cam_width = None
  default_use_bias = True
  default_dropout_rate = 0.5


@register("inceptionv3_wsol")
class InceptionV3Wsol(acol.ArchitectureSwitch, _InceptionV3Base):
  """The WSOL standard's Inception v3 (its ``InceptionCam``), up to Mixed_6e.

  Changes from torchvision's: Conv2d_1a_3x3 pads by 1, the two stem max pools
  pad by 1 in ceil mode, Mixed_6a keeps the map size (stride 1, padding 1)
  and Mixed_7a..7c are removed. With ``large_feature_map`` (default) 224 px
  gives a 28x28 map; without, a 3x3/2 max pool (ceil mode) before Mixed_6a
  gives 14x14. Then two added 3x3 convs to 1024 units + ReLU (``SPG_A3_1b``,
  ``SPG_A3_2b``, the standard's names) give ``features``, and global pooling
  -> linear with bias replaces the standard's 1x1 class conv -> global average
  pooling (the same logits, since the two commute). Dropout (``dropout_rate``,
  0.5) acts on the maps before each of the three, in training only. The
  standard's CAM is the 1x1 conv's map, camjax's CAM plus the class bias.

  ``architecture`` builds the standard's other Inception v3s (``camjax.wsol``):

  - ``"adl"``: ADL after Mixed_5d (``ADL_5d``), Mixed_6e (``ADL_6e``) and
    SPG_A3_2b (``ADL_A3_2b``), and no dropout (``dropout_rate`` 0 unless given);
  - ``"acol"``: two branches on Mixed_6e (3x3 conv 1024, 3x3 conv 1024, 1x1
    conv to the classes) as ``head``, with no added convs and no dropout;
  - ``"spg"``: ``SPG_B_1a`` reads Mixed_6a's input, ``SPG_B_2a`` Mixed_6d's
    output (both to 512), ``SPG_C`` (512 wide) and the classifier (``SPG_A4``)
    the dropped-out ``SPG_A3_2b`` map, as ``"cam"``'s classifier does.
  """

  name = "inceptionv3_wsol"
  last = "Mixed_6e"
  stem_padding = 1
  stem_pool = (1, True)
  reduction = (1, 1)
  cam_width = None  # the added convs are built in _build_backbone
  default_use_bias = True

  def __init__(self, *, large_feature_map: bool = True, dropout_rate: float | None = None, architecture: str = "cam",
               acol_threshold: float = 0.7, adl_drop_rate: float = 0.75, adl_threshold: float = 0.9,
               num_classes: int, pooling: str = "gap", use_bias: bool | None = None, width_mult: float = 1.0,
               dtype: Any = None, rngs: nnx.Rngs, **kwargs: Any):
    self.architecture = acol.check_architecture(architecture, acol_threshold=acol_threshold,
                                                adl_drop_rate=adl_drop_rate, adl_threshold=adl_threshold)
    self.large_feature_map = bool(large_feature_map)
    self.pool_before_6a = not self.large_feature_map
    ops = (Op("conv", 3, 2, 1), Op("conv", 3), Op("pool", 3, 2, 1, True), Op("conv", 3), Op("pool", 3, 2, 1, True))
    self.backbone_ops = ops + (() if self.large_feature_map else (Op("pool", 3, 2, 0, True),))
    self.map_dropout_rate = (0.0 if architecture == "adl" else 0.5) if dropout_rate is None else dropout_rate
    self.adl_args = (adl_drop_rate, adl_threshold)
    # dropout acts on maps here, not on the pooled vector
    super().__init__(num_classes=num_classes, pooling=pooling, use_bias=use_bias, dropout_rate=0.0,
                     width_mult=width_mult, dtype=dtype, rngs=rngs, **kwargs)
    # GapHead built the CAM head; ACoL and SPG replace it with theirs.
    c = lambda n: scaled(n, width_mult)  # noqa: E731
    if architecture == "acol":
      self.head = acol.AcolHead(self.Mixed_6e.out_channels, num_classes, hidden=(c(1024),) * 2,
                                threshold=acol_threshold, pooling=pooling, dtype=dtype, rngs=rngs)
    elif architecture == "spg":
      self.head = spg.SpgHead(c(1024), num_classes, taps=(self.Mixed_5d.out_channels, self.Mixed_6d.out_channels),
                              width=c(512), c_width=c(512), pooling=pooling,
                              use_bias=self.default_use_bias if use_bias is None else use_bias, dtype=dtype, rngs=rngs)

  def _build_backbone(self, width_mult: float, in_channels: int, dtype: Any, rngs: nnx.Rngs) -> int:
    cin = super()._build_backbone(width_mult, in_channels, dtype, rngs)
    if self.architecture == "acol":
      return cin
    width = scaled(1024, width_mult)
    self.SPG_A3_1b = ConvRelu(cin, width, dtype=dtype, rngs=rngs)
    self.SPG_A3_2b = ConvRelu(width, width, dtype=dtype, rngs=rngs)
    self.dropouts = nnx.List([nnx.Dropout(self.map_dropout_rate, rngs=rngs) for _ in range(3)])
    if self.architecture == "adl":
      for name in ("ADL_5d", "ADL_6e", "ADL_A3_2b"):
        setattr(self, name, adl.ADL(*self.adl_args, rngs=rngs))
    return width

  def _stages(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(Mixed_6a's input, Mixed_6d's output, the map the head reads before the last dropout)."""
    x = self._stem(x)
    is_adl = self.architecture == "adl"
    for name in self.mixed:
      if name == "Mixed_6a":
        x = self.ADL_5d(x) if is_adl else x
        x = max_pool(x, 3, 2, 0, True) if self.pool_before_6a else x
        tap1 = x
      x = getattr(self, name)(x)
      if name == "Mixed_6d":
        tap2 = x
    if self.architecture == "acol":
      return tap1, tap2, x
    x = self.ADL_6e(x) if is_adl else x
    x = self.SPG_A3_1b(self.dropouts[0](x))
    x = self.SPG_A3_2b(self.dropouts[1](x))
    return tap1, tap2, self.ADL_A3_2b(x) if is_adl else x

  def _backbone(self, x: jax.Array) -> jax.Array:
    return self._stages(x)[2]

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    check_images(images, self.min_size, self.name)
    features = self._backbone(images)
    if self.architecture == "acol":
      return self.head(features), features
    return self.head(self.dropouts[2](features)), features

  def _wsol_outputs(self, images: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    check_images(images, self.min_size, self.name)
    tap1, tap2, features = self._stages(images)
    if self.architecture == "acol":
      return self.head.outputs(features, labels)
    return self.head.outputs(tap1, tap2, self.dropouts[2](features), labels, images.shape[1:3])
