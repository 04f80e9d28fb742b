"""camjax.methods.faithfulness: hand-computed answers on linear models, and parity with the libraries' metrics.

The hand-built models are linear in the input, ``logits = sum_hwc x W + b``, so every perturbed input's
confidence is a sum the test computes directly. The parity tests mirror one small tanh MLP in torch and compare
with pytorch-grad-cam 1.5.7 (``metrics.cam_mult_image``, ``metrics.road``) and torch-cam 0.5.0
(``ClassificationMetric``, ``DeletionInsertionMetric``) to 1e-4; they skip without torch or the libraries,
except under CI, which installs them (``pip install --no-deps -r requirements-parity.txt``). grad-cam imports
torchvision, scikit-learn and matplotlib at module level without using them for its metrics: they are given
empty stand-ins while it is imported (``benchmarks.grad_cam_imports``).
"""

import contextlib
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from benchmarks.grad_cam_imports import stand_ins
from camjax.errors import UserError
from camjax.methods import faithfulness as F

TOL = 1e-4
SIZE = 8  # 8 x 8 px: 64 pixels, divisible by the step counts used below


class Linear(nnx.Module):
  """``logits[n] = sum_hwc x[h, w, c] weights[h, w, c, n] + bias[n]``: every score is known by hand."""

  def __init__(self, weights, bias):
    self.weights = nnx.Param(jnp.asarray(weights, jnp.float32))
    self.bias = nnx.Param(jnp.asarray(bias, jnp.float32))

  def __call__(self, x):
    logits = jnp.einsum("bhwc,hwcn->bn", x, self.weights[...], precision=jax.lax.Precision.HIGHEST)
    return logits + self.bias[...], None


def _logits(x, weights, bias):
  return np.einsum("...hwc,hwcn->...n", np.asarray(x, np.float64), weights) + bias


def _softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------- by hand


def test_confidence_change_by_hand():
  """Class 0 reads the left half, class 1 the right half, class 2 nothing (logit 0)."""
  weights = np.zeros((SIZE, SIZE, 3, 3), np.float32)
  weights[:, :SIZE // 2, :, 0] = 0.05
  weights[:, SIZE // 2:, :, 1] = 0.05
  image = np.full((1, SIZE, SIZE, 3), 0.5, np.float32)
  image[:, :, SIZE // 2:] = 0.25
  model = Linear(weights, np.zeros(3))
  y = _softmax([2.4, 1.2, 0.0])  # 0.05 x 96 values of 0.5 (left) and of 0.25 (right)
  left = np.zeros((SIZE, SIZE), np.float32)
  left[:, :SIZE // 2] = 1.0
  ids = np.array([[0, 1, 2]])

  ones = F.confidence_change(model, image, np.ones((1, 3, SIZE, SIZE)), ids, normalize=False)
  # The map changes nothing (the masked batch is another shape, so the logits may differ in the last bit).
  np.testing.assert_allclose(ones["average_drop"], 0.0, atol=1e-6)

  zeros = F.confidence_change(model, image, np.zeros((1, 3, SIZE, SIZE)), ids)  # every logit 0: p = 1/3
  np.testing.assert_allclose(zeros["average_drop"][0], [(y[0] - 1 / 3) / y[0], 0.0, 0.0], atol=1e-6)
  np.testing.assert_array_equal(zeros["average_increase"][0], [0.0, 1.0, 1.0])  # 1/3 > p(1) = 0.22 > p(2)

  halves = F.confidence_change(model, image, np.stack([left] * 3)[None], ids)  # right half removed
  o = _softmax([2.4, 0.0, 0.0])
  np.testing.assert_allclose(halves["average_drop"][0], [0.0, (y[1] - o[1]) / y[1], 0.0], atol=1e-6)
  np.testing.assert_array_equal(halves["average_increase"][0], [1.0, 0.0, 1.0])
  absolute = F.confidence_change(model, image, np.stack([left] * 3)[None], ids, relative=False)
  np.testing.assert_allclose(absolute["average_drop"][0], [0.0, y[1] - o[1], 0.0], atol=1e-6)
  logit = F.confidence_change(model, image, np.zeros((1, 3, SIZE, SIZE)), ids, confidence="logit")
  np.testing.assert_allclose(logit["average_drop"][0, :2], [1.0, 1.0], atol=1e-6)  # (2.4 - 0) / 2.4


@pytest.fixture(scope="module")
def evidence_case():
  """One class read by a linear model, the other fixed at logit 0: p = sigmoid(s), s = sum of the evidence."""
  rng = np.random.default_rng(0)
  weights = np.zeros((SIZE, SIZE, 3, 2), np.float32)
  weights[..., 0] = rng.normal(size=(SIZE, SIZE, 3)) * 0.2
  images = rng.normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
  evidence = np.einsum("bhwc,hwc->bhw", images, weights[..., 0])  # each pixel's share of s
  return Linear(weights, np.zeros(2)), weights, images, evidence


def _curve_auc(counts, logits_fn, pixels):
  x = np.asarray(counts, np.float64) / pixels
  return np.trapezoid(_softmax(np.stack([logits_fn(c) for c in counts]))[:, 0], x)


def test_deletion_and_insertion_of_the_true_evidence_by_hand(evidence_case):
  """The map is the evidence itself: after deleting the n most relevant pixels s is s - (sum of the top n)."""
  model, weights, images, evidence = evidence_case
  maps = evidence[:, None]
  pixels = SIZE * SIZE
  blurred = np.stack([[ndimage.convolve(im[..., c], F.blur_kernel(), mode="constant") for c in range(3)]
                      for im in images]).transpose(0, 2, 3, 1)
  # 8 steps of 8 pixels; then 5, which does not divide 64 (0, 12, 25, 38, 51, 64 pixels), through score and
  # with 3 inputs per forward pass.
  for steps in (8, 5):
    counts = [i * pixels // steps for i in range(steps + 1)]
    if steps == 8:
      out = F.deletion_insertion(model, images, maps, np.zeros(2, int), steps=steps)
    else:
      out = F.score(model, images, maps, np.zeros(2, int), metrics=("insertion_auc", "deletion_auc"), steps=5,
                    chunk_size=3)
      assert list(out) == ["insertion_auc", "deletion_auc"]
    baseline = F.deletion_insertion(model, images, maps, np.zeros(2, int), steps=steps, insertion_from="baseline",
                                    chunk_size=32 if steps == 8 else 3)
    for b in range(2):
      top = np.sort(evidence[b].ravel())[::-1]
      cumulative = np.concatenate([[0.0], np.cumsum(top)])
      rank = np.argsort(np.argsort(-evidence[b].ravel(), kind="stable"), kind="stable").reshape(SIZE, SIZE)

      def inserted(c, b=b, rank=rank):
        x = np.where((rank < c)[..., None], images[b], blurred[b])
        return _logits(x, weights, 0.0)

      deletion = _curve_auc(counts, lambda c, b=b: [evidence[b].sum() - cumulative[c], 0.0], pixels)
      insertion = _curve_auc(counts, lambda c: [cumulative[c], 0.0], pixels)
      np.testing.assert_allclose(out["deletion_auc"][b, 0], deletion, atol=1e-5)
      np.testing.assert_allclose(baseline["insertion_auc"][b, 0], insertion, atol=1e-5)
      np.testing.assert_allclose(out["insertion_auc"][b, 0], _curve_auc(counts, inserted, pixels), atol=1e-5)
  # The true evidence deletes faster, and inserts faster, than its reverse.
  reverse = F.deletion_insertion(model, images, -maps, np.zeros(2, int), steps=8)
  first = F.deletion_insertion(model, images, maps, np.zeros(2, int), steps=8)
  assert np.all(reverse["deletion_auc"] > first["deletion_auc"])
  assert np.all(reverse["insertion_auc"] < first["insertion_auc"])


def test_blur_kernel_is_rises():
  """RISE's gkern(11, 5): gaussian_filter of a centred delta; the blur keeps a constant's interior."""
  delta = np.zeros((11, 11))
  delta[5, 5] = 1.0
  np.testing.assert_allclose(F.blur_kernel(), ndimage.gaussian_filter(delta, 5.0), rtol=1e-6)
  flat = F.blur(jnp.ones((1, 31, 31, 2)))
  np.testing.assert_allclose(flat[0, 15, 15], F.blur_kernel().sum(), rtol=1e-6)


def test_linear_imputation_reproduces_a_ramp_and_averages_neighbours():
  rng = np.random.default_rng(1)
  rows, cols = np.mgrid[:SIZE, :SIZE]
  ramp = np.stack([0.3 + 0.2 * rows - 0.1 * cols, -1.0 + 0.05 * rows + 0.3 * cols], axis=-1)
  noise = rng.normal(size=(SIZE, SIZE, 2))
  images = np.stack([ramp, noise]).astype(np.float32)
  keep = np.ones((2, SIZE, SIZE), bool)
  keep[0, 1:-1, 1:-1] = rng.random((SIZE - 2, SIZE - 2)) < 0.3  # inside, a linear function is its neighbours' mean
  keep[1, 3, 4] = keep[1, 0, 0] = False  # one pixel inside, one corner
  filled = np.asarray(F.linear_imputation(images, keep))
  np.testing.assert_allclose(filled[0], ramp, atol=1e-5)
  # Inside: the weighted mean of the 8 neighbours; at the corner: of its 3, renormalised.
  x = noise
  inside = sum(w * x[3 + dr, 4 + dc] for (dr, dc), w in F.NEIGHBOUR_WEIGHTS)
  corner = (x[0, 1] / 6 + x[1, 0] / 6 + x[1, 1] / 12) / (5 / 12)
  np.testing.assert_allclose(filled[1, 3, 4], inside, atol=1e-5)
  np.testing.assert_allclose(filled[1, 0, 0], corner, atol=1e-5)
  np.testing.assert_array_equal(filled[1][keep[1]], images[1][keep[1]])
  # Noise goes to the removed pixels only, drawn from the key.
  noisy = np.asarray(F.linear_imputation(images, keep, noise=0.5, key=jax.random.key(3)))
  np.testing.assert_array_equal(noisy[keep], images[keep])
  assert np.all(np.abs(noisy[1, 3, 4] - inside) > 1e-4)


def _numpy_keep(v, p):
  """pytorch-grad-cam's RemoveMostRelevantFirst: ``mask < np.percentile(mask, p)``."""
  return v < np.percentile(v, p)


def test_road_percentiles_pick_pixels_as_numpy():
  rng = np.random.default_rng(2)
  pcts = (10, 20, 25, 50, 75, 80, 90, 99)
  for n in (64, 49, 50176):
    table = tuple(jnp.asarray(a) for a in F._percentile_table(pcts, n))
    threshold = jax.jit(jax.vmap(lambda v, i, t=table: F._threshold(v, i, t), in_axes=(None, 0)))
    for trial in range(4):
      v = rng.random(n).astype(np.float32)
      if trial % 2:
        v = np.round(v * 8).astype(np.float32) / 8  # ties
      got = np.asarray(v[None] < threshold(jnp.asarray(v), jnp.arange(len(pcts)))[:, None])
      want = np.stack([_numpy_keep(v, p) for p in pcts])
      np.testing.assert_array_equal(got, want)


def test_road_by_hand():
  """One pixel removed by each order (percentile 99 of 64 pixels): the change in logit is known."""
  rng = np.random.default_rng(3)
  weights = rng.normal(size=(SIZE, SIZE, 2, 3)).astype(np.float32)
  image = rng.normal(size=(1, SIZE, SIZE, 2)).astype(np.float32)
  cam = rng.uniform(0.2, 0.8, size=(SIZE, SIZE)).astype(np.float32)
  cam[2, 5], cam[5, 2] = 3.0, -1.0  # the one most relevant pixel, the one least relevant
  model = Linear(weights, np.zeros(3))
  out = F.road(model, image, cam[None, None], [1], percentiles=(99,), noise=0.0, confidence="logit")

  def change(r, c):
    mean = sum(w * image[0, r + dr, c + dc] for (dr, dc), w in F.NEIGHBOUR_WEIGHTS)
    return float(weights[r, c, :, 1] @ (mean - image[0, r, c]))

  np.testing.assert_allclose(out["road_morf"][0, 0], change(2, 5), atol=1e-5)
  np.testing.assert_allclose(out["road_lerf"][0, 0], change(5, 2), atol=1e-5)
  np.testing.assert_allclose(out["road_combined"][0, 0], (change(5, 2) - change(2, 5)) / 2, atol=1e-5)


def test_score_checks_its_inputs_and_options(evidence_case):
  model, _, images, evidence = evidence_case
  maps = evidence[:, None]
  bad = [
      dict(maps=maps[:, :, :4]),  # not the image's resolution
      dict(maps=evidence),  # no K axis
      dict(maps=np.repeat(maps, 2, axis=1)),  # two maps, one (top-1) target
      dict(metrics=("average_drop", "pointing_game")),
      dict(steps=0),
      dict(chunk_size=0),
      dict(confidence="softmax"),
      dict(percentiles=(10, 120)),
      dict(no_such_option=1),
  ]
  for case in bad:
    kwargs = {"maps": maps, **case}
    with pytest.raises(UserError) as err:
      F.score(model, images, kwargs.pop("maps"), **kwargs)
    assert "\n" not in str(err.value), case
  with pytest.raises(UserError):
    F.deletion_insertion(model, images, maps, baseline=np.zeros((3, 3)))
  with pytest.raises(UserError):
    F.linear_imputation(images, np.ones((2, SIZE, SIZE + 1), bool))


# ------------------------------------------------------------------------------------------ libraries


def _missing(what, err):
  """Skip without the library, except in CI, which installs it (requirements-parity.txt)."""
  message = f"{what} is not importable ({err}); pip install --no-deps -r requirements-parity.txt"
  if os.environ.get("CI"):
    pytest.fail(message)
  pytest.skip(message)


def _import(name, what):
  try:
    return importlib.import_module(name)
  except ImportError as err:
    _missing(what, err)


def _grad_cam_metrics():
  _import("torch", "torch")
  with stand_ins():
    try:
      from pytorch_grad_cam.metrics import cam_mult_image, road
      from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    except ImportError as err:
      _missing("grad-cam", err)
  return cam_mult_image, road, ClassifierOutputSoftmaxTarget


class MLP(nnx.Module):
  def __init__(self, params):
    self.w1, self.b1, self.w2, self.b2 = (nnx.Param(jnp.asarray(params[k])) for k in ("w1", "b1", "w2", "b2"))

  def __call__(self, x):
    p, hi = {k: getattr(self, k)[...] for k in ("w1", "b1", "w2", "b2")}, jax.lax.Precision.HIGHEST
    hidden = jnp.tanh(jnp.dot(x.reshape(x.shape[0], -1), p["w1"], precision=hi) + p["b1"])
    return jnp.dot(hidden, p["w2"], precision=hi) + p["b2"], None


@pytest.fixture(scope="module")
def shared():
  """A tanh MLP in JAX and in torch, 4 images (model-input space), maps in [0, 1] reaching both ends."""
  torch = _import("torch", "torch")
  rng = np.random.default_rng(4)
  features, hidden, classes = SIZE * SIZE * 3, 16, 5
  params = {"w1": rng.normal(size=(features, hidden)) / np.sqrt(features) * 3, "b1": rng.normal(size=hidden) * 0.1,
            "w2": rng.normal(size=(hidden, classes)), "b2": rng.normal(size=classes) * 0.1}
  params = {k: v.astype(np.float32) for k, v in params.items()}

  class TorchMLP(torch.nn.Module):
    def forward(self, x):  # (B, C, H, W), flattened as the JAX model's (B, H, W, C)
      t = {k: torch.from_numpy(v) for k, v in params.items()}
      hidden = torch.tanh(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1) @ t["w1"] + t["b1"])
      return hidden @ t["w2"] + t["b2"]

  images = rng.normal(size=(4, SIZE, SIZE, 3)).astype(np.float32)
  maps = rng.random((4, SIZE, SIZE)).astype(np.float32)
  maps[3] = 0.9 + 0.1 * maps[3]  # nearly all kept: its confidence may rise
  flat = maps.reshape(4, -1)
  flat[:, 0], flat[:, 1] = 0.0, 1.0
  xt = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    logits = TorchMLP()(xt).numpy()
  ids = np.concatenate([logits[:2].argmax(axis=1), logits[2:].argmin(axis=1)])  # confident and unlikely classes
  return MLP(params), TorchMLP().eval(), images, xt, maps, ids


def test_confidence_change_matches_pytorch_grad_cam(shared):
  cam_mult_image, _, target = _grad_cam_metrics()
  model, net, images, xt, maps, ids = shared
  targets = [target(int(c)) for c in ids]
  drop = cam_mult_image.DropInConfidence()(xt, maps, targets, net)
  increase = cam_mult_image.IncreaseInConfidence()(xt, maps, targets, net)
  out = F.confidence_change(model, images, maps[:, None], ids, relative=False)
  np.testing.assert_allclose(out["average_drop"][:, 0], drop, atol=TOL)
  np.testing.assert_array_equal(out["average_increase"][:, 0], increase)


class _FixedMaps:
  """A torch-cam CAM extractor that returns given maps: the metrics then score those maps."""

  def __init__(self, model, maps):
    self.model, self.maps = model, maps

  def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
    import torch

    return [torch.from_numpy(self.maps)]

  def fuse_cams(self, cams):
    return cams[0]

  @contextlib.contextmanager
  def _hooks_off(self):
    yield


def test_confidence_change_and_deletion_insertion_match_torchcam(shared):
  torch = _import("torch", "torch")
  metrics = _import("torchcam.metrics", "torchcam")
  model, net, images, xt, maps, ids = shared
  softmax = lambda logits: torch.softmax(logits, dim=-1)  # noqa: E731
  classification = metrics.ClassificationMetric(_FixedMaps(net, maps), softmax)
  classification.update(xt, [int(c) for c in ids])
  want = classification.summary()
  out = F.confidence_change(model, images, maps[:, None], ids)
  assert 0 < float(out["average_increase"].mean()) < 1  # both outcomes occur
  np.testing.assert_allclose(float(out["average_drop"].mean()), want["avg_drop"], atol=TOL)
  np.testing.assert_allclose(float(out["average_increase"].mean()), want["conf_increase"], atol=TOL)
  steps = 16
  deletion = metrics.DeletionInsertionMetric(_FixedMaps(net, maps), softmax, steps=steps, batch_size=64)
  deletion.update(xt, [int(c) for c in ids])
  want = deletion.summary()
  out = F.deletion_insertion(model, images, maps[:, None], ids, steps=steps, insertion_from="baseline")
  np.testing.assert_allclose(float(out["deletion_auc"].mean()), want["deletion_auc"], atol=TOL)
  np.testing.assert_allclose(float(out["insertion_auc"].mean()), want["insertion_auc"], atol=TOL)


def test_linear_imputation_matches_pytorch_grad_cam(shared):
  torch = _import("torch", "torch")
  _, road, _ = _grad_cam_metrics()
  _, _, images, xt, maps, _ = shared
  keep = maps > 0.6  # large removed regions, border pixels removed too
  want = np.stack([road.NoisyLinearImputer(noise=0.0)(xt[b], torch.from_numpy(keep[b].astype(np.float32))).numpy()
                   for b in range(len(images))]).transpose(0, 2, 3, 1)
  np.testing.assert_allclose(F.linear_imputation(images, keep), want, atol=1e-5)


def test_road_matches_pytorch_grad_cam(shared, monkeypatch):
  _, road, target = _grad_cam_metrics()
  model, net, images, xt, maps, ids = shared
  targets = [target(int(c)) for c in ids]
  monkeypatch.setattr(road.NoisyLinearImputer.__init__, "__defaults__", (0.0, road.neighbors_weights))
  percentiles = [20, 50, 90]  # not symmetric: which share a percentile keeps matters
  out = F.road(model, images, maps[:, None], ids, percentiles=percentiles, noise=0.0)
  for name, metric in (("road_morf", road.ROADMostRelevantFirstAverage), ("road_lerf",
                                                                          road.ROADLeastRelevantFirstAverage),
                       ("road_combined", road.ROADCombined)):
    np.testing.assert_allclose(out[name][:, 0], metric(percentiles)(xt, maps, targets, net), atol=TOL, err_msg=name)
