"""camjax's BatchNorm equals nnx.BatchNorm: outputs, running statistics and gradients, on the CPU form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import export

from camjax.models import norm


def _pair(channels, seed=0, **kwargs):
  """An nnx.BatchNorm and a camjax BatchNorm with the same random scale, bias and running statistics."""
  ours = norm.BatchNorm(channels, rngs=nnx.Rngs(0), **kwargs)
  theirs = nnx.BatchNorm(channels, rngs=nnx.Rngs(0), **kwargs)
  keys = jax.random.split(jax.random.key(seed), 4)
  for layer in (ours, theirs):
    layer.scale[...] = 1.0 + 0.5 * jax.random.normal(keys[0], (channels,))
    layer.bias[...] = jax.random.normal(keys[1], (channels,))
    layer.mean[...] = jax.random.normal(keys[2], (channels,))
    layer.var[...] = jnp.exp(jax.random.normal(keys[3], (channels,)))
  return ours, theirs


def _loss_and_grads(layer, x, weights, **call):
  """ReLU of the output against fixed weights (as a ReLU after BatchNorm sees it): loss, output, grads, stats."""

  @nnx.jit
  def run(module, x):
    def loss(module, x):
      y = module(x, **call)
      return jnp.sum(jnp.maximum(y, 0) * weights), y
    (value, y), grads = nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(module, x)
    return value, y, grads, nnx.state(module, nnx.BatchStat)

  return run(layer, x)


@pytest.mark.parametrize("shape", [(4, 5, 7, 6), (3, 11, 13, 16), (64, 3)])
def test_training_matches_nnx_batch_norm(shape):
  x = 3.0 * jax.random.normal(jax.random.key(1), shape) + 2.0
  weights = jax.random.normal(jax.random.key(2), shape)
  ours, theirs = _pair(shape[-1], momentum=0.9)
  theirs_before = np.asarray(theirs.mean[...])
  got = _loss_and_grads(ours, x, weights, use_running_average=False)
  want = _loss_and_grads(theirs, x, weights, use_running_average=False)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
  # The running statistics moved (the comparison above is not of two untouched copies).
  assert not np.allclose(got[3]["mean"][...], theirs_before)


def test_written_backward_pass_equals_the_formulas_derivative_for_every_output():
  """Cotangents on the batch mean and variance too (BatchNorm stops them; the function stays exact)."""
  x = 2.0 * jax.random.normal(jax.random.key(3), (6, 5, 4, 8)) - 1.0
  scale = jax.random.normal(jax.random.key(4), (8,))
  bias = jax.random.normal(jax.random.key(5), (8,))
  cot = (jax.random.normal(jax.random.key(6), x.shape), jax.random.normal(jax.random.key(7), (8,)),
         jax.random.normal(jax.random.key(8), (8,)))
  outs = {}
  for name, f in (("cpu", norm.batch_norm_cpu), ("formula", norm.batch_norm_formula)):
    value, vjp = jax.vjp(lambda x, s, b: f(x, s, b, 1e-3), x, scale, bias)
    outs[name] = (value, vjp(cot))
  for g, w in zip(jax.tree.leaves(outs["cpu"]), jax.tree.leaves(outs["formula"])):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_bfloat16_layer_keeps_nnx_dtypes_and_values():
  x = jax.random.normal(jax.random.key(9), (4, 6, 6, 8)).astype(jnp.bfloat16)
  weights = jax.random.normal(jax.random.key(10), x.shape)
  ours, theirs = _pair(8, dtype=jnp.bfloat16)
  got = _loss_and_grads(ours, x, weights, use_running_average=False)
  want = _loss_and_grads(theirs, x, weights, use_running_average=False)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.dtype == w.dtype
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=0.05, atol=0.05)


def test_evaluation_mode_and_masked_statistics_are_nnx_batch_norms_own():
  x = jax.random.normal(jax.random.key(11), (5, 4, 4, 3))
  ours, theirs = _pair(3)
  np.testing.assert_array_equal(ours(x, use_running_average=True), theirs(x, use_running_average=True))
  mask = jnp.arange(5 * 4 * 4).reshape(5, 4, 4, 1) % 3 > 0
  np.testing.assert_array_equal(ours(x, use_running_average=False, mask=mask),
                                theirs(x, use_running_average=False, mask=mask))


def test_cpu_form_takes_reverse_mode_only_and_plain_formula_both():
  x = jax.random.normal(jax.random.key(12), (4, 3))
  ones, zeros = jnp.ones(3), jnp.zeros(3)
  jax.jvp(lambda x: norm.batch_norm_formula(x, ones, zeros, 1e-5)[0], (x,), (x,))
  with pytest.raises(TypeError, match="custom_vjp"):
    jax.jvp(lambda x: norm.batch_norm_cpu(x, ones, zeros, 1e-5)[0], (x,), (x,))


def test_other_platforms_differentiate_the_formula():
  """TPU and GPU programs never see the written-out pass: forward mode exports there, and fails on CPU."""
  x = jax.random.normal(jax.random.key(13), (4, 3))
  ones, zeros = jnp.ones(3), jnp.zeros(3)
  f = jax.jit(lambda x, t: jax.jvp(lambda x: norm.batch_norm_train(x, ones, zeros, 1e-5)[0], (x,), (t,)))
  for platform in ("tpu", "cuda"):
    assert "stablehlo" in export.export(f, platforms=[platform])(x, x).mlir_module()
  with pytest.raises(TypeError, match="custom_vjp"):
    export.export(f, platforms=["cpu"])(x, x)
