"""The CPU forms of depthwise and 1x1 convolutions equal the convolution, in values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import export, lax

from camjax import models
from camjax.models import conv

NHWC = ("NHWC", "HWIO", "NHWC")


def _plain(x, k, strides, padding, groups=1):
  return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=NHWC, feature_group_count=groups,
                                  precision=lax.Precision.HIGHEST)


def _arrays(shape, kernel_shape, seed=0):
  kx, kk = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, shape, jnp.float32), jax.random.normal(kk, kernel_shape, jnp.float32)


def _pads(x, kernel, strides, padding):
  return conv.cpu_form(x.shape, kernel.shape, strides, padding, None, None, NHWC, x.shape[-1], 1)[1]


def _assert_same_values_and_grads(fast, plain, x, k, atol=1e-4):
  np.testing.assert_allclose(jax.jit(fast)(x, k), jax.jit(plain)(x, k), rtol=1e-5, atol=atol)
  # A random cotangent, so every output position weighs differently.
  cot = jax.random.normal(jax.random.key(9), jax.eval_shape(plain, x, k).shape)
  grads = lambda f: jax.jit(jax.grad(lambda x, k: jnp.vdot(f(x, k), cot), argnums=(0, 1)))(x, k)  # noqa: E731
  for got, want in zip(grads(fast), grads(plain)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)


DEPTHWISE_CASES = [(kernel, stride, size, "SAME") for kernel in (3, 5) for stride in (1, 2) for size in (7, 8)] + [
    (3, 1, 8, "VALID"), (5, 2, 9, "VALID"), (3, 2, 9, ((1, 2), (2, 0))), (5, 1, 7, ((0, 1), (3, 3)))]


@pytest.mark.parametrize("kernel,stride,size,padding", DEPTHWISE_CASES)
def test_depthwise_slices_equal_grouped_convolution(kernel, stride, size, padding):
  """``conv_general_dilated`` takes the slice form on this CPU; ``lax``'s is what other platforms run."""
  x, k = _arrays((2, size, size + 1, 6), (kernel, kernel, 1, 6))
  strides = (stride, stride)
  plain = lambda x, k: _plain(x, k, strides, padding, groups=6)  # noqa: E731
  dispatched = lambda x, k: conv.conv_general_dilated(x, k, strides, padding, dimension_numbers=NHWC,  # noqa: E731
                                                      feature_group_count=6)
  assert "convolution" not in jax.jit(dispatched).lower(x, k).as_text()
  _assert_same_values_and_grads(dispatched, plain, x, k)


@pytest.mark.parametrize("kernel,stride,size,padding,block_bytes", [
    (3, 1, 7, "SAME", 1), (5, 2, 11, "SAME", 1), (3, 2, 9, ((1, 2), (2, 0)), 4000), (5, 1, 12, "VALID", 6000)])
def test_depthwise_kernel_grad_in_row_blocks_equals_the_convolutions(kernel, stride, size, padding, block_bytes):
  """One row per block (1 byte) up to several rows; 7 and 11 output rows are prime, so the blocks are single rows."""
  x, k = _arrays((3, size, size + 1, 5), (kernel, kernel, 1, 5), seed=4)
  strides = (stride, stride)
  y, conv_vjp = jax.vjp(lambda k: _plain(x, k, strides, padding, groups=5), k)
  g = jax.random.normal(jax.random.key(5), y.shape)
  got = conv.depthwise_kernel_grad(x, g, (kernel, kernel), strides, _pads(x, k, strides, padding),
                                   block_bytes=block_bytes)
  np.testing.assert_allclose(got, conv_vjp(g)[0], rtol=1e-4, atol=1e-4)


def test_depthwise_slices_accumulate_in_float32():
  x, k = _arrays((1, 8, 8, 4), (5, 5, 1, 4))
  pads = _pads(x, k, (1, 1), "SAME")
  got = conv.depthwise_slices(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16), (1, 1), pads, jnp.bfloat16)
  want = conv.depthwise_slices(x.astype(jnp.bfloat16).astype(jnp.float32), k.astype(jnp.bfloat16).astype(jnp.float32),
                               (1, 1), pads, jnp.float32)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(got, want.astype(jnp.bfloat16))


@pytest.mark.parametrize("shape", [(2, 7, 7, 5), (3, 8, 6, 16)])
def test_pointwise_dot_equals_1x1_convolution(shape):
  x, k = _arrays(shape, (1, 1, shape[-1], 12), seed=1)
  plain = lambda x, k: _plain(x, k, (1, 1), "SAME")  # noqa: E731
  np.testing.assert_allclose(conv.pointwise_dot(x, k, x.dtype, lax.Precision.HIGHEST), plain(x, k), rtol=1e-5,
                             atol=1e-5)
  dispatched = lambda x, k: conv.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC,  # noqa: E731
                                                      precision=lax.Precision.HIGHEST)
  assert "convolution" not in jax.jit(dispatched).lower(x, k).as_text()
  _assert_same_values_and_grads(dispatched, plain, x, k)
  # Its derivative is the convolution's, in forward mode too.
  tangents = _arrays(shape, (1, 1, shape[-1], 12), seed=2)
  np.testing.assert_allclose(jax.jvp(dispatched, (x, k), tangents)[1], jax.jvp(plain, (x, k), tangents)[1],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jax.jvp(lambda x: dispatched(x, k), (x,), tangents[:1])[1],
                             jax.jvp(lambda x: plain(x, k), (x,), tangents[:1])[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,size,padding", [(3, 2, 9, "SAME"), (3, 1, 8, ((1, 1), (1, 1))),
                                                        (7, 2, 12, ((3, 3), (3, 3))), (11, 4, 23, "VALID")])
def test_patches_dot_equals_stem_convolution(kernel, stride, size, padding):
  x, k = _arrays((2, size, size + 2, 3), (kernel, kernel, 3, 8), seed=3)
  strides = (stride, stride)
  plain = lambda x, k: _plain(x, k, strides, padding)  # noqa: E731
  dispatched = lambda x, k: conv.conv_general_dilated(x, k, strides, padding, dimension_numbers=NHWC,  # noqa: E731
                                                      precision=lax.Precision.HIGHEST)
  assert "convolution" not in jax.jit(dispatched).lower(x, k).as_text()
  _assert_same_values_and_grads(dispatched, plain, x, k)


@pytest.mark.parametrize("kernel_shape,strides,padding,groups,lhs_dilation,rhs_dilation,want", [
    ((3, 3, 1, 8), (1, 1), "SAME", 8, None, None, "depthwise"),
    ((5, 5, 1, 8), (2, 2), "SAME", 8, (1, 1), (1, 1), "depthwise"),
    ((1, 1, 8, 4), (1, 1), "VALID", 1, None, None, "pointwise"),
    ((1, 1, 8, 4), (1, 1), ((0, 0), (0, 0)), 1, None, None, "pointwise"),
    ((3, 3, 8, 4), (1, 1), "SAME", 1, None, None, None),  # a dense 3x3 of 8 channels stays a convolution
    ((3, 3, 3, 4), (2, 2), "SAME", 1, None, None, "patches"),  # an RGB stem
    ((1, 1, 8, 4), (2, 2), "SAME", 1, None, None, None),  # strided 1x1
    ((1, 1, 8, 4), (1, 1), ((1, 1), (1, 1)), 1, None, None, None),  # padded 1x1
    ((3, 3, 2, 8), (1, 1), "SAME", 4, None, None, None),  # grouped, not depthwise
    ((3, 3, 1, 16), (1, 1), "SAME", 8, None, None, None),  # channel multiplier 2
    ((3, 3, 1, 8), (1, 1), "SAME", 8, None, (2, 2), None),  # dilated kernel
    ((3, 3, 1, 8), (1, 1), "SAME", 8, (2, 2), None, None),  # dilated input
])
def test_cpu_form_only_for_depthwise_and_pointwise(kernel_shape, strides, padding, groups, lhs_dilation,
                                                   rhs_dilation, want):
  channels = kernel_shape[2] * groups
  form = conv.cpu_form((2, 9, 9, channels), kernel_shape, strides, padding, lhs_dilation, rhs_dilation, NHWC, groups, 1)
  assert (form and form[0]) == want


def test_other_platforms_get_the_plain_convolution():
  x, k = _arrays((1, 8, 8, 4), (3, 3, 1, 4))
  f = jax.jit(lambda x, k: conv.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC,
                                                     feature_group_count=4))
  for platform in ("tpu", "cuda"):
    text = export.export(f, platforms=[platform])(x, k).mlir_module()
    assert "stablehlo.convolution" in text and "stablehlo.slice" not in text
  assert "stablehlo.convolution" not in export.export(f, platforms=["cpu"])(x, k).mlir_module()


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=(3, 3), strides=2, padding="SAME", feature_group_count=8, use_bias=False),
    dict(kernel_size=(5, 5), strides=1, padding="SAME", feature_group_count=8, use_bias=True),
    dict(kernel_size=(1, 1), use_bias=True),
    dict(kernel_size=(3, 3), padding=1),
])
@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_conv_module_is_nnx_conv_with_the_same_variables(kwargs, dtype):
  cout = 8 if "feature_group_count" in kwargs else 12
  plain = nnx.Conv(8, cout, dtype=dtype, rngs=nnx.Rngs(0), **kwargs)
  fast = conv.Conv(8, cout, dtype=dtype, rngs=nnx.Rngs(0), **kwargs)
  plain_state, fast_state = nnx.state(plain, nnx.Param), nnx.state(fast, nnx.Param)
  assert jax.tree.structure(plain_state) == jax.tree.structure(fast_state)
  assert [p.shape for p in jax.tree.leaves(plain_state)] == [p.shape for p in jax.tree.leaves(fast_state)]
  # A fresh layer filled with the other's parameters (a checkpoint) computes the same map.
  other = conv.Conv(8, cout, dtype=dtype, rngs=nnx.Rngs(1), **kwargs)
  nnx.update(other, plain_state)
  x = jax.random.normal(jax.random.key(2), (2, 9, 10, 8))
  want = nnx.jit(lambda m, x: m(x))(plain, x)
  got = nnx.jit(lambda m, x: m(x))(other, x)
  assert got.dtype == want.dtype == (dtype or jnp.float32)
  tol = 5e-2 if dtype == jnp.bfloat16 else 1e-4
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol)


def test_efficientnet_uses_the_cpu_forms_with_unchanged_parameters():
  """The same tiny network built on ``nnx.Conv`` has the same paths and shapes and the same outputs."""
  build = lambda: models.create("efficientnet_lite0", num_classes=5, width=0.25, depth=0.2, seed=0)  # noqa: E731
  fast = build()
  original = conv.conv_general_dilated
  conv.conv_general_dilated = lax.conv_general_dilated
  try:
    plain = build()
  finally:
    conv.conv_general_dilated = original
  assert any(isinstance(m, conv.Conv) and m.feature_group_count > 1 for _, m in nnx.iter_graph(fast))
  shapes = lambda m: jax.tree.map(lambda v: v.shape, nnx.to_pure_dict(nnx.state(m)))  # noqa: E731
  assert shapes(fast) == shapes(plain)
  nnx.update(fast, nnx.state(plain))
  fast.eval()
  plain.eval()
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  run = nnx.jit(lambda m, x: m(x))
  for got, want in zip(run(fast, x), run(plain, x)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_depthwise_gradients_keep_the_argument_dtypes_and_match_in_bfloat16():
  x, k = _arrays((2, 9, 9, 4), (3, 3, 1, 4), seed=6)
  dispatched = lambda x, k: conv.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=NHWC,  # noqa: E731
                                                      feature_group_count=4)
  grads = jax.grad(lambda x, k: jnp.sum(dispatched(x, k).astype(jnp.float32) ** 2), argnums=(0, 1))
  low = grads(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
  high = grads(x.astype(jnp.bfloat16).astype(jnp.float32), k.astype(jnp.bfloat16).astype(jnp.float32))
  assert [g.dtype for g in low] == [jnp.bfloat16, jnp.bfloat16]
  for got, want in zip(low, high):
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=0.05, atol=0.05 * float(jnp.abs(want).max()))
