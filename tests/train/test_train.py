"""The training loop: optimizer groups, accumulation, resume bit for bit, preemption, NaN, corrupt checkpoints."""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import _train_helpers as h
from camjax import train
from camjax.train import sharding
from camjax.errors import UserError
from camjax.train.metrics import MetricsWriter, read_metrics


tiny = h.tiny


# ---------------------------------------------------------------- optimizer


def test_param_groups_new_layers_frozen_and_decay_mask():
  c = tiny(**{"pretrained.freeze": ("blocks/0/.*",), "optimizer.new_layer_patterns": ("head/.*",)})
  params, _, _ = train.ModelDef(train.build_model(c)).split(train.build_model(c))
  labels = {sharding.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(train.param_labels(params, c))[0]}
  assert labels["head/classifier/kernel"] == "new"
  assert labels["blocks/0/conv/kernel"] == "frozen"
  assert labels["blocks/1/norm/scale"] == "base"
  mask = {sharding.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(train.decay_mask(params))[0]}
  assert mask["blocks/1/conv/kernel"] and not mask["blocks/1/norm/scale"] and not mask["blocks/1/norm/bias"]


def test_group_learning_rates_follow_the_multiplier():
  c = tiny(**{"optimizer.momentum": 0.0, "optimizer.weight_decay": 0.0, "optimizer.schedule": "constant",
              "optimizer.lr": 0.1, "optimizer.new_layer_lr_mult": 10.0, "pretrained.freeze": ("blocks/0/.*",)})
  params = {"blocks": {"0": {"conv": {"kernel": jnp.ones((2, 2))}}, "1": {"conv": {"kernel": jnp.ones((2, 2))}}},
            "head": {"classifier": {"kernel": jnp.ones((2, 2))}}}
  tx, _ = train.make_optimizer(c, params, 10)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates["blocks"]["1"]["conv"]["kernel"], -0.1)
  np.testing.assert_allclose(updates["head"]["classifier"]["kernel"], -1.0, rtol=1e-6)
  np.testing.assert_array_equal(updates["blocks"]["0"]["conv"]["kernel"], 0.0)


def test_weight_decay_only_on_kernels():
  c = tiny(**{"optimizer.momentum": 0.0, "optimizer.weight_decay": 0.5, "optimizer.schedule": "constant",
              "optimizer.lr": 1.0, "optimizer.new_layer_patterns": ()})
  params = {"conv": {"kernel": jnp.full((2,), 2.0), "bias": jnp.full((2,), 2.0)}}
  tx, _ = train.make_optimizer(c, params, 10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates["conv"]["kernel"], -1.0)  # -lr * wd * 2
  np.testing.assert_array_equal(updates["conv"]["bias"], 0.0)


def test_step_schedule_boundaries_are_fractions_of_training():
  c = tiny(**{"optimizer.lr": 1.0, "optimizer.boundaries": (0.5, 0.75), "optimizer.decay_factor": 0.1})
  s = train.make_schedule(c.optimizer, 100)
  np.testing.assert_allclose([s(0), s(49), s(50), s(74), s(75)], [1, 1, 0.1, 0.1, 0.01], rtol=1e-6)


def test_pattern_that_matches_nothing_is_an_error():
  c = tiny(**{"optimizer.new_layer_patterns": ("classifer/.*",)})
  model = train.build_model(c)
  params, _, _ = train.ModelDef(model).split(model)
  with pytest.raises(UserError, match="matches no parameter"):
    train.param_labels(params, c)


def test_unknown_schedule_or_optimizer_is_a_user_error_naming_the_flag():
  params = {"conv": {"kernel": jnp.ones((2,))}}
  with pytest.raises(UserError, match=r"--config\.optimizer\.schedule to constant, step or cosine"):
    train.make_schedule(tiny(**{"optimizer.schedule": "linear"}).optimizer, 10)
  with pytest.raises(UserError, match=r"--config\.optimizer\.name to sgd, adam or adamw"):
    train.make_optimizer(tiny(**{"optimizer.name": "lion", "optimizer.new_layer_patterns": ()}), params, 10)


# ---------------------------------------------------------------- the step


def _one_step(c, batch):
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  state, shardings, model_def, tx, schedule = train.init_state(c, mesh, 10)
  step = jax.jit(train.make_train_step(model_def, tx, schedule, c, mesh))
  return step(state, batch)


def test_gradient_accumulation_equals_the_full_batch():
  # Without BatchNorm the accumulated gradient is exactly the mean over the batch.
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(8, 16, 16, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 4, 8), jnp.int32)}
  results = []
  for accum in (1, 4):
    c = tiny(**{"training.grad_accum_steps": accum})
    with c.unlocked():
      c.model.overrides.batch_norm = False
    results.append(_one_step(c, batch))
  (s1, m1), (s4, m4) = results
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s4["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bfloat16_compute_keeps_float32_parameters():
  rng = np.random.default_rng(1)
  batch = {"image": jnp.asarray(rng.normal(size=(8, 16, 16, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 4, 8), jnp.int32)}
  state, metrics = _one_step(tiny(**{"model.dtype": "bfloat16"}), batch)
  assert {x.dtype for x in jax.tree.leaves(state["params"])} == {jnp.dtype("float32")}
  assert np.isfinite(metrics["loss"]) and state["step"] == 1


# ---------------------------------------------------------------- whole runs (in process)


def test_metrics_files_and_nan_guard(tmp_path):
  workdir = str(tmp_path / "nan")
  c = tiny(**{"training.num_steps": 6})
  with h.nan_images_at(3), pytest.raises(train.NonFiniteLossError, match="at step 3"):
    train.train(c, workdir, devices=jax.devices()[:1])
  assert h.checkpoint_steps(workdir) == [2]  # nothing saved after the NaN
  saved = h.read_state(workdir, 2)
  assert all(np.isfinite(v).all() for k, v in saved.items() if v.dtype.kind == "f")
  records = read_metrics(workdir)
  assert [r["step"] for r in records] == [1, 2]
  assert {"loss", "accuracy", "learning_rate", "images_per_second"} <= set(records[0])
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A finished two-step run of the tiny config (checkpoints at step 2)."""
  workdir = str(tmp_path_factory.mktemp("source"))
  train.train(tiny(**{"training.num_steps": 2}), workdir, devices=jax.devices()[:1])
  return workdir


def test_pretrained_load_and_freeze(source, tmp_path):
  c = tiny(**{"training.num_steps": 2, "training.seed": 7, "pretrained.path": source,
              "pretrained.skip": ("head/.*",), "pretrained.freeze": ("blocks/0/.*",)})
  result = train.train(c, str(tmp_path / "target"), devices=jax.devices()[:1])
  before = h.read_state(source)
  after = {sharding.path_str(p): np.asarray(v)
           for p, v in jax.tree_util.tree_flatten_with_path(result.state["params"])[0]}
  np.testing.assert_array_equal(after["blocks/0/conv/kernel"], before["params/blocks/0/conv/kernel"])  # loaded, frozen
  assert not np.array_equal(after["blocks/1/conv/kernel"], before["params/blocks/1/conv/kernel"])  # loaded, trained


def test_pretrained_path_errors_say_what_to_change(source, tmp_path):
  def load(**changes):
    c = tiny(**{"pretrained.path": source, **changes})
    model = train.build_model(c)
    params, stats, _ = train.ModelDef(model).split(model)
    train.load_pretrained(c, params, stats)

  missing = str(tmp_path / "no_such_run")
  with pytest.raises(UserError, match=f"pretrained.path={re.escape(missing)} does not exist; fix --config.pretrained"):
    load(**{"pretrained.path": missing})
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="holds no camjax checkpoint; set --config.pretrained.path"):
    load(**{"pretrained.path": str(tmp_path / "empty")})
  with pytest.raises(UserError, match=r"'head/classifier/kernel' has shape \(8, 4\), the model \(8, 5\); add it to "
                                      r"--config.pretrained.skip"):
    load(**{"model.num_classes": 5})


def test_resuming_a_checkpoint_of_another_config_is_a_user_error(source, tmp_path):
  workdir = str(tmp_path / "other")
  shutil.copytree(source, workdir)
  with pytest.raises(UserError, match="written by another config .*; run with the config that wrote it"):
    train.train(tiny(**{"training.num_steps": 4, "model.num_classes": 5}), workdir, devices=jax.devices()[:1])
  assert h.checkpoint_steps(workdir) == [2]


def test_grad_accum_that_does_not_divide_the_batch_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match="grad_accum_steps=3 does not divide the per-device batch 8; change one"):
    train.train(tiny(**{"training.grad_accum_steps": 3}), str(tmp_path / "accum"), devices=jax.devices()[:1])


def test_a_nan_at_the_last_step_is_not_saved_by_the_final_save(tmp_path):
  workdir = str(tmp_path / "last")
  with pytest.raises(train.NonFiniteLossError, match="at step 4: .*grad_norm is nan, the updated param"):
    with h.nan_images_at(4):
      train.train(tiny(**{"training.num_steps": 4}), workdir, devices=jax.devices()[:1])
  assert h.checkpoint_steps(workdir) == [2]


def test_a_resumed_run_drops_the_metrics_past_its_checkpoint(tmp_path):
  """A run stopped after logging step 4 but before its checkpoint 4 landed resumes at 2: steps 3 and 4
  are logged again, and metrics.jsonl and TensorBoard keep one value per step."""
  workdir = str(tmp_path / "resumed")
  devices = jax.devices()[:1]
  train.train(tiny(**{"training.num_steps": 4}), workdir, devices=devices)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  time.sleep(1.1)  # event files are named by the second they open in: keep the three in writing order
  with MetricsWriter(workdir) as writer:  # an eval of the lost step 4: gone too
    writer.write(4, {"top1": 1.0}, split="eval")
  time.sleep(1.1)
  train.train(tiny(**{"training.num_steps": 6}), workdir, devices=devices)
  assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3, 4, 5, 6]
  assert list(h.losses(workdir)) == [1, 2, 3, 4, 5, 6]
  assert h.tensorboard_steps(workdir) == [1, 2, 3, 4, 5, 6]


def test_metrics_writer_resume_step_keeps_earlier_records_in_order(tmp_path):
  workdir = str(tmp_path)
  with MetricsWriter(workdir, tensorboard=False) as writer:
    for step in range(1, 14):
      writer.write(step, {"loss": float(step)})
    writer.write(8, {"top1": 50.0}, split="eval")
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 14, "split": "tr')  # a write cut short by a kill
  with MetricsWriter(workdir, tensorboard=False, resume_step=8) as writer:
    for step in range(9, 12):
      writer.write(step, {"loss": 100.0 + step})
  records = read_metrics(workdir)
  assert [(r["step"], r["split"]) for r in records] == [(s, "train") for s in range(1, 9)] + [(8, "eval")] + [
      (s, "train") for s in range(9, 12)]
  assert [r["loss"] for r in read_metrics(workdir, "train")] == [*range(1, 9), 109.0, 110.0, 111.0]
  assert not [n for n in os.listdir(workdir) if n != "metrics.jsonl"]  # no temporary file left behind


def test_restore_for_eval_without_a_checkpoint_is_a_user_error_and_creates_nothing(tmp_path):
  workdir = str(tmp_path / "empty")
  with pytest.raises(UserError, match="no checkpoint in .*; train first with --mode=train"):
    train.restore_for_eval(tiny(), workdir)
  assert not os.path.exists(workdir)


# ---------------------------------------------------------------- faults (subprocesses, bitwise on the CPU)

STEPS = ["--config.training.num_steps=8"]
SLOW = h.slow_steps(0.4)  # environment: every step waits 0.4 s, so signals land between checkpoints


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reference"))
  proc = h.run(h.cli(workdir, *STEPS))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert h.checkpoint_steps(workdir) == [2, 4, 6, 8]
  return workdir, proc


@pytest.fixture(scope="module")
def reference(reference_run):
  return reference_run[0]


def test_a_run_without_progress_bar_ends_with_a_summary_line(reference_run):
  workdir, proc = reference_run
  summary = re.fullmatch(r"camjax: trained 8 steps \(from 0\) in ([0-9.]+) s; final loss ([0-9.]+), "
                         r"accuracy ([0-9.]+); checkpoint step 8 in (\S+)", proc.stdout.strip().splitlines()[-1])
  assert summary, proc.stdout
  last = read_metrics(workdir, "train")[-1]
  assert last["step"] == 8
  assert float(summary[2]) == round(last["loss"], 4) and float(summary[3]) == round(last["accuracy"], 3)
  assert summary[4] == os.path.join(workdir, "checkpoints")


def test_nonfinite_gradients_and_parameters_stop_before_saving_with_exit_3(reference, tmp_path):
  """lr=1e30 from step 4: the loss stays finite (log 4) while the gradient norm and weights go NaN."""
  workdir = str(tmp_path / "diverged")
  shutil.copytree(reference, workdir)
  for step in (6, 8):
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  proc = h.run(h.cli(workdir, *STEPS, "--config.optimizer.lr=1e30"))
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  stopped = [line for line in proc.stderr.splitlines() if line.startswith("camjax: stopped: ")]
  assert len(stopped) == 1, proc.stderr[-3000:]
  found = re.search(r"non-finite values at step (\d+): (.*); stopped without saving that step "
                    r"\(last good checkpoint: step 4 in ", stopped[0])
  assert found, stopped[0]
  assert int(found[1]) > 4
  assert "loss is" not in found[2]  # a guard on the loss alone would have saved this step
  assert "grad_norm is nan" in found[2] and "the updated parameters hold NaN/Inf" in found[2]
  assert h.checkpoint_steps(workdir) == [2, 4]
  assert all(np.isfinite(v).all() for v in h.read_state(workdir).values() if v.dtype.kind == "f")
  assert all(math.isfinite(r["grad_norm"]) and math.isfinite(r["loss"]) for r in read_metrics(workdir, "train"))


def test_eval_without_a_checkpoint_prints_one_line_every_time(tmp_path):
  for attempt in range(3):
    workdir = str(tmp_path / f"empty{attempt}")
    proc = h.run(h.cli(workdir, mode="eval"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("camjax: error: ")]
    assert len(errors) == 1 and "no checkpoint in" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "futures" not in proc.stderr, proc.stderr


def test_resuming_with_another_config_exits_2_with_one_line(reference, tmp_path):
  workdir = str(tmp_path / "other")
  shutil.copytree(reference, workdir)
  proc = h.run(h.cli(workdir, *STEPS, "--config.model.num_classes=5"))
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("camjax: error: ")]
  assert len(errors) == 1 and "written by another config" in errors[0], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr and "futures" not in proc.stderr, proc.stderr[-3000:]


def test_sigterm_then_sigkill_then_resume_is_bitwise_identical(reference, tmp_path):
  workdir = str(tmp_path / "run")
  # 1. Preempted: SIGTERM after the first checkpoint -> the step finishes, a checkpoint is saved, exit 0.
  proc = h.start(h.cli(workdir, *STEPS), **SLOW)
  h.wait_for(os.path.join(workdir, "checkpoints", "2"), proc)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  assert "preempted at step" in out
  stopped = h.checkpoint_steps(workdir)[-1]
  assert 2 <= stopped <= 5
  # 2. Killed: SIGKILL after the next checkpoint appears.
  proc = h.start(h.cli(workdir, *STEPS), **SLOW)
  h.wait_for(os.path.join(workdir, "checkpoints", str(stopped + (2 - stopped % 2))), proc)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  # 3. Resumed to the end: the same bits as the run that never stopped.
  proc = h.run(h.cli(workdir, *STEPS))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed from checkpoint" in proc.stderr
  resumed = int(re.search(r"resumed from checkpoint at step (\d+)", proc.stderr)[1])
  assert f"camjax: trained {8 - resumed} steps (from {resumed}) in " in proc.stdout
  assert h.checkpoint_steps(workdir)[-1] == 8
  h.assert_bitwise_equal(h.read_state(workdir), h.read_state(reference))
  assert h.losses(workdir) == h.losses(reference)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(reference, tmp_path):
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(reference, workdir)
  latest = os.path.join(workdir, "checkpoints", "8")
  for path in glob.glob(os.path.join(latest, "state", "**", "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"\0garbage")
  proc = h.run(h.cli(workdir, *STEPS))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "checkpoint at step 8" in proc.stderr and "unreadable" in proc.stderr
  assert "resumed from checkpoint at step 6" in proc.stderr
  assert os.listdir(os.path.join(workdir, "corrupt_checkpoints"))
  h.assert_bitwise_equal(h.read_state(workdir), h.read_state(reference))


def test_train_and_eval_writes_consistent_scores(tmp_path):
  import json

  from camjax import main

  workdir = str(tmp_path / "eval")
  results = main.run(tiny(**{"training.num_steps": 2}), workdir, "train_and_eval")
  saved = json.load(open(os.path.join(workdir, "eval_results.json")))
  assert saved["num_images"] == 16 and saved["step"] == 2
  np.testing.assert_allclose(saved["classification"]["top1_acc"], 100 - saved["paper"]["top1_cls_err"])
  assert 0 <= saved["wsol"]["MaxBoxAccV2"] <= 100 and "MaxBoxAcc" in saved["wsol"]
  assert results["wsol"]["MaxBoxAccV2"] == saved["wsol"]["MaxBoxAccV2"]
  assert read_metrics(workdir, "eval")[-1]["wsol/MaxBoxAccV2"] == saved["wsol"]["MaxBoxAccV2"]


# ---------------------------------------------------------------- every paper config traces its train step


def _max_pool_differentiable() -> bool:
  """camjax.models.layers.max_pool must support reverse mode for the zoo to train."""
  from camjax.models import layers

  try:
    jax.jit(jax.grad(lambda x: layers.max_pool(x, 3, 2).sum()))(jnp.ones((1, 8, 8, 1)))
    return True
  except ValueError:
    return False


MAX_POOL_OK = _max_pool_differentiable()


@pytest.mark.parametrize("config_name", ["googlenet_gap", "googlenet_gmp", "vgg16_gap", "alexnet_gap",
                                         "alexnet_star_gap", "nin", "googlenet_gap_cub"])
def test_paper_configs_trace_a_train_step(config_name):
  import importlib

  if not MAX_POOL_OK:
    pytest.xfail("camjax.models.layers.max_pool is not differentiable (reduce_window with an array init value)")
  c = importlib.import_module(f"configs.{config_name}").get_config()
  c.model.num_classes = 8
  with c.unlocked():
    c.model.overrides.width_mult = 0.0625  # tracing only: shapes matter, not sizes
  c.training.global_batch_size = 2
  model = nnx.eval_shape(lambda: train.build_model(c))  # shapes only: no initialiser is compiled
  model_def = train.ModelDef(model)
  params, stats, other = model_def.split(model)
  assert not any(isinstance(x, jax.Array) for x in jax.tree.leaves((params, stats, other)))
  tx, schedule = train.make_optimizer(c, params, 10)  # the config's new-layer patterns match this model
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "batch_stats": stats, "other": other,
           "opt_state": jax.eval_shape(tx.init, params)}
  size = c.data.image_size
  batch = {"image": jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  new_state, metrics = jax.eval_shape(train.make_train_step(model_def, tx, schedule, c, mesh), state, batch)
  assert jax.tree.structure(new_state["params"]) == jax.tree.structure(params)
  assert metrics["loss"].shape == ()


def test_resume_with_the_grain_pipeline_is_bitwise_identical(tmp_path):
  """The real input pipeline's state goes into the checkpoint: a run stopped at step 3 and resumed
  from its step-2 checkpoint ends with the parameters of a run that never stopped."""
  from configs import quickstart

  def config(**changes):
    c = quickstart.get_config()
    c.data.builder_config = "tiny"
    c.data.data_dir = str(tmp_path / "tfds")
    c.data.image_size = 32
    with c.unlocked():
      c.model.overrides.widths = (4, 8)
      c.model.overrides.blocks_per_stage = (1, 1)
    c.training.global_batch_size = 8
    c.training.num_steps = 4
    c.training.log_every = 1
    c.training.checkpoint_every = 2
    c.training.progress_bar = False
    c.optimizer.warmup_steps = 0
    for key, value in changes.items():
      section, name = key.split(".")
      setattr(getattr(c, section), name, value)
    return c

  devices = jax.devices()[:1]
  straight = train.train(config(), str(tmp_path / "straight"), devices=devices)
  stopped = str(tmp_path / "stopped")
  with pytest.raises(train.NonFiniteLossError):
    with h.nan_images_at(3):
      train.train(config(), stopped, devices=devices)
  assert h.checkpoint_steps(stopped) == [2]
  data_state = json.load(open(os.path.join(stopped, "checkpoints", "2", "data", "metadata")))
  assert data_state["process_count"] == 1 and data_state["states"][0]["next_index"] == 16
  resumed = train.train(config(), stopped, devices=devices)
  for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  assert h.losses(stopped) == h.losses(str(tmp_path / "straight"))
