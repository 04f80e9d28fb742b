"""BatchNorm whose training-mode backward pass is written out, for XLA:CPU.

Differentiating BatchNorm's forward formula leaves XLA:CPU several reductions
and broadcasts per layer in the backward pass; the textbook backward pass is two
per-channel sums, ``sum(g)`` and ``sum(g * x)``, then one elementwise pass. Forward and
backward of one 8x112x112x96 activation take 33 ms the first way and 24 ms the second
(``benchmarks/bench_batch_norm.py``; 1.4 to 1.9 times over the zoo's shapes). ``BatchNorm`` is
``nnx.BatchNorm`` with that backward pass on CPU in training mode, chosen by
``lax.platform_dependent`` as ``camjax.models.conv`` chooses its forms, so TPU and
GPU programs keep the differentiated formula. Parameters, batch statistics and
their paths are ``nnx.BatchNorm``'s, so checkpoints and weight maps are unchanged.
On CPU, training-mode BatchNorm therefore takes reverse-mode derivatives only
(``jax.grad``, ``jax.vjp``); evaluation mode is an affine map and takes any.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from flax import nnx


def _sums(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-channel sums of ``x`` and ``y`` over every axis but the last."""
  axes = tuple(range(x.ndim - 1))
  return jnp.sum(x, axes), jnp.sum(y, axes)


def _stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Batch mean and biased variance per channel, as ``nnx.BatchNorm`` computes them (E[x^2] - E[x]^2, >= 0)."""
  count = x.size // x.shape[-1]
  total, squares = _sums(x, x * x)
  mean = total / count
  return mean, jnp.maximum(0.0, squares / count - mean * mean)


def _normalize(x: jax.Array, mean: jax.Array, var: jax.Array, scale: jax.Array, bias: jax.Array,
               epsilon: float) -> jax.Array:
  return (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias


def batch_norm_formula(x: jax.Array, scale: jax.Array, bias: jax.Array,
                       epsilon: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(normalized ``x``, batch mean, batch variance) over all axes but the last; autodiff derives the backward pass."""
  mean, var = _stats(x)
  return _normalize(x, mean, var, scale, bias, epsilon), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_cpu(x: jax.Array, scale: jax.Array, bias: jax.Array,
                   epsilon: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``batch_norm_formula`` with the written-out backward pass (reverse mode only)."""
  return batch_norm_formula(x, scale, bias, epsilon)


def _forward(x, scale, bias, epsilon):
  y, mean, var = batch_norm_formula(x, scale, bias, epsilon)
  return (y, mean, var), (x, mean, var, scale)


def _backward(epsilon: float, residuals: tuple, cotangents: tuple) -> tuple[jax.Array, jax.Array, jax.Array]:
  x, mean, var, scale = residuals
  g, g_mean, g_var = cotangents
  count = x.size // x.shape[-1]
  inv = lax.rsqrt(var + epsilon)
  sum_g, sum_gx = _sums(g, g * x)
  sum_g_xhat = inv * (sum_gx - mean * sum_g)  # sum(g * (x - mean) * inv)
  # y depends on x directly and through the batch mean and variance; the two sums carry the latter.
  # The mean and variance outputs are batch statistics (stop_gradient in BatchNorm), kept exact all the same.
  a = scale * inv
  dx = a * g - (a * sum_g - g_mean) / count - (x - mean) * ((a * inv * sum_g_xhat - 2.0 * g_var) / count)
  return dx, sum_g_xhat, sum_g


batch_norm_cpu.defvjp(_forward, _backward)


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array,
                     epsilon: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm over every axis but the last: (output, batch mean, batch variance).

  The CPU program uses ``batch_norm_cpu``; TPU and GPU programs differentiate the formula.
  """
  return lax.platform_dependent(x, scale, bias, cpu=lambda *a: batch_norm_cpu(*a, epsilon),
                                default=lambda *a: batch_norm_formula(*a, epsilon))


class BatchNorm(nnx.BatchNorm):
  """``nnx.BatchNorm`` whose training-mode backward pass on CPU is ``batch_norm_cpu`` (see module docstring).

  The written-out path covers what the zoo uses: features on the last axis, scale
  and bias, the fast variance, no mask, no named axis (under ``jit`` a sharded batch
  gets its global statistics from the sums, as ``nnx.BatchNorm``'s means do). Any
  other use is ``nnx.BatchNorm``'s own.
  """

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *,
               mask: jax.Array | None = None) -> jax.Array:
    running = self.use_running_average if use_running_average is None else use_running_average
    simple = (mask is None and self.axis_name is None and self.use_fast_variance and x.ndim >= 2
              and self.scale is not None and self.bias is not None
              and tuple(a % x.ndim for a in ((self.axis,) if isinstance(self.axis, int) else self.axis))
              == (x.ndim - 1,))
    if running is None or running or not simple:
      return super().__call__(x, use_running_average, mask=mask)
    out_dtype = self.dtype or jnp.result_type(x, self.mean[...], self.var[...], self.scale[...], self.bias[...])
    compute: Any = jnp.promote_types(out_dtype, jnp.float32)
    y, mean, var = batch_norm_train(x.astype(compute), self.scale[...].astype(compute),
                                    self.bias[...].astype(compute), self.epsilon)
    mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
    self.mean[...] = self.momentum * self.mean[...] + (1 - self.momentum) * mean.astype(self.mean[...].dtype)
    self.var[...] = self.momentum * self.var[...] + (1 - self.momentum) * var.astype(self.var[...].dtype)
    return y.astype(out_dtype)
