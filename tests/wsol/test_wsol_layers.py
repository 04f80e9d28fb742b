"""ADL, ACoL and SPG pieces on small hand-built tensors: masks, erasing, pseudo-labels, losses, key handling."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from camjax.models.base import NotCamCompatible
from camjax.train.state import ModelDef
from camjax.wsol import acol, adl, spg
from test_models import materialize


def _nhwc(channel_means):
  """(B, H, W) channel means -> (B, H, W, 2) features with those means (channels mean - 1 and mean + 1)."""
  m = np.asarray(channel_means, np.float32)[..., None]
  return jnp.asarray(np.concatenate([m - 1, m + 1], axis=-1))


# ADL

def test_adl_drop_mask_hides_what_reaches_threshold_times_each_images_maximum():
  x = _nhwc([[[1, 2], [3, 4]], [[10, 20], [30, 40]]])  # the second image is ten times the first
  importance, drop = adl.adl_maps(x, 0.9)
  want = np.array([[1, 1], [1, 0]], np.float32)  # 4 >= 0.9 * 4, 3 < 3.6
  np.testing.assert_array_equal(np.asarray(drop)[..., 0], [want, want])
  _, drop = adl.adl_maps(x, 0.5)
  np.testing.assert_array_equal(np.asarray(drop)[0, ..., 0], [[1, 0], [0, 0]])  # only 1 < 2
  np.testing.assert_allclose(np.asarray(importance)[1, ..., 0], 1 / (1 + np.exp(-np.array([[10, 20], [30, 40]]))),
                             rtol=1e-6)


def test_adl_picks_the_drop_mask_with_probability_drop_rate_one_draw_for_the_batch():
  x = _nhwc([[[1, 2], [3, 4]], [[-1, 0.5], [2, 1]]])
  importance, drop = (np.asarray(m) for m in adl.adl_maps(x, 0.9))
  run = jax.jit(adl.adl, static_argnums=(2, 3))
  picks = []
  for seed in range(200):
    out = np.asarray(run(x, jax.random.key(seed), 0.75, 0.9))
    dropped, kept = np.allclose(out, x * drop), np.allclose(out, x * importance)
    assert dropped != kept  # exactly one map, the same for both images
    picks.append(dropped)
  assert 0.65 < np.mean(picks) < 0.85  # 200 fixed draws at rate 0.75
  for rate, want in ((1.0, x * drop), (0.0, x * importance)):
    np.testing.assert_allclose(run(x, jax.random.key(0), rate, 0.9), want, rtol=1e-6)


def test_adl_gradient_flows_through_the_importance_map_and_not_the_drop_mask():
  x = _nhwc([[[1, 2], [3, 4]]])
  grad = jax.jit(jax.grad(lambda v, rate: adl.adl(v, jax.random.key(0), rate, 0.9).sum()))
  grad = functools.partial(grad, x)
  _, drop = adl.adl_maps(x, 0.9)
  np.testing.assert_array_equal(grad(1.0), np.broadcast_to(np.asarray(drop), x.shape))
  a = np.asarray(x).mean(-1, keepdims=True)
  s = 1 / (1 + np.exp(-a))
  # d/dx_k sum_c x_c sigmoid(mean(x)) = sigmoid(a) + sum_c x_c * sigmoid'(a) / C
  want = s + np.asarray(x).sum(-1, keepdims=True) * s * (1 - s) / 2
  np.testing.assert_allclose(grad(0.0), np.broadcast_to(want, x.shape), rtol=1e-5)


class _Net(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(2, 2, (1, 1), rngs=rngs)
    self.adl = adl.ADL(0.5, 0.9, rngs=rngs)

  def __call__(self, x):
    return self.adl(self.conv(x))


def test_adl_layer_is_the_identity_in_eval_and_its_key_survives_split_and_merge():
  x = _nhwc(np.random.default_rng(0).normal(size=(2, 3, 3)))
  net = materialize(nnx.eval_shape(lambda: _Net(nnx.Rngs(params=0, dropout=1))))
  net.eval()
  np.testing.assert_array_equal(net(x), net.conv(x))
  net.train()
  model_def = ModelDef(net)
  params, stats, other = model_def.split(net)
  assert any("rngs" in str(path) for path, _ in jax.tree_util.tree_flatten_with_path(other)[0])
  copy = model_def.merge(params, stats, other, train=True)
  first, second = net(x), net(x)
  np.testing.assert_array_equal(copy(x), first)
  np.testing.assert_array_equal(copy(x), second)
  y = net.conv(x)
  drop = adl.adl_maps(y, 0.9)[1]
  assert {bool(np.allclose(net(x), y * drop)) for _ in range(30)} == {True, False}  # the stream moves on


@pytest.mark.parametrize("kw, field", [(dict(drop_rate=1.5), "adl_drop_rate"), (dict(threshold=-0.1), "adl_threshold")])
def test_adl_rejects_values_outside_0_1(kw, field):
  with pytest.raises(ValueError, match=f"{field} must be a number in \\[0, 1\\]"):
    adl.ADL(**kw, rngs=nnx.Rngs(0))


def test_architecture_switch_names_the_allowed_values():
  ok = dict(acol_threshold=0.7, adl_drop_rate=0.75, adl_threshold=0.9)
  assert acol.check_architecture("spg", **ok) == "spg"
  with pytest.raises(ValueError, match=r"architecture must be one of \('cam', 'acol', 'spg', 'adl'\), got 'has'"):
    acol.check_architecture("has", **ok)
  with pytest.raises(ValueError, match="acol_threshold must be a number in"):
    acol.check_architecture("cam", **{**ok, "acol_threshold": 2})


# ACoL

def test_normalize_maps_per_map_and_constant_maps_to_zero():
  maps = jnp.asarray([[[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]]])  # (1, 2, 2, 2): two maps
  np.testing.assert_allclose(acol.normalize_maps(maps), [[[[0, 0.5], [0.25, 1]], [[0, 0], [0, 0]]]])


def test_select_maps_takes_each_images_classes():
  maps = jnp.arange(2 * 2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 2, 3)  # NHWC, 3 classes
  got = acol.select_maps(maps, jnp.asarray([[2, 0], [1, 1]]))
  np.testing.assert_array_equal(got, np.stack([np.moveaxis(np.asarray(maps)[0][..., [2, 0]], -1, 0),
                                               np.moveaxis(np.asarray(maps)[1][..., [1, 1]], -1, 0)]))
  m = np.asarray(maps)
  want = np.stack([m[0, ..., 2], m[1, ..., 1]])[:, None]
  np.testing.assert_array_equal(acol.select_maps(maps, jnp.asarray([2, 1])), want)


def test_erase_zeroes_features_where_attention_reaches_the_threshold():
  features = jnp.ones((1, 2, 2, 3))
  attention = jnp.asarray([[[0.2, 0.7], [0.9, 0.69]]])
  got = np.asarray(acol.erase(features, attention, 0.7))
  np.testing.assert_array_equal(got[..., 0], [[[1, 0], [0, 1]]])
  assert (got == got[..., :1]).all()  # every channel of a location alike


def _identity_head(threshold=0.7):
  """Branches of one 1x1 conv each, kernel = identity and zero bias: the class-c map is feature channel c."""
  head = nnx.eval_shape(lambda: acol.AcolHead(2, 2, hidden=(), threshold=threshold, rngs=nnx.Rngs(0)))
  for branch in (head.classifier_A, head.classifier_B):
    branch.classifier.kernel.set_value(jnp.eye(2)[None, None])
    branch.classifier.bias.set_value(jnp.zeros(2))
  return head


FEATURES = jnp.asarray([[[[1.0, 4.0], [3.0, 0.0]], [[5.0, 2.0], [2.0, 2.0]]]])  # (1, 2, 2, 2)


def test_acol_branch_b_sees_the_features_erased_by_branch_as_label_map():
  head = _identity_head()
  out = head.outputs(FEATURES, jnp.asarray([0]))
  # class 0's map [[1, 3], [5, 2]] normalises to [[0, .5], [1, .25]]: only (1, 0) reaches 0.7
  erased = np.asarray(FEATURES).copy()
  erased[0, 1, 0] = 0
  np.testing.assert_allclose(out["maps_b"], erased)
  np.testing.assert_allclose(out["logits"], np.asarray(FEATURES).mean(axis=(1, 2)))
  np.testing.assert_allclose(out["logits_b"], erased.mean(axis=(1, 2)))
  np.testing.assert_allclose(head(FEATURES), out["logits"])
  with pytest.raises(NotCamCompatible, match="class_maps"):
    head.cam_weights()


def test_acol_map_is_the_max_of_both_normalised_maps_with_that_class_erased():
  head = _identity_head(threshold=0.9)
  got = np.asarray(jax.jit(head.class_maps)(FEATURES, jnp.asarray([[1, 0]])))
  f = np.asarray(FEATURES)[0]
  norm = lambda m: (m - m.min()) / (m.max() - m.min())
  for k, c in enumerate((1, 0)):
    a = norm(f[..., c])
    b = norm(np.where(a >= 0.9, 0.0, f[..., c]))  # identity branch B: the erased class-c channel
    np.testing.assert_allclose(got[0, k], np.maximum(a, b), rtol=1e-6)
  assert got.shape == (1, 2, 2, 2) and got.dtype == np.float32


def test_acol_loss_is_the_sum_of_both_cross_entropies():
  outputs = {"logits": jnp.asarray([[0.0, 0.0]]), "logits_b": jnp.asarray([[math.log(3.0), 0.0]])}
  np.testing.assert_allclose(acol.acol_loss(outputs, jnp.asarray([0])), math.log(2) + math.log(4 / 3), rtol=1e-6)


# SPG

def test_spg_pseudo_labels_foreground_fallback_background_and_ignored():
  att = np.full((2, 8, 8), 0.5, np.float32)  # ignored (between low and high) unless set below
  att[0, :4] = 0.8  # 32 pixels above high: no fallback
  att[0, 7] = 0.005  # background
  att[1, 0, :3] = [0.6, 0.9, 0.3]  # one pixel above high (< 30): foreground is > 0.7 * 0.9 = 0.63
  att[1, 7, 0] = 0.001
  target, valid = (np.asarray(v) for v in spg.pseudo_labels(jnp.asarray(att), 0.7, 0.01))
  assert target[0, :4].all() and valid[0, :4].all() and not valid[0, 4:7].any()
  assert valid[0, 7].all() and not target[0, 7].any()
  assert target[1].sum() == 1 and target[1, 0, 1] == 1  # 0.6 and 0.5 stay under the fallback threshold
  assert valid[1].sum() == 2 and valid[1, 7, 0] and target[1, 7, 0] == 0


def test_spg_background_wins_where_the_fallback_foreground_is_below_low():
  att = jnp.full((1, 4, 4), 0.02)  # max 0.02: the fallback threshold 0.014 takes every pixel as foreground
  target, valid = spg.pseudo_labels(att, 0.7, 0.05)
  assert bool(valid.all()) and not bool(target.any())


def test_masked_bce_averages_over_valid_pixels_of_the_batch():
  logits = jnp.asarray([[[0.0, 2.0], [5.0, -1.0]]])
  target = jnp.asarray([[[1.0, 0.0], [1.0, 1.0]]])
  valid = jnp.asarray([[[True, True], [False, True]]])
  want = (math.log(2) + math.log1p(math.exp(2)) + math.log1p(math.exp(1))) / 3
  np.testing.assert_allclose(spg.masked_bce(logits, target, valid), want, rtol=1e-6)
  assert float(spg.masked_bce(logits, target, jnp.zeros_like(valid))) == 0.0


def _spg_case():
  """The random case whose loss the standard's spg.get_loss gives as 5.669986248 (224 px, torch 2.13).

  Image 1's score maps are low everywhere but one cell, so fewer than 30 pixels pass the high thresholds of
  the second and third terms and their fallback thresholds decide.
  """
  rng = np.random.default_rng(7)
  b, c, h = 2, 5, 14
  feat_map = rng.normal(size=(b, c, h, h)).astype(np.float32)
  b1 = rng.normal(-1.0, 1.5, size=(b, 1, h, h)).astype(np.float32)
  b2 = rng.normal(-0.5, 1.5, size=(b, 1, h, h)).astype(np.float32)
  b1[1], b2[1] = -4.0, -4.0
  b1[1, 0, 3, 4] = b2[1, 0, 3, 4] = 0.5
  score_c = rng.normal(0.0, 1.0, size=(b, 1, h, h)).astype(np.float32)
  logits = rng.normal(size=(b, c)).astype(np.float32)
  labels = np.array([3, 1])
  return feat_map, b1[:, 0], b2[:, 0], score_c[:, 0], logits, labels


def test_spg_loss_equals_the_standards_on_a_random_case_with_the_fallback():
  feat_map, b1, b2, score_c, logits, labels = (jnp.asarray(a) for a in _spg_case())
  size = (224, 224)
  cam = feat_map[jnp.arange(2), labels]
  outputs = {"logits": logits, "logits_b1": b1, "logits_b2": b2, "logits_c": score_c,
             "attention": acol.normalize_maps(spg.upsample(cam, size)),
             "fused_attention": (jax.nn.sigmoid(spg.upsample(b1, size)) + jax.nn.sigmoid(spg.upsample(b2, size))) / 2}
  loss = jax.jit(spg.spg_loss)(outputs, labels)
  np.testing.assert_allclose(float(loss), 5.669986248016357, rtol=2e-6)
  with pytest.raises(ValueError, match="three \\(high, low\\) pairs"):
    spg.spg_loss(outputs, labels, ((0.7, 0.01),))


def test_spg_head_outputs_follow_the_label_class_map_and_upsample_to_the_input():
  head = materialize(nnx.eval_shape(lambda: spg.SpgHead(3, 4, taps=(2, 3), width=4, c_width=2, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(1)
  tap1 = jnp.asarray(rng.normal(size=(2, 6, 6, 2)), jnp.float32)
  features = jnp.asarray(rng.normal(size=(2, 3, 3, 3)), jnp.float32)
  labels = jnp.asarray([2, 0])
  out = nnx.jit(lambda h, *args: h.outputs(*args, (12, 12)))(head, tap1, features, features, labels)
  assert out["logits_b1"].shape == (2, 6, 6) and out["logits_b2"].shape == (2, 3, 3)
  assert out["logits_c"].shape == (2, 3, 3) and out["fused_attention"].shape == (2, 12, 12)
  kernel = np.asarray(head.classifier.kernel[...])
  cam = np.einsum("bhwk,bk->bhw", np.asarray(features), kernel[:, [2, 0]].T)
  want = np.asarray(acol.normalize_maps(spg.upsample(jnp.asarray(cam), (12, 12))))
  np.testing.assert_allclose(out["attention"], want, rtol=1e-5, atol=1e-6)
  assert float(np.min(out["attention"])) == 0.0 and float(np.max(out["attention"])) == 1.0
  np.testing.assert_allclose(out["logits"], head(features), rtol=1e-6)
