"""Gradient baselines: Grad-CAM reduces to CAM on a GAP head; saliency is a real input gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax import cam, models, saliency


@pytest.fixture(scope="module")
def model():
  net = models.create("small_gap", num_classes=5, widths=(8, 16), blocks_per_stage=1, use_bias=True, seed=1)
  net.head.classifier.kernel[...] = jax.random.normal(jax.random.key(2), net.head.classifier.kernel.shape)
  return net


@pytest.fixture(scope="module")
def images():
  return jax.random.normal(jax.random.key(3), (2, 24, 24, 3))


def test_grad_cam_at_feature_layer_equals_cam_up_to_positive_factor(model, images):
  """With GAP, d logit_c / d f_k(x, y) = w_k^c / (h w), so Grad-CAM = CAM / (h w) before the ReLU."""
  ids = jnp.array([3, 1])
  maps, got_ids = saliency.grad_cam(model, images, "blocks/1", ids, relu=False, upsample=False)
  reference = cam.class_activation_maps(model, images, class_ids=ids, upsample=False).maps[:, 0]
  h, w = reference.shape[1:]
  np.testing.assert_array_equal(got_ids, ids)
  np.testing.assert_allclose(maps * (h * w), reference, rtol=1e-4, atol=1e-5)
  relu_maps, _ = saliency.grad_cam(model, images, "blocks.1", ids, upsample=False)
  np.testing.assert_allclose(relu_maps * (h * w), np.maximum(reference, 0), rtol=1e-4, atol=1e-5)


def test_grad_cam_upsampled_shape_and_top1_default(model, images):
  maps, ids = saliency.grad_cam(model, images, "blocks/0")
  assert maps.shape == (2, 24, 24)
  model.eval()
  np.testing.assert_array_equal(ids, np.argmax(model(images)[0], axis=1))


def test_backprop_saliency_matches_finite_differences(model, images):
  ids = jnp.array([0, 4])
  sal, _ = saliency.backprop_saliency(model, images, ids)
  assert sal.shape == (2, 24, 24) and bool(jnp.all(sal >= 0))
  model.eval()

  def score(x):
    return model(x)[0][0, 0]

  eps = 1e-2
  for (y, x, c) in [(5, 7, 0), (12, 3, 2), (20, 20, 1)]:
    plus = images.at[0, y, x, c].add(eps)
    minus = images.at[0, y, x, c].add(-eps)
    numeric = (score(plus) - score(minus)) / (2 * eps)
    analytic = jax.grad(score)(images)[0, y, x, c]
    np.testing.assert_allclose(analytic, numeric, rtol=5e-2, atol=1e-4)
    assert sal[0, y, x] >= abs(float(analytic)) - 1e-6


def test_bad_layer_is_reported(model, images):
  with pytest.raises(ValueError, match="no layer"):
    saliency.grad_cam(model, images, "blocks/9")
  with pytest.raises(ValueError, match="class_ids"):
    saliency.backprop_saliency(model, images, jnp.array([1]))
