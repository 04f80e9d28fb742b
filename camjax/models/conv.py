"""Convolutions with a faster form on XLA:CPU for depthwise, 1x1 and RGB-stem kernels.

XLA's CPU convolution is slow for grouped and pointwise kernels: a 3x3 depthwise
convolution of 8x56x56x144 takes ~94 ms as ``lax.conv_general_dilated`` and ~3 ms
as the sum of nine shifted slices scaled per channel; a 1x1 convolution is about
twice as fast as a matrix product, and a 3x3/2 stem on RGB (3 -> 32 channels) three times
as fast as one product over 27-wide patches. ``conv_general_dilated`` here has the signature
of ``lax``'s and picks these forms with ``lax.platform_dependent``, so a program
compiled for TPU or GPU holds the plain convolution and only CPU programs change.
The slices' input gradient is their own derivative; their kernel gradient is summed in
cache-sized blocks of rows (``depthwise_kernel_grad``; the derivative of the slices reads
the whole input once per tap, the convolution's is slower still), so on CPU these layers
take reverse-mode derivatives only (``jax.grad``, ``jax.vjp``), not ``jax.jvp``. The 1x1 and
patch products keep the convolution's derivative, so a train step runs the same backward
pass as before (the product's transposes were ~15% slower).
``Conv`` is ``nnx.Conv`` using it: same parameters (``kernel`` (kh, kw, in/groups,
out), ``bias``), same paths, so checkpoints and weight maps are unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero
from flax import nnx

# Dense convolutions of at most this many input channels (RGB stems) run as a product over patches.
PATCH_CHANNELS = 4
# Input bytes per block of rows when summing a depthwise kernel's gradient (cache-sized; 0.5 to 2 MB all do).
BLOCK_BYTES = 1 << 20
_NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _all_ones(values: Sequence[int] | None) -> bool:
  return values is None or all(v == 1 for v in values)


def _pad_and_stride(x: jax.Array, pads: Sequence[tuple[int, int]], strides: Sequence[int],
                    window: Sequence[int]) -> tuple[jax.Array, tuple[int, int]]:
  """Pad the spatial axes (negative pads crop, as in ``lax``) and return the output size of ``window``."""
  x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
  out = tuple((size - k) // s + 1 for size, k, s in zip(x.shape[1:3], window, strides))
  return x, out


def depthwise_slices(x: jax.Array, kernel: jax.Array, strides: Sequence[int], pads: Sequence[tuple[int, int]],
                     out_dtype: Any) -> jax.Array:
  """Depthwise NHWC convolution (kernel (kh, kw, 1, C)) as a sum of shifted, per-channel-scaled slices.

  Products are accumulated in at least float32, as the convolution would.
  """
  kh, kw = kernel.shape[:2]
  acc = jnp.promote_types(out_dtype, jnp.float32)
  x, (ho, wo) = _pad_and_stride(x, pads, strides, (kh, kw))
  x, kernel = x.astype(acc), kernel.astype(acc)
  n, _, _, c = x.shape
  sh, sw = strides
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
      term = tap * kernel[i, j, 0]
      out = term if out is None else out + term
  return out.astype(out_dtype)


def depthwise_kernel_grad(x: jax.Array, g: jax.Array, window: Sequence[int], strides: Sequence[int],
                          pads: Sequence[tuple[int, int]], block_bytes: int = BLOCK_BYTES) -> jax.Array:
  """Gradient of ``depthwise_slices`` with respect to its kernel: (kh, kw, 1, C), float32 or wider.

  Tap (i, j) of channel c is the sum over images and positions of the input shifted
  by (i, j) times the output gradient ``g``. Summed tap by tap over the whole
  tensors, each tap reads both from memory (25 passes for a 5x5 kernel); here a
  ``scan`` walks blocks of output rows of all images (about ``block_bytes`` of input
  each, so they stay in cache) and sums every tap of a block at once, 1.4 to 5 times
  faster on XLA:CPU. Rows only, never the batch axis: a batch sharded over devices
  stays sharded, with one all-reduce at the end.
  """
  kh, kw = window
  acc = jnp.promote_types(g.dtype, jnp.float32)
  xp, (ho, wo) = _pad_and_stride(x, pads, strides, (kh, kw))
  xp, g = xp.astype(acc), g.astype(acc)
  n, _, wp, c = xp.shape
  sh, sw = strides
  rows = max(1, min(ho, block_bytes // max(1, n * sh * wp * c * acc.itemsize)))
  while ho % rows:
    rows -= 1

  def block(total, m):
    xs = lax.dynamic_slice(xp, (0, m * rows * sh, 0, 0), (n, (rows - 1) * sh + kh, wp, c))
    gs = lax.dynamic_slice(g, (0, m * rows, 0, 0), (n, rows, wo, c))
    # A strided kernel's taps fall on sh x sw phases of the input: split once, then every tap is a plain slice.
    phases = {(a, b): lax.slice(xs, (0, a, b, 0), xs.shape, (1, sh, sw, 1))
              for a in range(min(sh, kh)) for b in range(min(sw, kw))}
    taps = [jnp.sum(lax.slice(phases[i % sh, j % sw], (0, i // sh, j // sw, 0), (n, i // sh + rows, j // sw + wo, c))
                    * gs, axis=(1, 2)) for i in range(kh) for j in range(kw)]
    return total + jnp.stack(taps, axis=1), None

  zeros = jnp.zeros((n, kh * kw, c), acc)
  if rows == ho:  # one block: no loop to compile
    total, _ = block(zeros, 0)
  else:
    total, _ = lax.scan(block, zeros, jnp.arange(ho // rows))
  return total.sum(0).reshape(kh, kw, 1, c)


def depthwise_input_grad(g: jax.Array, kernel: jax.Array, x_shape: Sequence[int], strides: Sequence[int],
                         pads: Sequence[tuple[int, int]], x_dtype: Any) -> jax.Array:
  """Gradient of ``depthwise_slices`` with respect to its input, phase by phase.

  Differentiating a strided slice gives an interior-padded array per tap; instead,
  each of the sh x sw phases of the (padded) input gets a unit-stride sum of shifted
  slices of ``g``, and the phases are interleaved once. Stride 1 is one phase.
  """
  kh, kw = kernel.shape[:2]
  sh, sw = strides
  n, _, _, c = g.shape
  acc = jnp.promote_types(g.dtype, jnp.float32)
  g, kernel = g.astype(acc), kernel.astype(acc)
  hp = x_shape[1] + pads[0][0] + pads[0][1]
  wp = x_shape[2] + pads[1][0] + pads[1][1]
  hs, ws = -(-hp // sh), -(-wp // sw)  # rows and columns of a phase
  ph, pw = -(-kh // sh), -(-kw // sw)  # taps of a phase along each axis
  ho, wo = g.shape[1:3]
  gp = lax.pad(g, jnp.zeros((), acc), [(0, 0, 0), (ph - 1, hs - ho, 0), (pw - 1, ws - wo, 0), (0, 0, 0)])
  phases = []
  for a in range(sh):
    for b in range(sw):
      total = jnp.zeros((n, hs, ws, c), acc)
      for p in range((kh - a + sh - 1) // sh):
        for q in range((kw - b + sw - 1) // sw):
          shifted = lax.slice(gp, (0, ph - 1 - p, pw - 1 - q, 0), (n, ph - 1 - p + hs, pw - 1 - q + ws, c))
          total = total + shifted * kernel[a + sh * p, b + sw * q, 0]
      phases.append(total)
  full = jnp.stack(phases).reshape(sh, sw, n, hs, ws, c).transpose(2, 3, 0, 4, 1, 5).reshape(n, hs * sh, ws * sw, c)
  padded = full[:, :hp, :wp]
  return lax.pad(padded, jnp.zeros((), acc), [(0, 0, 0), (-pads[0][0], -pads[0][1], 0), (-pads[1][0], -pads[1][1], 0),
                                              (0, 0, 0)]).astype(x_dtype)


def _depthwise_cpu(strides: Sequence[int], pads: Sequence[tuple[int, int]], out_dtype: Any) -> Callable:
  """``depthwise_slices`` with its kernel gradient from ``depthwise_kernel_grad`` (reverse mode only)."""

  @jax.custom_vjp
  def f(x, kernel):
    return depthwise_slices(x, kernel, strides, pads, out_dtype)

  def f_fwd(x, kernel):
    return f(x, kernel), (x, kernel)

  def f_bwd(residuals, g):
    x, kernel = residuals
    return (depthwise_input_grad(g, kernel, x.shape, strides, pads, x.dtype),
            depthwise_kernel_grad(x, g, kernel.shape[:2], strides, pads).astype(kernel.dtype))

  f.defvjp(f_fwd, f_bwd)
  return f


def pointwise_dot(x: jax.Array, kernel: jax.Array, out_dtype: Any, precision: lax.PrecisionLike = None) -> jax.Array:
  """1x1 NHWC convolution (kernel (1, 1, C, D), stride 1, no padding) as a matrix product over channels."""
  return jnp.einsum("nhwc,cd->nhwd", x, kernel[0, 0], precision=precision,
                    preferred_element_type=out_dtype).astype(out_dtype)


def patches_dot(x: jax.Array, kernel: jax.Array, strides: Sequence[int], pads: Sequence[tuple[int, int]],
                out_dtype: Any, precision: lax.PrecisionLike = None) -> jax.Array:
  """Dense NHWC convolution of few input channels (an image stem) as one product over (kh, kw, C) patches."""
  kh, kw, c, d = kernel.shape
  x, (ho, wo) = _pad_and_stride(x, pads, strides, (kh, kw))
  n = x.shape[0]
  sh, sw = strides
  taps = [lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return jnp.einsum("nhwk,kd->nhwd", jnp.concatenate(taps, axis=-1), kernel.reshape(kh * kw * c, d),
                    precision=precision, preferred_element_type=out_dtype).astype(out_dtype)


def cpu_form(lhs_shape: Sequence[int], rhs_shape: Sequence[int], window_strides: Sequence[int],
             padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None,
             rhs_dilation: Sequence[int] | None, dimension_numbers: Any, feature_group_count: int,
             batch_group_count: int) -> tuple[str, list[tuple[int, int]]] | None:
  """("depthwise" | "pointwise" | "patches", explicit pads) when a convolution has a faster CPU form, else None."""
  if len(lhs_shape) != 4 or batch_group_count != 1 or not (_all_ones(lhs_dilation) and _all_ones(rhs_dilation)):
    return None
  if lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) != _NHWC:
    return None
  kh, kw, cin_per_group, cout = rhs_shape
  channels = lhs_shape[3]
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs_shape[1:3], (kh, kw), window_strides, padding)
  else:
    pads = [tuple(p) for p in padding]
  if feature_group_count == channels and cin_per_group == 1 and cout == channels and channels > 1:
    return "depthwise", pads
  if feature_group_count == 1 and (kh, kw) == (1, 1) and _all_ones(window_strides) and all(
      p == (0, 0) for p in pads):
    return "pointwise", pads
  if feature_group_count == 1 and channels <= PATCH_CHANNELS and kh * kw > 1:
    return "patches", pads
  return None


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision: lax.PrecisionLike = None, preferred_element_type: Any = None,
                         out_sharding: Any = None) -> jax.Array:
  """``lax.conv_general_dilated``, computed as slices (depthwise) or a matrix product (1x1) on CPU."""
  kwargs = {"out_sharding": out_sharding} if out_sharding is not None else {}
  conv = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type,
      **kwargs)
  form = None if out_sharding is not None else cpu_form(
      lhs.shape, rhs.shape, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count)
  if form is None:
    return conv(lhs, rhs)
  kind, pads = form
  out_dtype = preferred_element_type or jnp.result_type(lhs, rhs)
  if kind == "depthwise":
    fast = _depthwise_cpu(window_strides, pads, out_dtype)
  elif kind == "pointwise":
    fast = _with_derivative_of(lambda x, k: pointwise_dot(x, k, out_dtype, precision), conv)
  else:
    fast = _with_derivative_of(lambda x, k: patches_dot(x, k, window_strides, pads, out_dtype, precision), conv)
  return lax.platform_dependent(lhs, rhs, cpu=fast, default=conv)


def _with_derivative_of(fast: Callable, conv: Callable) -> Callable:
  """``fast`` with ``conv``'s derivative: the tangent (and, transposed, the gradient) is the convolution's.

  Training then runs the convolution's backward pass, which XLA:CPU does faster for 1x1
  kernels than the transposes of a matrix product, while inference gets the product.
  """
  @jax.custom_jvp
  def f(x, k):
    return fast(x, k)

  def f_jvp(primals, tangents):
    (x, k), (tx, tk) = primals, tangents
    terms = [conv(tx, k)] if not isinstance(tx, SymbolicZero) else []
    if not isinstance(tk, SymbolicZero):
      terms.append(conv(x, tk))
    y = fast(x, k)
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)

  f.defjvp(f_jvp, symbolic_zeros=True)
  return f


class Conv(nnx.Conv):
  """``nnx.Conv`` whose depthwise, 1x1 and stem convolutions take the faster CPU form (see module docstring)."""

  def __init__(self, *args: Any, **kwargs: Any):
    kwargs.setdefault("conv_general_dilated", conv_general_dilated)
    super().__init__(*args, **kwargs)
