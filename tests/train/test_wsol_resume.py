"""WSOL methods with random draws resume bit for bit: the draws of a step do not depend on where the run started."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import _train_helpers as h
from camjax import train


@pytest.mark.parametrize("method", ["has", "adl"])
def test_a_resumed_wsol_run_ends_with_the_parameters_of_one_that_never_stopped(method, tmp_path):
  """Stopped by a NaN batch at step 3 (checkpoint 2) and resumed to step 4: the same bits and losses as a run of
  4 steps, so steps 3 and 4 drew what they drew in it (HaS: cells from the seed and the restored step counter;
  ADL: drop-or-importance choices from the key in the model state, restored with the checkpoint)."""
  config = h.tiny(**{"training.num_steps": 4, "method.name": method})
  devices = jax.devices()[:1]
  straight = train.train(config, str(tmp_path / "straight"), devices=devices)
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
