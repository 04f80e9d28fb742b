"""A small configurable GAP network for the built-in data set and for tests."""

from __future__ import annotations

from typing import Any, Sequence

import jax
from flax import nnx

from camjax.models.base import PoolingHead
from camjax.models.heads import PooledNet
from camjax.models.registry import register


class ConvBNReLU(nnx.Module):
  """3x3 convolution, optional BatchNorm, ReLU."""

  def __init__(self, cin: int, cout: int, *, strides: int = 1, batch_norm: bool = True, dtype: Any = None,
               rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (3, 3), strides=strides, padding="SAME", use_bias=not batch_norm, dtype=dtype,
                         rngs=rngs)
    self.norm = nnx.BatchNorm(cout, momentum=0.9, dtype=dtype, rngs=rngs) if batch_norm else None

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(x)
    if self.norm is not None:
      x = self.norm(x)
    return nnx.relu(x)


@register("small_gap")
class SmallGapNet(PooledNet):
  """Stages of 3x3 conv blocks; every stage but the first halves the resolution.

  ``widths`` gives one stage per entry; ``blocks_per_stage`` is one count for
  every stage or one count per stage (extra blocks in the last, low-resolution
  stages widen the receptive field cheaply). With four stages a 96 px input
  gives a 12x12 map.

  ``last_batch_norm=False`` leaves BatchNorm out of the block that feeds global
  pooling (a plain conv + ReLU, like the conv layer the CAM paper adds): BatchNorm
  there keeps every unit active on about half of all positions, background
  included, which spreads the class maps.
  """

  def __init__(
      self,
      *,
      num_classes: int,
      pooling: str = "gap",
      widths: Sequence[int] = (32, 64, 128, 256),
      blocks_per_stage: int | Sequence[int] = 2,
      batch_norm: bool = True,
      last_batch_norm: bool | None = None,
      use_bias: bool = False,
      in_channels: int = 3,
      dtype: Any = None,
      rngs: nnx.Rngs,
  ):
    self.num_classes = num_classes
    counts = (blocks_per_stage,) * len(widths) if isinstance(blocks_per_stage, int) else tuple(blocks_per_stage)
    if len(counts) != len(widths) or min(counts) < 1:
      raise ValueError(f"blocks_per_stage must be a positive int or one positive count per stage "
                       f"({len(widths)} stages), got {blocks_per_stage!r}")
    blocks = []
    cin = in_channels
    last = (len(widths) - 1, counts[-1] - 1)
    for stage, (width, count) in enumerate(zip(widths, counts)):
      for block in range(count):
        strides = 2 if (stage > 0 and block == 0) else 1
        norm = batch_norm if (stage, block) != last or last_batch_norm is None else last_batch_norm
        blocks.append(ConvBNReLU(cin, width, strides=strides, batch_norm=norm, dtype=dtype, rngs=rngs))
        cin = width
    self.blocks = nnx.List(blocks)
    self.head = PoolingHead(cin, num_classes, pooling=pooling, use_bias=use_bias, dtype=dtype, rngs=rngs)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = images
    for block in self.blocks:
      x = block(x)
    return self.head(x), x
