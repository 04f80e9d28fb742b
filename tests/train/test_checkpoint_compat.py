"""A checkpoint written by an earlier camjax layout restores, array for array, with today's code."""

from __future__ import annotations

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

import _train_helpers as h
from camjax import train
from camjax.train import sharding

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "run_before_move")


def test_a_checkpoint_from_before_the_package_move_restores(tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(FIXTURE, workdir)  # restoring may tidy the directory; keep the fixture as it is
  result = train.restore_for_eval(h.tiny(), workdir)
  assert result.step == 2
  expected = json.load(open(os.path.join(FIXTURE, "expected_arrays.json")))
  restored = {}
  for group in ("params", "batch_stats"):
    for path, leaf in jax.tree_util.tree_flatten_with_path(result.state[group])[0]:
      restored[f"{group}/{sharding.path_str(path)}"] = np.asarray(leaf)
  assert {k for k in expected if k.split("/")[0] in ("params", "batch_stats")} == set(restored)
  for name, want in expected.items():
    if name in restored:
      got = restored[name]
      assert list(got.shape) == want["shape"], name
      np.testing.assert_allclose(got.astype(np.float64).sum(), want["sum"], rtol=1e-6, atol=1e-6, err_msg=name)
      assert float(got.ravel()[0]) == want["first"], name


# ----------------------------------------------------------------------------- one reader for every command


def _saved_model_arrays(workdir: str) -> dict:
  saved = train.read_checkpoint_arrays(os.path.join(workdir, "checkpoints", "2", "state"))
  return {f"{g}/{sharding.path_str(p)}": np.asarray(v) for g in ("params", "batch_stats")
          for p, v in jax.tree_util.tree_flatten_with_path(saved[g])[0]}


def _model_arrays(model) -> dict:
  from flax import nnx

  _, params, stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  return {f"{g}/{sharding.path_str(p)}": np.asarray(v) for g, state in (("params", params), ("batch_stats", stats))
          for p, v in jax.tree_util.tree_flatten_with_path(state.to_pure_dict())[0]}


def test_cam_images_and_finegrained_read_a_workdir_through_the_shared_function(tmp_path, monkeypatch):
  from camjax.features import finegrained
  from camjax.tools import cam_images
  from camjax.train import checkpoint
  from configs import finegrained_tiny

  workdir = str(tmp_path / "run")
  shutil.copytree(FIXTURE, workdir)
  calls = []
  shared = checkpoint.restore_model

  def spy(config, path, **kwargs):
    calls.append(path)
    return shared(config, path, **kwargs)

  monkeypatch.setattr(checkpoint, "restore_model", spy)
  expected = _saved_model_arrays(workdir)
  for_cams = cam_images.model_from_checkpoint(h.tiny(), workdir)
  config = finegrained_tiny.get_config()  # another model: the run's config.json names the backbone's
  with config.unlocked():
    config.backbone_workdir = workdir
  backbone, info = finegrained.load_backbone(config)
  assert calls == [workdir, workdir]
  assert info["source"] == "checkpoint" and info["step"] == 2
  for model in (for_cams, backbone):
    got = _model_arrays(model)
    assert set(got) == set(expected)
    for name, want in expected.items():
      np.testing.assert_array_equal(got[name], want, err_msg=name)
  # A step dir names the same checkpoint.
  step_dir = os.path.join(workdir, "checkpoints", "2")
  np.testing.assert_array_equal(_model_arrays(checkpoint.model_from_workdir(h.tiny(), step_dir))["params/head/"
                                                                                                   "classifier/kernel"],
                                expected["params/head/classifier/kernel"])


def test_model_from_workdir_errors_and_corrupt_fallback(tmp_path, caplog):
  from camjax.errors import UserError
  from camjax.train import checkpoint

  with pytest.raises(UserError, match="does not exist"):
    checkpoint.model_from_workdir(h.tiny(), str(tmp_path / "nope"))
  (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
  with pytest.raises(UserError, match="holds no camjax checkpoint"):
    checkpoint.model_from_workdir(h.tiny(), str(tmp_path / "empty"))
  workdir = str(tmp_path / "run")
  shutil.copytree(FIXTURE, workdir)
  with pytest.raises(UserError, match=r"does not fit model small_gap \(use the config that wrote it\): "
                                      r"params/head/classifier/kernel: checkpoint \(8, 4\) != model \(8, 5\)") as e:
    checkpoint.model_from_workdir(h.tiny(**{"model.num_classes": 5}), workdir)
  assert "\n" not in str(e.value)
  # A newer step that cannot be read: the previous one restores, and the run's directory stays as it was.
  newer = os.path.join(workdir, "checkpoints", "3")
  shutil.copytree(os.path.join(workdir, "checkpoints", "2"), newer)
  for path in glob.glob(os.path.join(newer, "state", "**", "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"\0garbage")
  assert checkpoint.find_checkpoints(workdir).steps == (3, 2)
  model, step = checkpoint.restore_model(h.tiny(), workdir)
  assert step == 2 and "checkpoint at step 3" in caplog.text and "unreadable" in caplog.text
  np.testing.assert_array_equal(_model_arrays(model)["params/head/classifier/kernel"],
                                _saved_model_arrays(workdir)["params/head/classifier/kernel"])
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3"]


def test_a_runs_config_gives_its_model_to_the_readers(tmp_path):
  from camjax.train import checkpoint

  saved = checkpoint.run_config(os.path.join(FIXTURE, "checkpoints", "2"))  # a step dir finds its run
  assert saved == checkpoint.run_config(FIXTURE) and saved["model"]["overrides"]["widths"] == (4, 8)
  assert checkpoint.run_config(str(tmp_path)) is None
  config = h.tiny(**{"model.num_classes": 9})
  with config.unlocked():
    config.model.overrides.batch_norm = False
  merged = checkpoint.with_run_model(config, {"num_classes": 4, "overrides": {"widths": (2, 3)}})
  assert merged.model.num_classes == 4 and merged.model.name == config.model.name  # unmentioned fields kept
  assert merged.model.overrides.to_dict() == {"widths": (2, 3)}  # the run's overrides, whole
  assert checkpoint.with_run_model(config, {}).model.overrides.to_dict() == config.model.overrides.to_dict()


def test_a_runs_wsol_method_comes_with_its_model():
  from camjax.train import checkpoint

  config = h.tiny()
  merged = checkpoint.with_run_model(config, {"name": "small_gap"}, {"name": "acol", "acol_threshold": 0.5})
  assert merged.method.name == "acol" and merged.method.acol_threshold == 0.5
  assert merged.method.adl_drop_rate == config.method.adl_drop_rate
  assert checkpoint.with_run_model(config, {}).method.name == config.method.name
