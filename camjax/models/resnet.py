"""ResNet50 in torchvision's layout: the original and the WSOL standard's variant.

Reference for the layout and the parameter count: torchvision's ``resnet50``
(25,557,032 parameters for 1000 classes), ResNet v1.5 (the stride of a
downsampling block sits in its 3x3 conv). Module paths equal torchvision's
state-dict keys with ``/`` for ``.``: ``layer3/0/downsample/0/kernel`` <-
``layer3.0.downsample.0.weight`` (kernels OIHW -> HWIO; BatchNorm
scale/bias/mean/var <- weight/bias/running_mean/running_var); the classifier
is ``head/classifier`` <- ``fc``. BatchNorm uses torch's epsilon 1e-5 and
momentum 0.1 (flax's 0.9).

Both nets end in global pooling -> linear with a bias, so they are CAM
compatible with no added layer: ``features`` is the layer4 map.

The WSOL evaluation standard (Choe et al., CVPR 2020) trains CAM on a ResNet50
whose layer4 has stride 1 and, with ``large_feature_map``, layer3 too: 28x28
maps at 224 px (14x14 without). The parameters are those of resnet50. Its
ADL, ACoL and SPG variants (``architecture``) keep every block at its
torchvision path and add their layers beside them.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from camjax.models.conv import Conv
from camjax.models.heads import GapHead
from camjax.models.layers import CONV_INIT, Op, check_images, max_pool, scaled
from camjax.models.norm import BatchNorm
from camjax.models.registry import register
from camjax.wsol import acol, adl, spg

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # flax convention; torch's momentum 0.1
EXPANSION = 4
# (planes, blocks, stride) of layer1..layer4 in torchvision's resnet50.
RESNET50_LAYERS = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
STEM_OPS = (Op("conv", 7, 2, 3), Op("pool", 3, 2, 1))
# (layer, block) after which the WSOL standard's ADL ResNet50 has an ADL layer (its _ADL_POSITION).
ADL_POSITIONS = ((3, 0), (4, 0), (4, 2))


def _bn(channels: int, dtype: Any, rngs: nnx.Rngs) -> BatchNorm:
  return BatchNorm(channels, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, dtype=dtype, rngs=rngs)


def _conv(cin: int, cout: int, kernel: int, stride: int, dtype: Any, rngs: nnx.Rngs) -> Conv:
  return Conv(cin, cout, (kernel, kernel), strides=stride, padding=kernel // 2, use_bias=False, dtype=dtype,
              kernel_init=CONV_INIT, rngs=rngs)


class Bottleneck(nnx.Module):
  """1x1 -> 3x3 (stride) -> 1x1 (4x wider), BatchNorm after each, ReLU after the first two and the sum.

  The shortcut is a 1x1 conv (with ``stride``) + BatchNorm when the shape
  changes, kept as ``downsample/0`` and ``downsample/1`` as in torch.
  """

  def __init__(self, cin: int, width: int, *, stride: int = 1, dtype: Any = None, rngs: nnx.Rngs):
    cout = width * EXPANSION
    self.conv1 = _conv(cin, width, 1, 1, dtype, rngs)
    self.bn1 = _bn(width, dtype, rngs)
    self.conv2 = _conv(width, width, 3, stride, dtype, rngs)
    self.bn2 = _bn(width, dtype, rngs)
    self.conv3 = _conv(width, cout, 1, 1, dtype, rngs)
    self.bn3 = _bn(cout, dtype, rngs)
    reshape = stride != 1 or cin != cout
    self.downsample = nnx.List([_conv(cin, cout, 1, stride, dtype, rngs), _bn(cout, dtype, rngs)]) if reshape else None
    self.out_channels = cout

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
    return nnx.relu(y + shortcut)


def _layer_ops(strides: tuple[int, ...]) -> tuple[Op, ...]:
  """A block's 3x3 pad 1 conv carries its stride (its 1x1 shortcut gives the same size)."""
  return tuple(Op("conv", 3, s, 1) for s in strides if s != 1)


class _ResNet50Base(GapHead):
  """Stem (7x7/2 conv, BN, ReLU, 3x3/2 pad 1 max pool) and layer1..layer4 with ``strides``."""

  name = "resnet50"
  cam_width = None  # the head pools layer4 itself
  default_use_bias = True
  strides: tuple[int, ...] = tuple(s for _, _, s in RESNET50_LAYERS)

  def _build_backbone(self, width_mult: float, in_channels: int, dtype: Any, rngs: nnx.Rngs) -> int:
    stem = scaled(64, width_mult)
    self.conv1 = Conv(in_channels, stem, (7, 7), strides=2, padding=3, use_bias=False, dtype=dtype,
                      kernel_init=CONV_INIT, rngs=rngs)
    self.bn1 = _bn(stem, dtype, rngs)
    cin = stem
    for i, ((planes, blocks, _), stride) in enumerate(zip(RESNET50_LAYERS, self.strides)):
      width = scaled(planes, width_mult)
      layer = []
      for b in range(blocks):
        block = Bottleneck(cin, width, stride=stride if b == 0 else 1, dtype=dtype, rngs=rngs)
        layer.append(block)
        cin = block.out_channels
      setattr(self, f"layer{i + 1}", nnx.List(layer))
    return cin

  def _stem(self, x: jax.Array) -> jax.Array:
    return max_pool(nnx.relu(self.bn1(self.conv1(x))), 3, 2, 1)

  def _backbone(self, x: jax.Array) -> jax.Array:
    x = self._stem(x)
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in layer:
        x = block(x)
    return x


@register("resnet50")
class ResNet50(_ResNet50Base):
  """torchvision's ResNet50: global pooling of layer4 (7x7 at 224 px) -> linear with bias.

  ``pooling="gmp"`` gives global max pooling; ``use_bias`` switches the
  classifier bias; ``width_mult`` scales every width. CAM compatible as it is.
  """

  name = "resnet50"
  backbone_ops = STEM_OPS + _layer_ops(_ResNet50Base.strides)


@register("resnet50_wsol")
class ResNet50Wsol(acol.ArchitectureSwitch, _ResNet50Base):
  """The WSOL standard's ResNet50: layer4 at stride 1, layer3 at stride 1 when ``large_feature_map``.

  224 px gives a 28x28 layer4 map (14x14 with ``large_feature_map=False``),
  then global pooling -> linear with bias, as the standard's ``ResNetCam``.
  The standard's CAM is the channel mean of ``w_c * f``: camjax's CAM
  (channel sum) divided by 2048, the same map after min-max normalisation.

  ``architecture`` builds the standard's other ResNet50s (``camjax.wsol``):

  - ``"adl"``: ADL after block 0 of layer3 and blocks 0 and 2 of layer4
    (``ADL_POSITIONS``; the layers are ``adl``, the blocks keep their paths);
  - ``"acol"``: two branches on layer4 (3x3 conv 1024, 3x3 conv 1024, 1x1
    conv to the classes) as ``head``;
  - ``"spg"``: ``SPG_B_1a`` reads layer3's block 0 (the standard's
    ``SPG_A1``), ``SPG_B_2a`` the end of layer3 (``SPG_A2``), ``SPG_C``
    (512 wide) and the classifier (``SPG_A4``) layer4.
  """

  name = "resnet50_wsol"

  def __init__(self, *, large_feature_map: bool = True, architecture: str = "cam", acol_threshold: float = 0.7,
               adl_drop_rate: float = 0.75, adl_threshold: float = 0.9, num_classes: int, pooling: str = "gap",
               use_bias: bool | None = None, width_mult: float = 1.0, dtype: Any = None, rngs: nnx.Rngs,
               **kwargs: Any):
    self.architecture = acol.check_architecture(architecture, acol_threshold=acol_threshold,
                                                adl_drop_rate=adl_drop_rate, adl_threshold=adl_threshold)
    self.large_feature_map = bool(large_feature_map)
    self.strides = (1, 2, 1 if self.large_feature_map else 2, 1)
    self.backbone_ops = STEM_OPS + _layer_ops(self.strides)
    self.adl_positions = ADL_POSITIONS if architecture == "adl" else ()
    super().__init__(num_classes=num_classes, pooling=pooling, use_bias=use_bias, width_mult=width_mult, dtype=dtype,
                     rngs=rngs, **kwargs)
    if self.adl_positions:
      self.adl = nnx.List([adl.ADL(adl_drop_rate, adl_threshold, rngs=rngs) for _ in self.adl_positions])
    # GapHead built the CAM head; ACoL and SPG replace it with theirs.
    layer3, layer4 = (scaled(planes, width_mult) * EXPANSION for planes in (256, 512))
    if architecture == "acol":
      self.head = acol.AcolHead(layer4, num_classes, hidden=(scaled(1024, width_mult),) * 2,
                                threshold=acol_threshold, pooling=pooling, dtype=dtype, rngs=rngs)
    elif architecture == "spg":
      self.head = spg.SpgHead(layer4, num_classes, taps=(layer3, layer3), width=layer3,
                              c_width=scaled(512, width_mult), pooling=pooling,
                              use_bias=self.default_use_bias if use_bias is None else use_bias, dtype=dtype, rngs=rngs)

  def _stages(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(layer3 block 0, layer3, layer4) outputs, ADL applied at its positions."""
    x = self._stem(x)
    taps = []
    for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), 1):
      for b, block in enumerate(layer):
        x = block(x)
        if (i, b) in self.adl_positions:
          x = self.adl[self.adl_positions.index((i, b))](x)
        if (i, b) == (3, 0):
          taps.append(x)
      if i == 3:
        taps.append(x)
    return taps[0], taps[1], x

  def _backbone(self, x: jax.Array) -> jax.Array:
    return self._stages(x)[2]

  def _wsol_outputs(self, images: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    check_images(images, self.min_size, self.name)
    tap1, tap2, features = self._stages(images)
    if self.architecture == "acol":
      return self.head.outputs(features, labels)
    return self.head.outputs(tap1, tap2, features, labels, images.shape[1:3])
