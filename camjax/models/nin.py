"""Network in Network for ImageNet (Lin et al., ICLR 2014): per-class maps pooled straight to logits.

Four mlpconv blocks as in the authors' ImageNet model (Caffe names kept):

  conv1 96@11x11/4, cccp1 96, cccp2 96, max pool 3/2
  conv2 256@5x5 pad 2, cccp3 256, cccp4 256, max pool 3/2
  conv3 384@3x3 pad 1, cccp5 384, cccp6 384, max pool 3/2, dropout 0.5
  conv4 1024@3x3 pad 1, cccp7 1024, cccp8 num_classes

(``cccp`` = 1x1 conv; every conv, cccp8 included, is followed by ReLU; pools
use Caffe's ceil rounding, so 224 and 227 px give 6x6 class maps). There is
no linear layer: global pooling of the class maps is the logits, so
``features`` is the (B, h, w, num_classes) map stack and ``cam_weights()`` is
the identity with zero bias, which lets the CAM kernel treat NIN like any
GAP-linear net.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from camjax.models.base import check_pooling, global_pool
from camjax.models.layers import CONV_INIT, Op, check_images, max_pool, min_input_size, scaled
from camjax.models.registry import register

CLASS_MAP_OPS = (Op("conv", 11, 4), Op("pool", 3, 2, 0, True), Op("pool", 3, 2, 0, True), Op("pool", 3, 2, 0, True))

# (name, out width or None for num_classes, kernel, stride, padding); a pool follows the names in _POOL_AFTER.
_LAYERS = (
    ("conv1", 96, 11, 4, 0), ("cccp1", 96, 1, 1, 0), ("cccp2", 96, 1, 1, 0),
    ("conv2", 256, 5, 1, 2), ("cccp3", 256, 1, 1, 0), ("cccp4", 256, 1, 1, 0),
    ("conv3", 384, 3, 1, 1), ("cccp5", 384, 1, 1, 0), ("cccp6", 384, 1, 1, 0),
    ("conv4", 1024, 3, 1, 1), ("cccp7", 1024, 1, 1, 0), ("cccp8", None, 1, 1, 0),
)
_POOL_AFTER = ("cccp2", "cccp4", "cccp6")


@register("nin")
class NIN(nnx.Module):
  """ImageNet NIN; ``pooling="gmp"`` max-pools the class maps instead of averaging them.

  ``width_mult`` scales the hidden widths (the class maps stay ``num_classes``).
  """

  name = "nin"

  # The zoo's common constructor keywords (as in models.heads.FcHead): every model is built by one registry call.
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
    self.pooling = check_pooling(pooling)
    self.num_classes = num_classes
    cin = in_channels
    for name, width, kernel, stride, padding in _LAYERS:
      cout = num_classes if width is None else scaled(width, width_mult)
      setattr(self, name, nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding=padding,
                                   dtype=dtype, kernel_init=CONV_INIT, rngs=rngs))
      cin = cout
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.min_size = min_input_size(CLASS_MAP_OPS)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    check_images(images, self.min_size, self.name)
    x = images
    for name, *_ in _LAYERS:
      x = nnx.relu(getattr(self, name)(x))
      if name in _POOL_AFTER:
        x = max_pool(x, 3, 2, ceil_mode=True)
      if name == "cccp6":
        x = self.dropout(x)
    return global_pool(x, self.pooling), x

  def cam_weights(self) -> tuple[jax.Array, jax.Array]:
    """Identity kernel (C, C) and zero bias: each class map is its own CAM."""
    dtype = self.cccp8.kernel.dtype
    return jnp.eye(self.num_classes, dtype=dtype), jnp.zeros((self.num_classes,), dtype)
