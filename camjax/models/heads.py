"""The two heads the zoo repeats, as base classes a network inherits.

* ``GapHead``: backbone -> 3x3/1 pad 1 conv (``cam_conv``, 1024 units) + ReLU ->
  global pooling -> linear, the CAM paper's recipe (Sec. 3.1) for AlexNet,
  VGG16 and GoogLeNet; with ``cam_width = None`` it is the plain "global
  pooling -> linear" head of the original GoogLeNet.
* ``FcHead``: the original AlexNet / VGG16 head, pool5 -> adaptive average
  pool -> fc6, fc7 (ReLU, dropout) -> fc8.

They are base classes, not child modules, because torchvision key maps and
saved checkpoints address ``cam_conv``, ``head/classifier`` and ``fc6``..``fc8``
at the top of the model: a child module would move them one level down.
A network supplies its backbone: ``features_class`` (built as ``features``) or
its own ``_build_backbone`` / ``_backbone``, and ``backbone_ops``, the spatial
path the backbone's output needs (for the smallest-input check).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from flax import nnx

from camjax.models.base import NotCamCompatible, PoolingHead, check_pooling
from camjax.models.layers import (
    CONV_INIT, FC_INIT, Op, adaptive_avg_pool, check_images, flatten_chw, max_pool, min_input_size, scaled)


class PooledNet(nnx.Module):
  """A network whose ``head`` is a ``PoolingHead``, so its CAM weights are the head's classifier."""

  def cam_weights(self) -> tuple[jax.Array, jax.Array]:
    return self.head.cam_weights()


class _Backbone(nnx.Module):
  """The backbone half both heads share: built once in ``__init__``, run first in ``__call__``."""

  name = ""
  features_class: Any = None
  backbone_ops: tuple[Op, ...] = ()

  def _build_backbone(self, width_mult: float, in_channels: int, dtype: Any, rngs: nnx.Rngs) -> int:
    """Create the backbone's layers on ``self``; return the channels of its output map."""
    self.features = self.features_class(width_mult=width_mult, in_channels=in_channels, dtype=dtype, rngs=rngs)
    return self.features.out_channels

  def _backbone(self, x: jax.Array) -> jax.Array:
    return self.features(x)


class GapHead(_Backbone, PooledNet):
  """Backbone -> ``cam_conv`` (``cam_width`` units, 3x3/1 pad 1, with bias) + ReLU -> ``PoolingHead``.

  ``pooling="gmp"`` gives global max pooling; ``use_bias`` switches the
  classifier bias and ``dropout_rate`` the dropout before it (``None``: the
  network's defaults); ``width_mult`` scales every width.
  """

  cam_width: int | None = 1024
  default_use_bias = False
  default_dropout_rate = 0.0

  def __init__(
      self,
      *,
      num_classes: int,
      pooling: str = "gap",
      use_bias: bool | None = None,
      dropout_rate: float | None = None,
      width_mult: float = 1.0,
      in_channels: int = 3,
      dtype: Any = None,
      rngs: nnx.Rngs,
  ):
    check_pooling(pooling)
    self.num_classes = num_classes
    cin = self._build_backbone(width_mult, in_channels, dtype, rngs)
    if self.cam_width is not None:
      width = scaled(self.cam_width, width_mult)
      self.cam_conv = nnx.Conv(cin, width, (3, 3), padding=1, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs)
      cin = width
    self.head = PoolingHead(
        cin, num_classes, pooling=pooling,
        use_bias=self.default_use_bias if use_bias is None else use_bias,
        dropout_rate=self.default_dropout_rate if dropout_rate is None else dropout_rate,
        dtype=dtype, rngs=rngs)
    self.min_size = min_input_size(self.backbone_ops)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    check_images(images, self.min_size, self.name)
    x = self._backbone(images)
    if self.cam_width is not None:
      x = nnx.relu(self.cam_conv(x))
    return self.head(x), x


class FcHead(_Backbone):
  """Backbone -> pool5 -> adaptive average pool to ``fc_grid`` -> fc6, fc7 (4096 units, ReLU) -> fc8.

  ``fc6`` reads the pooled map flattened in NCHW order, as torch does. Dropout
  sits before fc6 and fc7 when ``dropout_first`` (torchvision's AlexNet), else
  after their ReLUs (VGG16). Returns ``(logits, backbone map before pool5)``;
  not CAM compatible, the FC layers mix locations.
  """

  pool5: tuple[int, int] = (2, 2)  # window, stride
  fc_grid = 7
  dropout_first = False
  feature_layer = ""  # what the features are, for the not-CAM-compatible message
  gap_variants: tuple[str, ...] = ()  # the GAP networks to use instead

  # The zoo's common constructor keywords (as in models.nin.NIN): every model is built by one registry call.
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
                       f"use {' or '.join(self.gap_variants)} for global max pooling")
    self.num_classes = num_classes
    cin = self._build_backbone(width_mult, in_channels, dtype, rngs) * self.fc_grid ** 2
    hidden = scaled(4096, width_mult)
    linear = functools.partial(nnx.Linear, dtype=dtype, kernel_init=FC_INIT, rngs=rngs)
    self.dropout6 = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc6 = linear(cin, hidden)
    self.dropout7 = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc7 = linear(hidden, hidden)
    self.fc8 = linear(hidden, num_classes)
    self.min_size = min_input_size(self.backbone_ops + (Op("pool", *self.pool5),))

  def _hidden(self, x: jax.Array, fc: nnx.Linear, dropout: nnx.Dropout) -> jax.Array:
    if self.dropout_first:
      return nnx.relu(fc(dropout(x)))
    return dropout(nnx.relu(fc(x)))

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    check_images(images, self.min_size, self.name)
    features = self._backbone(images)
    x = flatten_chw(adaptive_avg_pool(max_pool(features, *self.pool5), (self.fc_grid, self.fc_grid)))
    x = self._hidden(x, self.fc6, self.dropout6)
    x = self._hidden(x, self.fc7, self.dropout7)
    return self.fc8(x), features

  def cam_weights(self):
    raise NotCamCompatible(
        f"{self.name} has a fully connected head, so CAM does not apply; use Grad-CAM from "
        f"camjax.saliency on its {self.feature_layer} features, or a GAP model such as {self.gap_variants[0]}")
