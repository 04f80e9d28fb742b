"""The WSOL architectures (ADL, ACoL, SPG) on small_gap and the standard's backbones.

small_gap runs: a jitted train-mode forward and loss gradient per architecture,
the ADL key through ``ModelDef``, the class-map hook. The full-size backbones
are only traced: parameter counts against the reference definitions and map
sizes at 224 px.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from camjax import cam, models
from camjax.models.base import NotCamCompatible
from camjax.train.state import ModelDef
from camjax.wsol import acol, spg
from test_models import materialize

SMALL = dict(widths=(4, 8), blocks_per_stage=1)
IMAGES = jax.device_put(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32))
LABELS = jnp.asarray([2, 0])


@functools.lru_cache(maxsize=None)
def small(architecture, **kw):
  """A tiny small_gap of ``architecture`` with host-made values (same parameters for every architecture's trunk)."""
  return nnx.eval_shape(lambda: models.create("small_gap", num_classes=3, architecture=architecture, **SMALL, **kw))


def _loss(model, images, labels, architecture):
  if architecture == "acol":
    return acol.acol_loss(model.wsol_outputs(images, labels), labels)
  if architecture == "spg":
    return spg.spg_loss(model.wsol_outputs(images, labels), labels)
  return optax.softmax_cross_entropy_with_integer_labels(model(images)[0], labels).mean()


@pytest.mark.parametrize("architecture", acol.ARCHITECTURES)
def test_small_gap_trains_and_evaluates_in_every_architecture(architecture):
  model = materialize(small(architecture))
  model_def = ModelDef(model)
  params, stats, other = model_def.split(model)

  @jax.jit
  def step(params, stats, other):
    def loss_fn(p):
      net = model_def.merge(p, stats, other, train=True)
      return _loss(net, IMAGES, LABELS, architecture)
    return jax.value_and_grad(loss_fn)(params)

  loss, grads = step(params, stats, other)
  assert np.isfinite(float(loss)) and float(loss) > 0
  flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(grads)[0]}
  assert all(np.isfinite(g).all() for g in flat.values())
  # Every layer the method adds takes part in its loss (SPG's score maps, both ACoL branches).
  for path, g in flat.items():
    if "kernel" in path:
      assert np.abs(g).max() > 0, path
  logits, features = nnx.jit(lambda m, x: m(x))(model_def.merge(params, stats, other, train=False), IMAGES)
  assert logits.shape == (2, 3) and features.shape == (2, 8, 8, 8)
  assert hasattr(model, "wsol_outputs") == (architecture in ("acol", "spg"))
  assert hasattr(model, "class_maps") == (architecture == "acol")


def test_small_gap_architectures_share_the_trunk_and_add_the_standards_layers():
  paths = {a: {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(small(a), nnx.Param))}
           for a in acol.ARCHITECTURES}
  trunk = {p for p in paths["cam"] if not p.startswith("head/")}
  assert paths["adl"] == paths["cam"]  # ADL has no parameters
  assert all(trunk <= paths[a] for a in acol.ARCHITECTURES)
  assert {p.split("/")[1] for p in paths["acol"] - trunk} == {"classifier_A", "classifier_B"}
  assert {p.split("/")[1] for p in paths["spg"] - paths["cam"]} == {"SPG_B_1a", "SPG_B_2a", "SPG_B_shared", "SPG_C"}
  shapes = {"/".join(map(str, k)): v.shape for k, v in nnx.to_flat_state(nnx.state(small("spg"), nnx.Param))}
  assert shapes["head/SPG_B_1a/conv/kernel"] == (3, 3, 4, 8)  # reads the end of the first stage (4 channels)
  assert shapes["head/SPG_B_shared/score/kernel"] == (1, 1, 8, 1)
  assert [d.threshold for d in small("adl").adl] == [0.9, 0.9] and small("adl").adl_blocks == (0, 1)


def test_adl_is_the_identity_in_eval_and_draws_from_the_models_state_in_train():
  cam_net, adl_net = materialize(small("cam")), materialize(small("adl"))
  cam_net.eval()
  adl_net.eval()
  forward = nnx.jit(lambda m, x: m(x))
  for got, want in zip(forward(adl_net, IMAGES), forward(cam_net, IMAGES)):
    np.testing.assert_array_equal(got, want)
  adl_net.train()
  model_def = ModelDef(adl_net)
  copy = model_def.merge(*model_def.split(adl_net), train=True)
  train_forward = nnx.jit(lambda m, x: m(x)[0])
  first, second = train_forward(adl_net, IMAGES), train_forward(adl_net, IMAGES)
  np.testing.assert_array_equal(train_forward(copy, IMAGES), first)
  np.testing.assert_array_equal(train_forward(copy, IMAGES), second)
  # The draws move on with the stream: some of 12 calls differ from the eval output (the importance map
  # alone, or a drop, both change the features).
  outputs = [np.asarray(train_forward(adl_net, IMAGES)) for _ in range(12)]
  assert len({o.tobytes() for o in outputs}) > 1


def test_class_map_hook_serves_acol_maps_and_cam_for_the_rest():
  net = materialize(small("acol"))
  out = cam.class_activation_maps(net, IMAGES, class_ids=LABELS, upsample=False)
  net.eval()
  _, features = net(IMAGES)
  np.testing.assert_allclose(out.maps, net.head.class_maps(features, LABELS[:, None]), rtol=1e-6)
  maps = np.asarray(out.maps)
  assert maps.min() >= 0 and np.allclose(maps.max(axis=(2, 3)), 1.0)  # max of two normalised maps
  with pytest.raises(NotCamCompatible, match="class_maps"):
    cam.cam_weights(net)
  for architecture in ("cam", "spg"):
    other = materialize(small(architecture))
    other.eval()
    logits, features = other(IMAGES)
    ids = jnp.asarray([[0, 1, 2]] * 2)
    kernel, bias = cam.cam_weights(other)
    got = cam.class_maps(other, features, ids)
    np.testing.assert_array_equal(got, cam.maps_from_features(features, kernel, ids))
    np.testing.assert_allclose(np.asarray(got).mean(axis=(2, 3)) + np.asarray(bias), logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw, message", [
    (dict(architecture="has"), r"architecture must be one of \('cam', 'acol', 'spg', 'adl'\), got 'has'"),
    (dict(architecture="spg", widths=(8,)), "give widths two or more entries"),
    (dict(adl_drop_rate=-1.0), r"adl_drop_rate must be a number in \[0, 1\]"),
])
def test_small_gap_rejects_bad_architecture_values_with_one_line(kw, message):
  with pytest.raises(ValueError, match=message):
    models.create("small_gap", num_classes=3, **{**SMALL, **kw})
