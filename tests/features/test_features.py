"""GAP feature extraction and linear classifiers on it (paper Sec. 4)."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from camjax import cam, models
from camjax.features.finegrained import cam_boxes
from camjax.features import (FeatureSet, LinearHeadModel, array_batches, extract_features, fit_linear,
                             holdout_split, select_and_fit)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _separable(n=240, k=24, classes=4, seed=0, scale=None):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % classes
  x = rng.normal(0, 1, (n, k)).astype(np.float32)
  x[np.arange(n), labels] += 6.0  # class c is the one with a large feature c
  if scale is not None:
    x = x * scale
  return x, labels


def _small(num_classes=3, seed=0):
  return models.create("small_gap", num_classes=num_classes, widths=(8, 16), blocks_per_stage=1, seed=seed)


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_linear_classifier_separates_separable_classes(loss):
  x, y = _separable()
  xt, yt = _separable(seed=1)
  clf = fit_linear(x, y, num_classes=4, loss=loss, C=1.0)
  assert clf.kernel.shape == (24, 4) and clf.bias.shape == (4,)
  assert clf.converged
  assert clf.accuracy(x, y) == 1.0
  assert clf.accuracy(xt, yt) == 1.0


def test_standardisation_is_folded_into_weights():
  """Per-feature rescaling does not change a standardised fit: the returned weights act on raw features."""
  x, y = _separable(seed=2)
  x[:, :4] -= 1.5  # overlap the classes so the fit is not saturated
  scale = np.geomspace(0.01, 100.0, x.shape[1]).astype(np.float32)
  offset = np.linspace(-5, 5, x.shape[1]).astype(np.float32)
  a = fit_linear(x, y, num_classes=4, C=0.1)
  b = fit_linear(x * scale + offset, y, num_classes=4, C=0.1)
  np.testing.assert_allclose(a.decision_function(x), b.decision_function(x * scale + offset), rtol=1e-3, atol=1e-3)
  # Without standardisation the two problems differ.
  c = fit_linear(x * scale + offset, y, num_classes=4, C=0.1, standardize=False, max_iter=50)
  assert not np.allclose(a.decision_function(x), c.decision_function(x * scale + offset), atol=1e-2)


def test_fit_is_deterministic_and_regularisation_shrinks_weights():
  x, y = _separable(seed=3)
  a = fit_linear(x, y, num_classes=4, C=0.01)
  b = fit_linear(x, y, num_classes=4, C=0.01)
  np.testing.assert_array_equal(a.kernel, b.kernel)
  np.testing.assert_array_equal(a.bias, b.bias)
  big = fit_linear(x, y, num_classes=4, C=10.0)
  assert np.linalg.norm(big.kernel) > np.linalg.norm(a.kernel)


def test_select_and_fit_on_holdout_and_on_validation_split():
  x, y = _separable(seed=4)
  x[:, :4] += np.random.default_rng(0).normal(0, 4, (x.shape[0], 4)).astype(np.float32)  # label noise in features
  sel = select_and_fit(x, y, num_classes=4, grid=(0.01, 1.0), seed=0)
  assert sel.best_C in (0.01, 1.0) and set(sel.val_accuracy) == {0.01, 1.0}
  assert sel.val_source == "held-out part of train"
  assert all(0.0 <= v <= 1.0 for v in sel.val_accuracy.values())
  xv, yv = _separable(seed=5)
  sel2 = select_and_fit(x, y, num_classes=4, grid=(0.01, 1.0), val_features=xv, val_labels=yv)
  assert sel2.val_source == "validation split"
  assert sel2.val_accuracy[sel2.best_C] == max(sel2.val_accuracy.values())
  assert sel2.classifier.accuracy(xv, yv) == sel2.val_accuracy[sel2.best_C]


def test_holdout_split_is_seeded_per_class_and_disjoint():
  y = np.repeat(np.arange(3), [10, 5, 2])
  tr, va = holdout_split(y, 0.2, seed=7)
  assert np.intersect1d(tr, va).size == 0 and np.union1d(tr, va).size == y.size
  assert set(y[tr]) == {0, 1, 2}  # every class keeps training rows
  tr2, va2 = holdout_split(y, 0.2, seed=7)
  np.testing.assert_array_equal(va, va2)


def test_bad_inputs_fail_with_clear_message():
  x, y = _separable()
  with pytest.raises(ValueError, match="loss must be"):
    fit_linear(x, y, num_classes=4, loss="hinge")
  with pytest.raises(ValueError, match="labels must be in"):
    fit_linear(x, y, num_classes=3)
  with pytest.raises(ValueError, match="NaN"):
    fit_linear(np.full_like(x, np.nan), y, num_classes=4)


def test_linear_head_model_logits_and_cam_identity():
  backbone = _small()
  rng = np.random.default_rng(0)
  kernel = rng.normal(0, 1, (16, 5)).astype(np.float32)
  bias = rng.normal(0, 1, (5,)).astype(np.float32)
  head = LinearHeadModel(backbone, kernel, bias)
  images = jnp.asarray(rng.normal(0, 1, (3, 16, 16, 3)), jnp.float32)
  head.eval()
  logits, features = head(images)
  pooled = np.asarray(features).mean(axis=(1, 2))
  np.testing.assert_allclose(logits, pooled @ kernel + bias, rtol=1e-5, atol=1e-5)
  out = cam.class_activation_maps(head, images, class_ids="all", upsample=True)
  assert out.maps.shape == (3, 5, 8, 8) and out.upsampled.shape == (3, 5, 16, 16)
  np.testing.assert_allclose(np.asarray(out.maps).mean(axis=(2, 3)) + bias, out.logits, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(out.logits)).max() > 0.1
  top = cam.class_activation_maps(head, images, top_k=1)
  np.testing.assert_array_equal(np.asarray(top.class_ids)[:, 0], np.argmax(np.asarray(logits), axis=1))


def test_fitted_svm_plugs_into_cam_with_standardisation():
  """Classifier fitted on extracted features -> wrapper logits reproduce the classifier's scores."""
  model = _small(num_classes=2, seed=1)
  rng = np.random.default_rng(1)
  images = rng.normal(0, 1, (12, 16, 16, 3)).astype(np.float32)
  labels = np.arange(12) % 3
  fs = extract_features(model, array_batches(images, labels, 5))
  clf = fit_linear(fs.features * 1.0, fs.labels, num_classes=3, C=1.0)
  head = LinearHeadModel.from_classifier(model, clf)
  out = cam.class_activation_maps(head, jnp.asarray(images), class_ids="all", upsample=False)
  np.testing.assert_allclose(out.logits, clf.decision_function(fs.features), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(out.maps).mean(axis=(2, 3)) + clf.bias, out.logits, rtol=1e-4, atol=1e-4)


def test_extract_features_every_example_once_sorted_and_equal_to_forward(tmp_path):
  model = _small()
  rng = np.random.default_rng(2)
  images = rng.normal(0, 1, (11, 16, 16, 3)).astype(np.float32)
  labels = rng.integers(0, 3, 11)
  batches = list(array_batches(images, labels, 4))  # 3 batches, last one padded
  assert batches[-1]["valid"].sum() == 3
  fs = extract_features(model, reversed(batches))  # order of batches must not matter
  np.testing.assert_array_equal(fs.indices, np.arange(11))
  np.testing.assert_array_equal(fs.labels, labels)
  model.eval()
  logits, feats = model(jnp.asarray(images))
  np.testing.assert_allclose(fs.features, np.asarray(feats).mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(fs.logits, logits, rtol=1e-5, atol=1e-5)
  assert fs.head_accuracy() == float(np.mean(np.argmax(np.asarray(logits), 1) == labels))
  path = fs.save(str(tmp_path / "train.npz"))
  back = FeatureSet.load(path)
  np.testing.assert_array_equal(back.features, fs.features)
  np.testing.assert_array_equal(back.indices, fs.indices)
  np.testing.assert_array_equal(back.logits, fs.logits)
  assert back.meta == fs.meta and back.meta["pooling"] == "gap"


def test_extract_features_refuses_duplicates():
  model = _small()
  images = np.zeros((4, 16, 16, 3), np.float32)
  batches = list(array_batches(images, np.zeros(4, int), 4))
  with pytest.raises(ValueError, match="more than once"):
    extract_features(model, batches + batches)


def test_extraction_is_identical_on_two_devices(tmp_path):
  """The same features with the batch split over two devices as on one."""
  script = textwrap.dedent(f"""
      import numpy as np, jax
      from camjax import models
      from camjax.features import LinearHeadModel, array_batches, extract_features
      from camjax.features.finegrained import cam_boxes
      assert len(jax.devices()) == 2
      model = models.create("small_gap", num_classes=3, widths=(8, 16), blocks_per_stage=1, seed=0)
      images = np.random.default_rng(2).normal(0, 1, (7, 16, 16, 3)).astype(np.float32)
      fs = extract_features(model, array_batches(images, np.arange(7) % 3, 4))
      fs.save({str(tmp_path / 'two.npz')!r})
      head = LinearHeadModel(model, np.eye(16, 3, dtype=np.float32), np.zeros(3, np.float32))
      boxes = cam_boxes(head, array_batches(images, np.arange(7) % 3, 4), classes="true")
      np.save({str(tmp_path / 'boxes.npy')!r}, boxes.boxes)
      """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, env=env, timeout=120)
  model = _small()
  images = np.random.default_rng(2).normal(0, 1, (7, 16, 16, 3)).astype(np.float32)
  one = extract_features(model, array_batches(images, np.arange(7) % 3, 4))
  two = FeatureSet.load(str(tmp_path / "two.npz"))
  np.testing.assert_array_equal(two.indices, one.indices)
  np.testing.assert_allclose(two.features, one.features, rtol=1e-5, atol=1e-6)
  head = LinearHeadModel(model, np.eye(16, 3, dtype=np.float32), np.zeros(3, np.float32))
  boxes = cam_boxes(head, array_batches(images, np.arange(7) % 3, 4), classes="true")
  np.testing.assert_array_equal(np.load(str(tmp_path / "boxes.npy")), boxes.boxes)
