"""A small configurable GAP network for the built-in data set and for tests, with the WSOL architectures."""

from __future__ import annotations

from typing import Any, Sequence

import jax
from flax import nnx

from camjax.models.base import PoolingHead
from camjax.models.heads import PooledNet
from camjax.models.norm import BatchNorm
from camjax.models.registry import register
from camjax.wsol import acol, adl, spg


class ConvBNReLU(nnx.Module):
  """3x3 convolution, optional BatchNorm, ReLU."""

  def __init__(self, cin: int, cout: int, *, strides: int = 1, batch_norm: bool = True, dtype: Any = None,
               rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (3, 3), strides=strides, padding="SAME", use_bias=not batch_norm, dtype=dtype,
                         rngs=rngs)
    self.norm = BatchNorm(cout, momentum=0.9, dtype=dtype, rngs=rngs) if batch_norm else None

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(x)
    if self.norm is not None:
      x = self.norm(x)
    return nnx.relu(x)


@register("small_gap")
class SmallGapNet(acol.ArchitectureSwitch, PooledNet):
  """Stages of 3x3 conv blocks; every stage but the first halves the resolution.

  ``widths`` gives one stage per entry; ``blocks_per_stage`` is one count for
  every stage or one count per stage (extra blocks in the last, low-resolution
  stages widen the receptive field cheaply). With four stages a 96 px input
  gives a 12x12 map.

  ``last_batch_norm=False`` leaves BatchNorm out of the block that feeds global
  pooling (a plain conv + ReLU, like the conv layer the CAM paper adds): BatchNorm
  there keeps every unit active on about half of all positions, background
  included, which spreads the class maps.

  ``architecture`` scales the WSOL standard's methods down to this network
  (``camjax.wsol``): ``"adl"`` puts an ADL layer after the last block of each
  of the last two stages; ``"acol"`` replaces the head by two branches of
  (3x3 conv to the last width + ReLU, 1x1 conv to the classes); ``"spg"``
  taps the end of the second-to-last stage (``SPG_B_1a``) and the last block
  (``SPG_B_2a``, ``SPG_C``), all its convs as wide as the last stage.
  ``"cam"`` is the plain network.
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
      architecture: str = "cam",
      acol_threshold: float = 0.7,
      adl_drop_rate: float = 0.75,
      adl_threshold: float = 0.9,
      dtype: Any = None,
      rngs: nnx.Rngs,
  ):
    self.architecture = acol.check_architecture(architecture, acol_threshold=acol_threshold,
                                                adl_drop_rate=adl_drop_rate, adl_threshold=adl_threshold)
    if architecture == "spg" and len(widths) < 2:
      raise ValueError(f"small_gap's SPG taps its last two stages: give widths two or more entries, got {widths!r}")
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
    ends = [sum(counts[:i + 1]) - 1 for i in range(len(counts))]  # each stage's last block
    self.tap_block = ends[-2] if len(ends) > 1 else None
    self.adl_blocks = tuple(ends[-2:]) if architecture == "adl" else ()
    if self.adl_blocks:
      self.adl = nnx.List([adl.ADL(adl_drop_rate, adl_threshold, rngs=rngs) for _ in self.adl_blocks])
    if architecture == "acol":
      self.head = acol.AcolHead(cin, num_classes, hidden=(cin,), threshold=acol_threshold, pooling=pooling,
                                dtype=dtype, rngs=rngs)
    elif architecture == "spg":
      self.head = spg.SpgHead(cin, num_classes, taps=(widths[-2], cin), width=cin, c_width=cin, pooling=pooling,
                              use_bias=use_bias, dtype=dtype, rngs=rngs)
    else:
      self.head = PoolingHead(cin, num_classes, pooling=pooling, use_bias=use_bias, dtype=dtype, rngs=rngs)

  def _blocks(self, images: jax.Array) -> tuple[jax.Array | None, jax.Array]:
    """(the second-to-last stage's output, the last block's output), ADL applied after its blocks."""
    x, tap = images, None
    for i, block in enumerate(self.blocks):
      x = block(x)
      if i in self.adl_blocks:
        x = self.adl[self.adl_blocks.index(i)](x)
      if i == self.tap_block:
        tap = x
    return tap, x

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = self._blocks(images)[1]
    return self.head(x), x

  def _wsol_outputs(self, images: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    tap, x = self._blocks(images)
    if self.architecture == "acol":
      return self.head.outputs(x, labels)
    return self.head.outputs(tap, x, x, labels, images.shape[1:3])
