"""The CAM family against identities that hold by construction, on tiny networks and 32 px images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from camjax import cam, methods, models, saliency
from camjax.errors import UserError
from camjax.methods import _core
from camjax.models.base import PoolingHead

LAYER = "blocks/1"  # the map global pooling reads in the tiny small_gap


@pytest.fixture(scope="module")
def model():
  net = models.create("small_gap", num_classes=5, widths=(4, 8), blocks_per_stage=1, use_bias=True, seed=1)
  net.head.classifier.kernel[...] = jax.random.normal(jax.random.key(2), net.head.classifier.kernel.shape)
  return net


@pytest.fixture(scope="module")
def images():
  return jax.random.normal(jax.random.key(3), (2, 32, 32, 3))


IDS = jnp.array([[3, 1], [0, 4]])


def _cam(model, images, ids):
  return cam.class_activation_maps(model, images, class_ids=ids, upsample=False).maps


def test_grad_cam_at_the_pooled_map_is_cam_over_hw(model, images):
  maps, logits = methods.grad_cam(model, images, layer=LAYER, class_ids=IDS, relu=False)
  reference = _cam(model, images, IDS)
  h, w = reference.shape[-2:]
  assert maps.shape == (2, 2, h, w) and logits.shape == (2, 5)
  np.testing.assert_allclose(maps * (h * w), reference, rtol=1e-4, atol=1e-5)
  relu_maps, _ = methods.grad_cam(model, images, layer=LAYER, class_ids=IDS)
  np.testing.assert_allclose(relu_maps * (h * w), np.maximum(reference, 0), rtol=1e-4, atol=1e-5)


def test_hires_cam_at_the_pooled_map_is_cam_over_hw(model, images):
  """There d y_c / d A(i, j) = w_c / (h w) at every position, so sum_k g_k A_k is CAM / (h w) pixel by pixel."""
  maps, _ = methods.hires_cam(model, images, layer=LAYER, class_ids=IDS, relu=False)
  reference = _cam(model, images, IDS)
  h, w = reference.shape[-2:]
  np.testing.assert_allclose(maps * (h * w), reference, rtol=1e-5, atol=1e-6)


def test_grad_cam_plus_plus_weights_at_the_pooled_map(model, images):
  """With g constant per channel: w_k = h w relu(g_k) / (2 + S_k g_k), S_k the channel's sum."""
  ids = IDS[:, :1]
  maps, _ = methods.grad_cam_plus_plus(model, images, layer=LAYER, class_ids=ids, relu=False, eps=0.0)
  model.eval()
  feats = model(images)[1]
  h, w = feats.shape[1:3]
  kernel = model.head.classifier.kernel[...]
  g = kernel.T[ids[:, 0]] / (h * w)  # (B, C)
  s = feats.sum(axis=(1, 2))
  weights = h * w * np.maximum(g, 0) / (2 + s * g)
  expected = np.einsum("bhwc,bc->bhw", feats, weights)
  np.testing.assert_allclose(maps[:, 0], expected, rtol=1e-4, atol=1e-6)
  smooth, _ = methods.smooth_grad_cam_plus_plus(model, images, layer=LAYER, class_ids=ids, relu=False, eps=0.0,
                                                noise_std=0.0, num_samples=2)
  np.testing.assert_allclose(smooth, maps, rtol=1e-5, atol=1e-7)


class _Spread(nnx.Module):
  """Each channel's mean, made positive, spread over the map: activations constant per channel."""

  def __call__(self, x):
    return jnp.broadcast_to(jax.nn.softplus(x.mean(axis=(1, 2), keepdims=True)) + 0.5, x.shape)


class _Rank1(nnx.Module):
  """u(x, y) v_c with u > 0 from the image and a fixed positive v: a rank-1 activation."""

  def __init__(self, channels):
    self.v = nnx.data(jnp.linspace(0.5, 2.0, channels))

  def __call__(self, x):
    u = jax.nn.softplus(x.mean(axis=-1, keepdims=True)) + 0.1
    return u * self.v


class _Toy(nnx.Module):
  """conv -> ``middle`` (tappable as "middle") -> position-dependent mixing -> GAP -> linear."""

  def __init__(self, middle, channels=6):
    rngs = nnx.Rngs(0)
    self.conv = nnx.Conv(3, channels, (3, 3), rngs=rngs)
    self.middle = middle
    self.mix = nnx.Conv(channels, channels, (1, 1), rngs=rngs)
    self.head = PoolingHead(channels, 4, use_bias=True, rngs=rngs)
    self.head.classifier.kernel[...] = jax.random.normal(jax.random.key(5), (channels, 4))

  def __call__(self, x):
    a = self.middle(self.conv(x))
    h, w = a.shape[1:3]
    pattern = jnp.linspace(-1.0, 2.0, h)[:, None, None] * jnp.linspace(0.5, 1.5, w)[None, :, None]
    y = jax.nn.relu(jnp.tanh(self.mix(a)) * pattern + 0.1)
    return self.head(y), y


def test_xgrad_cam_equals_grad_cam_on_activations_constant_per_channel(images):
  net = _Toy(_Spread())
  ids = jnp.array([[0, 2], [3, 1]])
  grad, _ = methods.grad_cam(net, images, layer="middle", class_ids=ids, relu=False)
  xgrad, _ = methods.xgrad_cam(net, images, layer="middle", class_ids=ids, relu=False, eps=0.0)
  assert float(jnp.std(grad)) > 0
  np.testing.assert_allclose(xgrad, grad, rtol=1e-4, atol=1e-6)


def test_eigen_cam_recovers_a_rank_one_activation(images):
  net = _Toy(_Rank1(6))
  maps, _ = methods.eigen_cam(net, images, layer="middle", class_ids=jnp.array([[0, 1], [2, 3]]), relu=False)
  u = jax.nn.softplus(net.conv(images).mean(axis=-1)) + 0.1  # (B, h, w)
  norm_v = float(jnp.linalg.norm(net.middle.v))
  centred = (u - u.mean(axis=(1, 2), keepdims=True)) * norm_v
  np.testing.assert_allclose(maps[:, 0], centred, rtol=1e-3, atol=1e-4)
  np.testing.assert_array_equal(maps[:, 0], maps[:, 1])  # class-agnostic
  uncentred, _ = methods.eigen_cam(net, images, layer="middle", relu=False, center=False)
  np.testing.assert_allclose(uncentred[:, 0], u * norm_v, rtol=1e-3, atol=1e-4)


def test_score_cam_does_not_depend_on_the_chunk_size(model, images):
  channels = 8 * images.shape[0]
  runs = [methods.score_cam(model, images, layer=LAYER, class_ids=IDS, chunk_size=c)[0] for c in (1, 3, channels)]
  for other in runs[1:]:
    np.testing.assert_allclose(other, runs[0], rtol=1e-6, atol=1e-7)
  noisy = [methods.ss_cam(model, images, layer=LAYER, class_ids=IDS, num_samples=2, chunk_size=c)[0] for c in (3, 64)]
  np.testing.assert_allclose(noisy[1], noisy[0], rtol=1e-6, atol=1e-7)


def test_score_cam_variants_reduce_to_score_cam(model, images):
  base, _ = methods.score_cam(model, images, layer=LAYER, class_ids=IDS, normalize_first=True)
  ss, _ = methods.ss_cam(model, images, layer=LAYER, class_ids=IDS, noise_std=0.0, num_samples=2)
  iscam, _ = methods.is_cam(model, images, layer=LAYER, class_ids=IDS, num_samples=1, integration="linear")
  np.testing.assert_allclose(ss, base, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(iscam, base, rtol=1e-5, atol=1e-7)
  assert float(base.min()) >= 0 and float(base.max()) > 0


def test_ablation_cam_at_the_pooled_map(model, images):
  """Zeroing channel k of the pooled map lowers y_c by w_kc mean(A_k): the weight is that over y_c."""
  ids = IDS[:, :1]
  maps, logits = methods.ablation_cam(model, images, layer=LAYER, class_ids=ids, relu=False, chunk_size=5)
  model.eval()
  feats = model(images)[1]
  kernel = model.head.classifier.kernel[...]
  y = jnp.take_along_axis(logits, ids, axis=1)  # (B, 1)
  weights = kernel.T[ids[:, 0]] * feats.mean(axis=(1, 2)) / y
  expected = jnp.einsum("bhwc,bc->bhw", feats, weights)
  np.testing.assert_allclose(maps[:, 0], expected, rtol=1e-4, atol=1e-5)


def test_integrated_gradients_completeness(model, images):
  ids = IDS[:, :1]
  maps, logits = methods.integrated_gradients(model, images, class_ids=ids, steps=64, chunk_size=32)
  model.eval()
  baseline_logits = model(jnp.zeros_like(images))[0]
  expected = jnp.take_along_axis(logits - baseline_logits, ids, axis=1)[:, 0]
  assert maps.shape == (2, 1, 32, 32)
  np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), expected, rtol=2e-2, atol=2e-3)


def test_smooth_grad_without_noise_is_backprop_saliency(model, images):
  plain, _ = methods.backprop_saliency(model, images, class_ids=IDS)
  smooth, _ = methods.smooth_grad(model, images, class_ids=IDS, noise_level=0.0, num_samples=3, chunk_size=4)
  np.testing.assert_allclose(smooth, plain, rtol=1e-5, atol=1e-8)
  single, ids = saliency.backprop_saliency(model, images, IDS[:, 0])
  np.testing.assert_allclose(single, plain[:, 0], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(methods.ALL))
def test_targets_none_b_and_bk_agree(name, model, images):
  fn = methods.ALL[name]
  kw = {} if name in methods.ATTRIBUTION else {"layer": LAYER}
  kw.update({"ss_cam": {"num_samples": 2}, "is_cam": {"num_samples": 2}, "smooth_grad": {"num_samples": 2},
             "smooth_grad_cam_plus_plus": {"num_samples": 2}, "integrated_gradients": {"steps": 4}}.get(name, {}))
  both, logits = fn(model, images, class_ids=IDS, **kw)
  top1, _ = fn(model, images, **kw)
  assert both.shape[:2] == (2, 2) and top1.shape[:2] == (2, 1) and logits.shape == (2, 5)
  for k in range(2):
    single, _ = fn(model, images, class_ids=IDS[:, k], **kw)
    np.testing.assert_allclose(single[:, 0], both[:, k], rtol=1e-4, atol=1e-6)
  given_top1, _ = fn(model, images, class_ids=jnp.argmax(logits, axis=1), **kw)
  np.testing.assert_allclose(top1, given_top1, rtol=1e-5, atol=1e-7)
  assert bool(jnp.all(jnp.isfinite(both)))


def test_upsample_jit_and_no_retrace(model, images):
  methods.grad_cam(model, images, layer=LAYER, class_ids=IDS)
  before = _core.run._cache_size()
  maps, _ = methods.grad_cam(model, images + 1.0, layer=LAYER, class_ids=IDS + 0)
  assert _core.run._cache_size() == before
  up, _ = methods.grad_cam(model, images, layer=LAYER, class_ids=IDS, upsample=True)
  assert up.shape == (2, 2, 32, 32)
  np.testing.assert_allclose(up, cam.upsample_maps(methods.grad_cam(model, images, layer=LAYER, class_ids=IDS)[0],
                                                   (32, 32)), rtol=1e-6, atol=1e-8)


def test_layer_cam_fuses_several_layers(model, images):
  single, _ = methods.layer_cam(model, images, layer=LAYER, class_ids=IDS)
  fused, _ = methods.layer_cam(model, images, layer=["blocks/0", LAYER], class_ids=IDS)
  assert single.shape == (2, 2, 16, 16) and fused.shape == (2, 2, 32, 32)
  assert float(fused.min()) >= 0 and float(fused.max()) <= np.tanh(2.0) + 1e-6
  mean, _ = methods.layer_cam(model, images, layer=("blocks/0", LAYER), class_ids=IDS, fusion="mean", upsample=True)
  assert mean.shape == (2, 2, 32, 32) and float(mean.max()) <= 1.0


def test_aug_smooth_is_flip_equivariant_and_eigen_smooth_runs(model, images):
  maps, _ = methods.grad_cam(model, images, layer=LAYER, class_ids=IDS, aug_smooth=True, upsample=True)
  flipped, _ = methods.grad_cam(model, images[:, :, ::-1], layer=LAYER, class_ids=IDS, aug_smooth=True,
                                upsample=True)
  np.testing.assert_allclose(flipped, maps[..., ::-1], rtol=1e-4, atol=1e-5)
  assert float(maps.min()) >= 0 and float(maps.max()) <= 1
  smooth, _ = methods.hires_cam(model, images, layer=LAYER, class_ids=IDS, eigen_smooth=True)
  assert smooth.shape == (2, 2, 16, 16) and bool(jnp.all(jnp.isfinite(smooth)))


def test_maps_are_differentiable(model, images):
  for fn in (methods.grad_cam, methods.score_cam):
    grad = jax.grad(lambda x, fn=fn: fn(model, x, layer=LAYER, class_ids=IDS, chunk_size=8)[0].sum()
                    if fn is methods.score_cam else fn(model, x, layer=LAYER, class_ids=IDS)[0].sum())(images)
    assert grad.shape == images.shape and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


def test_bad_layers_list_the_valid_ones(model, images):
  assert methods.layer_names(model) == ["blocks/0/conv", "blocks/0/norm", "blocks/0", "blocks/1/conv",
                                        "blocks/1/norm", "blocks/1"]
  with pytest.raises(UserError, match=r"no layer 'blocks/9'.*blocks/\{0,1\}/conv.*layer_names") as err:
    methods.grad_cam(model, images, layer="blocks/9")
  assert "\n" not in str(err.value)
  with pytest.raises(UserError, match="not a \\(B, h, w, C\\) map"):
    methods.score_cam(model, images, layer="head")
  with pytest.raises(UserError, match="no layer"):
    saliency.grad_cam(model, images, "blocks/9")
  with pytest.raises(UserError, match="takes no layer"):
    methods.integrated_gradients(model, images, layer=LAYER)
  with pytest.raises(UserError, match="class_ids"):
    methods.grad_cam(model, images, layer=LAYER, class_ids=jnp.array([1, 2, 3]))
  with pytest.raises(UserError, match="fusion"):
    methods.layer_cam(model, images, layer=LAYER, fusion="sum")
  with pytest.raises(UserError, match=r"noise must be \(num_samples, B, H, W, C\)"):
    methods.smooth_grad_cam_plus_plus(model, images, layer=LAYER, noise=jnp.zeros(images.shape))
  with pytest.raises(UserError, match="definition"):
    methods.smooth_grad_cam_plus_plus(model, images, layer=LAYER, definition="pytorch")


def test_efficientnet_head_activation_is_targetable():
  net = models.create("efficientnet_lite0", num_classes=4, width=0.25, depth=0.2, seed=0)
  net.head.classifier.kernel[...] = jax.random.normal(jax.random.key(1), net.head.classifier.kernel.shape)
  x = jax.random.normal(jax.random.key(2), (1, 64, 64, 3))
  assert "head_act" in methods.layer_names(net)
  ids = jnp.array([[2]])
  maps, _ = methods.grad_cam(net, x, layer="head_act", class_ids=ids, relu=False)
  reference = _cam(net, x, ids)
  h, w = reference.shape[-2:]
  np.testing.assert_allclose(maps * (h * w), reference, rtol=1e-4, atol=1e-5)
