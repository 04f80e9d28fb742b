"""Sharded training: model state, optimizer groups, the jitted step, checkpoints, the loop.

  state.py       the model as pure pytrees (build, split, merge)
  optim.py       optimizer with parameter groups and schedules
  step.py        the jitted train step and its non-finite guard
  checkpoint.py  orbax checkpoints: save, resume, read back, camjax-format pretrained weights
  loop.py        init or resume, step, log, checkpoint, preemption
  sharding.py    device mesh, shardings, host <-> global arrays
  data.py        the train and eval inputs a config names
  metrics.py     metrics.jsonl and TensorBoard

The names below are the package's public face; the modules hold the code.
"""

from camjax.train.checkpoint import (
                                     CHECKPOINT_DIR,
                                     Checkpoints,
                                     checkpoint_dir,
                                     load_pretrained,
                                     pretrained_format,
                                     read_checkpoint_arrays,
)
from camjax.train.loop import TrainResult, init_state, restore_for_eval, train
from camjax.train.optim import (
                                     decay_mask,
                                     flat_paths,
                                     make_optimizer,
                                     make_schedule,
                                     param_labels,
)
from camjax.train.state import COMPUTE_DTYPES, ModelDef, build_model
from camjax.train.step import NonFiniteLossError, compiler_options, make_train_step, nonfinite_message

__all__ = [
    "CHECKPOINT_DIR", "COMPUTE_DTYPES", "Checkpoints", "ModelDef", "NonFiniteLossError", "TrainResult", "build_model",
    "checkpoint_dir", "compiler_options", "decay_mask", "find_checkpoints", "flat_paths", "init_state",
    "load_pretrained", "make_optimizer", "make_schedule", "make_train_step", "model_from_workdir",
    "nonfinite_message", "param_labels", "pretrained_format", "read_checkpoint_arrays", "restore_for_eval",
    "restore_model", "train",
]
