"""The WSOL method dispatch: config checks, the loss of each method, its key in the train step, runs of the loop."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import _train_helpers as h
from camjax import train
from camjax.errors import ConfigError
from camjax.train import sharding
from camjax.wsol import training
from camjax.wsol.has import hide_patches

tiny = h.tiny


def _batch(n: int = 8, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.normal(size=(n, 16, 16, 3)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 4, n), jnp.int32)}


# ---------------------------------------------------------------- config


def test_model_overrides_carry_the_architecture_and_its_hyperparameters():
  c = tiny(**{"method.acol_threshold": 0.6, "method.adl_drop_rate": 0.5, "method.adl_threshold": 0.8})
  expected = {"cam": {}, "has": {}, "cutmix": {}, "spg": {"architecture": "spg"},
              "acol": {"architecture": "acol", "acol_threshold": 0.6},
              "adl": {"architecture": "adl", "adl_drop_rate": 0.5, "adl_threshold": 0.8}}
  for name, overrides in expected.items():
    c.method.name = name
    assert training.model_overrides(c.method) == overrides


@pytest.mark.parametrize("changes, message", [
    ({"method.name": "hide_and_seek"},
     "method.name='hide_and_seek' is unknown; set --config.method.name to one of: cam, has, acol, spg, adl, cutmix"),
    ({"method.name": "acol", "model.name": "googlenet_gap"},
     "method.name='acol' needs a model with the ACoL architecture and model.name='googlenet_gap' has none; set "
     "--config.model.name to one of: inceptionv3_wsol, resnet50_wsol, small_gap, vgg16_wsol"),
    ({"method.name": "has", "method.has_drop_rate": 1.5},
     "method.has_drop_rate=1.5; set --config.method.has_drop_rate to a number in [0, 1]"),
    ({"method.name": "has", "method.has_grid_size": -2}, "method.has_grid_size=-2; set --config.method.has_grid_size"),
    ({"method.name": "adl", "method.adl_drop_rate": -0.1}, "method.adl_drop_rate=-0.1; set"),
    ({"method.name": "adl", "method.adl_threshold": 2.0}, "method.adl_threshold=2.0; set"),
    ({"method.name": "acol", "method.acol_threshold": 1.2}, "method.acol_threshold=1.2; set"),
    ({"method.name": "spg", "method.spg_thresholds": ((0.7, 0.01), (0.05, 0.5), (0.7, 0.1))},
     "set --config.method.spg_thresholds to three (high, low) pairs with 0 <= low <= high <= 1"),
    ({"method.name": "cutmix", "method.cutmix_beta": -1.0},
     "method.cutmix_beta=-1.0; set --config.method.cutmix_beta to a number >= 0"),
    ({"method.name": "cutmix", "method.cutmix_prob": 1.5}, "method.cutmix_prob=1.5; set"),
])
def test_a_method_that_cannot_work_is_one_config_error_naming_the_field(changes, message):
  with pytest.raises(ConfigError) as raised:
    training.check_method(tiny(**changes))
  assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_architecture_is_set_by_the_method_not_by_model_overrides():
  c = tiny(**{"method.name": "adl"})
  with c.unlocked():
    c.model.overrides.architecture = "adl"
  with pytest.raises(ConfigError, match="model.overrides.architecture is set by the method; drop it"):
    training.check_method(c)


def test_the_defaults_pass_and_only_the_chosen_methods_fields_are_read():
  for name in training.METHODS:
    training.check_method(tiny(**{"method.name": name}))
  training.check_method(tiny(**{"method.name": "has", "method.cutmix_beta": -1.0, "method.adl_drop_rate": 2.0}))


def test_train_refuses_a_bad_method_before_writing_anything_and_so_does_build_model(tmp_path):
  workdir = str(tmp_path / "run")
  with pytest.raises(ConfigError, match="method.name='hsa' is unknown"):
    train.train(tiny(**{"method.name": "hsa"}), workdir, devices=jax.devices()[:1])
  assert not os.path.exists(workdir)
  with pytest.raises(ConfigError, match="model.name='googlenet_gap' has none; set --config.model.name"):
    train.build_model(tiny(**{"method.name": "spg", "model.name": "googlenet_gap"}))  # evaluation, the tools


# ---------------------------------------------------------------- the loss of each method


def test_method_key_is_a_function_of_seed_and_step():
  data = lambda seed, step: np.asarray(jax.random.key_data(training.method_key(seed, step)))  # noqa: E731
  np.testing.assert_array_equal(data(0, 3), data(0, jnp.int32(3)))
  assert len({data(s, t).tobytes() for s in (0, 1) for t in (0, 1, 2)}) == 6
  assert data(0, 0).tobytes() != np.asarray(jax.random.key_data(jax.random.key(0))).tobytes()


def test_cam_is_plain_cross_entropy_and_has_or_cutmix_that_change_nothing_equal_it():
  batch = _batch()
  images, labels = batch["image"], batch["label"]
  key = jax.random.key(5)
  unchanged = ({"method.name": "cam"}, {"method.name": "adl"}, {"method.name": "has", "method.has_drop_rate": 0.0},
               {"method.name": "has", "method.has_grid_size": 0}, {"method.name": "cutmix", "method.cutmix_prob": 0.0})

  @nnx.jit
  def run(model):  # one compiled program for every case
    logits = model(images)[0]
    plain = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    cases = [training.method_loss(tiny(**changes).method, model, images, labels, key) for changes in unchanged]
    has = training.method_loss(tiny(**{"method.name": "has"}).method, model, images, labels, key)[0]
    hidden = model(hide_patches(key, images, 4, 0.5))[0]
    return plain, logits, cases, has, optax.softmax_cross_entropy_with_integer_labels(hidden, labels).mean()

  plain, logits, cases, has, has_by_hand = run(train.build_model(tiny()))
  for changes, (loss, out) in zip(unchanged, cases):
    assert float(loss) == float(plain), changes
    np.testing.assert_array_equal(out, logits)
  np.testing.assert_allclose(has, has_by_hand, rtol=1e-6)
  assert float(has) != float(plain)


def test_the_step_draws_hide_and_seek_from_the_seed_and_step_one_key_per_micro_batch():
  """Two micro-batches (rows 0, 2, ... and 1, 3, ...): the loss of step t is the mean of HaS losses with keys
  fold_in(method_key(seed, t), i), computed here outside the step, for t = 0 and 1."""
  c = tiny(**{"method.name": "has", "training.grad_accum_steps": 2, "training.seed": 3})
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  state, _, model_def, tx, schedule = train.init_state(c, mesh, 10)
  step_fn = jax.jit(train.make_train_step(model_def, tx, schedule, c, mesh))
  batch = _batch(seed=1)

  @jax.jit
  def micro_loss(state, images, labels, key):
    model = model_def.merge(state["params"], state["batch_stats"], state["other"], train=True)
    return training.method_loss(c.method, model, images, labels, key)[0]

  def loss(state, i, key):
    return float(micro_loss(state, batch["image"][i::2], batch["label"][i::2], key))

  for t in range(2):
    new_state, metrics = step_fn(state, batch)
    step_key = training.method_key(3, t)
    np.testing.assert_allclose(metrics["loss"], np.mean([loss(state, i, jax.random.fold_in(step_key, i))
                                                          for i in range(2)]), rtol=1e-6)
    # Not the step's key itself for both micro-batches, nor the other step's draw (10 times the tolerance).
    assert abs(float(metrics["loss"]) - np.mean([loss(state, i, step_key) for i in range(2)])) > 1e-5
    other = training.method_key(3, 1 - t)
    assert abs(float(metrics["loss"]) - np.mean([loss(state, i, jax.random.fold_in(other, i))
                                                 for i in range(2)])) > 1e-5
    state = new_state


def _wsol_losses(c, images, labels, reference):
  """(method_loss's loss, its logits, wsol_outputs' logits, ``reference(wsol_outputs)``, CE of the logits)."""

  @nnx.jit
  def run(model):
    loss, logits = training.method_loss(c.method, model, images, labels, jax.random.key(0))
    outputs = model.wsol_outputs(images, labels)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, logits, outputs["logits"], reference(outputs), ce

  return run(train.build_model(c))


def test_acol_and_spg_train_on_their_own_losses_with_the_configured_thresholds():
  from camjax.wsol.acol import acol_loss
  from camjax.wsol.spg import spg_loss

  batch = _batch(4)
  images, labels = batch["image"], batch["label"]
  loss, logits, wsol_logits, expected, ce = _wsol_losses(tiny(**{"method.name": "acol"}), images, labels,
                                                         lambda out: acol_loss(out, labels))
  np.testing.assert_array_equal(logits, wsol_logits)
  assert float(loss) == float(expected) and float(loss) > float(ce)  # A's and B's cross-entropies

  thresholds, defaults = ((0.9, 0.2), (0.6, 0.3), (0.8, 0.2)), tiny().method.spg_thresholds
  c = tiny(**{"method.name": "spg", "method.spg_thresholds": thresholds})
  loss, logits, wsol_logits, expected, ce = _wsol_losses(
      c, images, labels, lambda out: (spg_loss(out, labels, thresholds), spg_loss(out, labels, defaults)))
  np.testing.assert_array_equal(logits, wsol_logits)
  assert float(loss) == float(expected[0]) and float(loss) > float(ce)  # plus three pixel losses
  assert float(loss) != float(expected[1])  # the configured thresholds reach the loss


# ---------------------------------------------------------------- runs of the real loop


@pytest.fixture(scope="module")
def cam_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("cam"))
  return train.train(tiny(**{"training.num_steps": 2}), workdir, devices=jax.devices()[:1]), workdir


@pytest.mark.parametrize("method", ["has", "cutmix", "acol", "spg", "adl"])
def test_every_method_trains_through_the_loop(method, cam_run, tmp_path):
  cam_result, cam_dir = cam_run
  workdir = str(tmp_path / method)
  result = train.train(tiny(**{"training.num_steps": 2, "method.name": method}), workdir, devices=jax.devices()[:1])
  assert result.step == 2 and h.checkpoint_steps(workdir) == [2]
  losses = h.losses(workdir)
  assert list(losses) == [1, 2] and all(np.isfinite(v) for v in losses.values())
  assert losses[1] != h.losses(cam_dir)[1]  # the method changed the first step's loss (same seed, same batch)
  params = jax.tree.leaves(result.state["params"])
  assert all(np.isfinite(np.asarray(p)).all() for p in params)
  same_tree = jax.tree.structure(result.state["params"]) == jax.tree.structure(cam_result.state["params"])
  assert same_tree == (method in ("has", "cutmix", "adl"))  # ACoL and SPG train heads of their own
  if method == "adl":  # its key lives in the model state the loop carries and saves
    assert jax.tree.leaves(result.state["other"]) and not jax.tree.leaves(cam_result.state["other"])
