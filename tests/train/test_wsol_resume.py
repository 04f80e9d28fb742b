"""WSOL methods with random draws resume bit for bit: the draws of a step do not depend on where the run started."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import _train_helpers as h
from camjax import train


def test_a_resumed_adl_run_ends_with_the_state_of_one_that_never_stopped(tmp_path):
  """Stopped by a NaN batch at step 3 (checkpoint 2) and resumed to step 4: the same bits (parameters, optimizer,
  ADL's key and count) and losses as a run of 4 steps, so steps 3 and 4 made ADL's drop-or-importance choices as
  that run did: the key lives in the model state and comes back with the checkpoint. (HaS and CutMix draw from
  the seed and the step counter: tests/wsol/test_wsol_training.py checks their keys step by step.)"""
  config = h.tiny(**{"training.num_steps": 4, "method.name": "adl"})
  devices = jax.devices()[:1]
  straight = train.train(config, str(tmp_path / "straight"), devices=devices)
  assert jax.tree.leaves(straight.state["other"])  # ADL's key and count are part of the saved state
  stopped = str(tmp_path / "stopped")
  with pytest.raises(train.NonFiniteLossError, match="at step 3"):
    with h.nan_images_at(3):
      train.train(config, stopped, devices=devices)
  assert h.checkpoint_steps(stopped) == [2]
  resumed = train.train(config, stopped, devices=devices)
  assert resumed.step == 4
  for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  assert h.losses(stopped) == h.losses(str(tmp_path / "straight"))
