"""A checkpoint written by an earlier camjax layout restores, array for array, with today's code."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np

import _train_helpers as h
from camjax import train
from camjax.train import sharding

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "run_before_move")


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
