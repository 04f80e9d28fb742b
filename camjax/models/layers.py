"""Pooling with PyTorch/Caffe geometry and input-size checks shared by the zoo.

The zoo keeps the layer geometry of the reference implementations (torchvision
and Caffe) so pretrained weights map onto it and feature maps have the
published resolutions. Two of their pooling rules are not in ``nnx``:
``ceil_mode`` max pooling and adaptive average pooling; both live here.
Each network also lists its spatial path as ``Op`` rows so a too small input
fails with one line instead of an XLA shape error deep in the graph.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from flax import nnx


# He-normal with fan-out for convs (what torchvision uses for VGG; keeps ReLU stacks without
# BatchNorm trainable from scratch) and N(0, 0.01) for fully connected layers.
CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
FC_INIT = nnx.initializers.normal(0.01)


def scaled(channels: int, width_mult: float) -> int:
  """Channel count times ``width_mult`` (at least 1); exact at ``width_mult=1``."""
  return max(1, int(round(channels * width_mult)))


def _pool_out(size: int, window: int, stride: int, padding: int, ceil_mode: bool) -> int:
  """Output length of a pooling window, with PyTorch's ceil_mode rule.

  In ceil mode the last window may hang over the end of the input but must
  start inside the input or its left padding.
  """
  span = size + 2 * padding - window
  if ceil_mode:
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + padding:
      out -= 1
    return out
  return span // stride + 1


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0, ceil_mode: bool = False) -> jax.Array:
  """NHWC max pooling; padding counts as -inf (PyTorch semantics).

  Non-overlapping windows without padding (VGG's 2x2/2) are the maximum of ``window**2``
  strided slices: the same values, and a backward pass of selects and pads that fuses into
  one loop, where the gradient of ``reduce_window`` (select-and-scatter) becomes index
  arrays and a scatter on XLA:CPU, about a fifth of a VGG16 train step there.
  """
  pads, outs = [(0, 0)], []
  for size in x.shape[1:3]:
    out = _pool_out(size, window, stride, padding, ceil_mode)
    hi = (out - 1) * stride + window - size - padding
    pads.append((padding, max(hi, 0)))
    outs.append(out)
  pads.append((0, 0))
  if window == stride and padding == 0 and all(hi <= 0 for _, hi in pads[1:3]):
    h, w = outs
    x = x[:, :h * stride, :w * stride]
    slices = [x[:, i::stride, j::stride] for i in range(window) for j in range(window)]
    return functools.reduce(jnp.maximum, slices)
  # A Python scalar init keeps reduce_window differentiable (an array init does not linearize).
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), pads)


class MaxPool(nnx.Module):
  """Parameter-free max pooling, so a pool can sit in an ``nnx.List`` at its torchvision index."""

  def __init__(self, window: int, stride: int, padding: int = 0, ceil_mode: bool = False):
    self.window, self.stride, self.padding, self.ceil_mode = window, stride, padding, ceil_mode

  def __call__(self, x: jax.Array) -> jax.Array:
    return max_pool(x, self.window, self.stride, self.padding, self.ceil_mode)


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
  return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
  """NHWC adaptive average pooling with torch's bins ``[floor(iH/o), ceil((i+1)H/o))``.

  Identity when the map already has the output size (224 px AlexNet/VGG);
  inputs smaller than the output repeat cells, as torch does.
  """
  h, w = x.shape[1:3]
  if (h, w) == tuple(out_hw):
    return x
  rows = [jnp.mean(x[:, a:b], axis=1, keepdims=True) for a, b in _adaptive_bins(h, out_hw[0])]
  x = jnp.concatenate(rows, axis=1)
  cols = [jnp.mean(x[:, :, a:b], axis=2, keepdims=True) for a, b in _adaptive_bins(w, out_hw[1])]
  return jnp.concatenate(cols, axis=2)


def flatten_chw(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, C*H*W) in PyTorch's NCHW order, so FC kernels map by a plain transpose."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class Op:
  """One resolution-changing layer on a network's spatial path."""

  kind: str  # "conv" or "pool"
  window: int
  stride: int = 1
  padding: int = 0
  ceil_mode: bool = False

  def out(self, size: int) -> int:
    if size + 2 * self.padding < self.window:
      return 0
    if self.kind == "conv":
      return (size + 2 * self.padding - self.window) // self.stride + 1
    return _pool_out(size, self.window, self.stride, self.padding, self.ceil_mode)


def map_size(ops: Sequence[Op], size: int) -> int:
  """Feature-map side for an input side ``size`` (0 when the input is too small)."""
  for op in ops:
    size = op.out(size)
    if size < 1:
      return 0
  return size


def min_input_size(ops: Sequence[Op]) -> int:
  """Smallest input side that keeps every layer's output at least 1x1."""
  size = 1
  while map_size(ops, size) < 1:
    size += 1
  return size


def check_images(images: Any, min_size: int, model: str) -> None:
  """Fail with one line on a non-NHWC or too small input (static shapes only)."""
  if images.ndim != 4:
    raise ValueError(f"{model} expects NHWC images (B, H, W, C), got shape {tuple(images.shape)}")
  h, w = images.shape[1:3]
  if min(h, w) < min_size:
    raise ValueError(f"{model} needs inputs of at least {min_size}x{min_size} px, got {h}x{w}; resize the images")


def count_params(model: nnx.Module) -> int:
  """Number of trainable scalars (``nnx.Param`` leaves only; BatchNorm statistics excluded)."""
  return int(sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param))))
