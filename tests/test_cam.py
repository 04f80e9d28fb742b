"""CAM kernel: the identity logits == mean(CAM) + bias, linearity, top-k, shapes, dtypes."""

import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from camjax import cam, models
from camjax.models import NotCamCompatible


def _random_head(model, seed=0, bias=True):
  """Give the classifier weights (and bias) of a realistic scale, so the identity is not trivially small."""
  kernel = model.head.classifier.kernel
  rng = np.random.default_rng(seed)
  kernel[...] = jnp.asarray(rng.normal(0, 1, kernel.shape), jnp.float32)
  if bias:
    model.head.classifier.bias[...] = jnp.asarray(rng.normal(0, 1, model.head.classifier.bias.shape), jnp.float32)
  return model


@pytest.fixture(scope="module")
def images():
  return jax.random.normal(jax.random.key(1), (3, 32, 32, 3))


def _small(pooling="gap", use_bias=True, dtype=None):
  kw = {} if dtype is None else {"dtype": dtype}
  model = models.create("small_gap", num_classes=7, pooling=pooling, widths=(8, 16), blocks_per_stage=1,
                        use_bias=use_bias, seed=3, **kw)
  return _random_head(model, bias=use_bias)


def test_gap_logits_equal_mean_cam_plus_bias(images):
  model = _small()
  out = cam.class_activation_maps(model, images, class_ids="all", upsample=False)
  _, bias = model.cam_weights()
  assert out.maps.shape == (3, 7, 16, 16)
  np.testing.assert_allclose(out.maps.mean(axis=(2, 3)) + bias, out.logits, rtol=1e-5, atol=1e-5)
  assert np.abs(out.logits).max() > 1.0  # a non-trivial check


def test_gmp_logits_equal_max_of_features_times_weights(images):
  model = _small(pooling="gmp")
  model.eval()
  logits, features = model(images)
  kernel, bias = model.cam_weights()
  np.testing.assert_allclose(features.max(axis=(1, 2)) @ kernel + bias, logits, rtol=1e-5, atol=1e-5)
  out = cam.class_activation_maps(model, images, class_ids="all", upsample=False)
  expected = np.einsum("bhwk,kc->bchw", np.asarray(features), np.asarray(kernel))
  np.testing.assert_allclose(out.maps, expected, rtol=1e-5, atol=1e-5)


def test_cam_is_linear_in_class_weights(images):
  model = _small()
  model.eval()
  _, features = model(images)
  rng = np.random.default_rng(0)
  w1, w2 = (jnp.asarray(rng.normal(size=(16, 4)), jnp.float32) for _ in range(2))
  ids = jnp.tile(jnp.arange(4), (3, 1))
  combined = cam.maps_from_features(features, 2.0 * w1 - 0.5 * w2, ids)
  separate = 2.0 * cam.maps_from_features(features, w1, ids) - 0.5 * cam.maps_from_features(features, w2, ids)
  np.testing.assert_allclose(combined, separate, rtol=1e-5, atol=1e-5)


def test_top_k_is_argsort_of_logits_and_probs_are_softmax(images):
  model = _small()
  out = cam.class_activation_maps(model, images, top_k=4)
  logits = np.asarray(out.logits)
  np.testing.assert_array_equal(out.class_ids, np.argsort(-logits, axis=1)[:, :4])
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  np.testing.assert_allclose(out.probs, np.take_along_axis(probs, np.asarray(out.class_ids), 1), rtol=1e-5)
  assert out.maps.shape == (3, 4, 16, 16) and out.upsampled.shape == (3, 4, 32, 32)


def test_given_class_ids_per_image(images):
  model = _small()
  all_maps = cam.class_activation_maps(model, images, class_ids="all", upsample=False).maps
  out = cam.class_activation_maps(model, images, class_ids=jnp.array([6, 0, 3]), upsample=False)
  assert out.class_ids.shape == (3, 1)
  for b, c in enumerate([6, 0, 3]):
    np.testing.assert_allclose(out.maps[b, 0], all_maps[b, c], rtol=1e-6)
  pairs = cam.class_activation_maps(model, images, class_ids=jnp.array([[1, 2], [2, 1], [0, 0]]), upsample=False)
  np.testing.assert_allclose(pairs.maps[1, 1], all_maps[1, 1], rtol=1e-6)


def test_upsampling_is_bilinear_with_half_pixel_centres(images):
  model = _small()
  out = cam.class_activation_maps(model, images, top_k=2)
  maps = np.asarray(out.maps)
  for b in range(3):
    for k in range(2):
      reference = cv2.resize(maps[b, k], (32, 32), interpolation=cv2.INTER_LINEAR)
      np.testing.assert_allclose(out.upsampled[b, k], reference, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_close_to_float32(images):
  f32 = _small()
  bf16 = _small(dtype=jnp.bfloat16)
  out32 = cam.class_activation_maps(f32, images, class_ids="all", upsample=False)
  out16 = cam.class_activation_maps(bf16, images.astype(jnp.bfloat16), class_ids="all", upsample=False)
  assert out16.maps.dtype == jnp.float32
  scale = float(np.abs(out32.maps).max())
  np.testing.assert_allclose(out16.maps, out32.maps, atol=0.05 * scale)


def test_bad_arguments_fail_clearly(images):
  model = _small()
  with pytest.raises(ValueError, match="class_ids"):
    cam.class_activation_maps(model, images, class_ids="some")
  with pytest.raises(ValueError, match="top_k"):
    cam.class_activation_maps(model, images, top_k=8)
  with pytest.raises(ValueError, match="class_ids"):
    cam.class_activation_maps(model, images, class_ids=jnp.array([1, 2]))
  with pytest.raises(ValueError, match="images"):
    cam.class_activation_maps(model, images[0])


class _FullyConnected(nnx.Module):

  def __init__(self):
    self.fc = nnx.Linear(12, 3, rngs=nnx.Rngs(0))

  def __call__(self, x):
    return self.fc(x.reshape(x.shape[0], -1)), x


def test_model_without_pooling_head_is_refused(images):
  with pytest.raises(NotCamCompatible, match="grad_cam"):
    cam.class_activation_maps(_FullyConnected(), images[:, :2, :2, :])


_SIZES = {"alexnet_gap": 227, "alexnet_star_gap": 227, "alexnet": 227}


@pytest.mark.parametrize("name", [n for n in models.names() if n != "small_gap"])
def test_every_zoo_model_gives_cams_at_full_size(name):
  """Shapes through the jitted kernel for the full-size networks, without compiling them."""
  abstract = nnx.eval_shape(lambda: models.create(name, num_classes=1000))
  size = _SIZES.get(name, 224)
  graphdef, state = nnx.split(abstract)
  images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  step = functools.partial(cam._cam_step, graphdef=graphdef, top_k=5, upsample=True, class_mode="top_k")
  run = lambda s, x: step(state=s, images=x, class_ids=None)
  if name in ("alexnet", "vgg16"):  # fully connected heads: CAM is undefined, Grad-CAM serves them
    with pytest.raises(NotCamCompatible):
      jax.eval_shape(run, state, images)
    return
  out = jax.eval_shape(run, state, images)
  assert out.logits.shape == (2, 1000)
  assert out.maps.shape[:2] == (2, 5) and out.upsampled.shape == (2, 5, size, size)
