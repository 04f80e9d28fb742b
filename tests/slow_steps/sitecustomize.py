"""Test-only: on this PYTHONPATH, every training step of camjax waits CAMJAX_TEST_STEP_DELAY seconds first.

The preemption tests need time to signal a run between two checkpoints; the delay
lives here, in the test tree, instead of in the production train step.
"""

import os
import time

_DELAY = float(os.environ.get("CAMJAX_TEST_STEP_DELAY", "0") or 0)

if _DELAY > 0:
  from camjax.train import data as _train_data

  _train_iterator = _train_data.train_iterator

  class _Slow:
    def __init__(self, iterator):
      self._iterator = iterator

    def __iter__(self):
      return self

    def __next__(self):
      time.sleep(_DELAY)
      return next(self._iterator)

    def __getattr__(self, name):  # get_state, set_state, close
      return getattr(self._iterator, name)

  def _slow_train_iterator(*args, **kwargs):
    return _Slow(_train_iterator(*args, **kwargs))

  _train_data.train_iterator = _slow_train_iterator
