"""Checkpoints: orbax manager over WORKDIR/checkpoints (async, keep K, corrupt ones set aside) and reading one back.

Checkpoints hold the train state and every process's data-iterator state, so a
restarted run continues bit for bit.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from camjax.errors import UserError
from camjax.train import sharding
from camjax.train.optim import matches_any

log = logging.getLogger("camjax.train")


CHECKPOINT_DIR = "checkpoints"


TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".bin")


def pretrained_format(config: Any) -> str | None:
  """None (no pretrained weights), 'camjax' (a camjax checkpoint) or 'torchvision' (a .pth file)."""
  path, fmt = config.pretrained.path, config.pretrained.format
  if not path:
    return None
  if fmt == "auto":
    return "torchvision" if path.endswith(TORCH_SUFFIXES) else "camjax"
  if fmt not in ("camjax", "torchvision"):
    raise UserError(f"pretrained.format={fmt!r} is unknown; set --config.pretrained.format to auto, camjax "
                    "or torchvision")
  return fmt


def saved_steps(directory: str) -> list[int]:
  """The step numbers of the checkpoint dirs in ``directory`` (orbax names them by the bare number)."""
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []


def _find_state_dir(path: str) -> str:
  """The 'state' item of a checkpoint given a workdir, its checkpoints dir, or one step dir."""
  given = path
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise UserError(f"pretrained.path={given} does not exist; fix --config.pretrained.path")
  if os.path.isdir(os.path.join(path, "state")):
    return os.path.join(path, "state")
  for base in (os.path.join(path, CHECKPOINT_DIR), path):
    steps = saved_steps(base)
    if steps:
      return os.path.join(base, str(steps[-1]), "state")
  raise UserError(f"pretrained.path={given} holds no camjax checkpoint; set --config.pretrained.path to a "
                  "training workdir, its checkpoints dir or one checkpoint step dir")


def read_checkpoint_arrays(state_dir: str) -> dict:
  """A saved 'state' item as numpy arrays, whatever mesh or number of processes wrote it."""
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(state_dir)
  tree = getattr(metadata, "item_metadata", metadata)
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=local), tree)
  restored = checkpointer.restore(state_dir, target)
  checkpointer.close()
  return jax.tree.map(np.asarray, restored)


def load_pretrained(config: Any, params: dict, batch_stats: dict) -> tuple[dict, dict, list[str]]:
  """Copy parameters and BatchNorm statistics whose paths match ``pretrained.load`` (and not ``skip``)."""
  state_dir = _find_state_dir(config.pretrained.path)
  saved = read_checkpoint_arrays(state_dir)
  loaded: list[str] = []

  def copy(group: str, tree: dict) -> dict:
    source = {sharding.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(saved.get(group, {}))[0]}

    def one(path, value):
      name = sharding.path_str(path)
      if not matches_any(config.pretrained.load, name) or matches_any(config.pretrained.skip, name):
        return value
      if name not in source:
        raise UserError(f"pretrained checkpoint {state_dir} has no {group} {name!r}; "
                        "add it to --config.pretrained.skip")
      new = np.asarray(source[name])
      if new.shape != np.shape(value):
        raise UserError(f"pretrained {group} {name!r} has shape {new.shape}, the model {np.shape(value)}; "
                        "add it to --config.pretrained.skip")
      loaded.append(f"{group}/{name}")
      return new.astype(np.asarray(value).dtype)

    return jax.tree_util.tree_map_with_path(one, tree)

  params, batch_stats = copy("params", params), copy("batch_stats", batch_stats)
  if not loaded:
    raise UserError(f"pretrained.load={tuple(config.pretrained.load)} copied nothing from {state_dir}; "
                    "fix --config.pretrained.load (or pretrained.skip)")
  return params, batch_stats, loaded


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


class Checkpoints:
  """Orbax CheckpointManager over ``WORKDIR/checkpoints``: async saves, keep K, skip corrupt steps.

  ``read_only=True`` (evaluation) neither creates the directory nor cleans up
  unfinished saves (orbax's own ``read_only`` option does too, but logs three
  warnings each time). Always ``close()`` it, also on errors: see ``close``.
  """

  def __init__(self, workdir: str, *, keep: int, asynchronous: bool = True, read_only: bool = False):
    self.workdir = os.path.abspath(workdir)
    self.directory = checkpoint_dir(workdir)
    self._keep, self._async, self._read_only = keep, asynchronous, read_only
    self.manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=not self._read_only,
                                           cleanup_tmp_directories=not self._read_only,
                                           enable_async_checkpointing=self._async)
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(self.directory, item_names=("state", "data"), item_handlers=handlers,
                                 options=options)

  def mismatch(self, step: int, abstract_state: dict) -> str | None:
    """Why the checkpoint at ``step`` cannot hold ``abstract_state`` (another config wrote it), or None.

    Compares leaf counts and array shapes from the checkpoint's metadata. An
    unreadable metadata file returns None: that is corruption, which the
    restore itself detects.
    """
    try:
      stored = self.manager.item_metadata(step)["state"]
      stored_leaves = jax.tree_util.tree_leaves(stored)
    except Exception:  # noqa: BLE001 - unreadable metadata is a corrupt checkpoint, handled by restore
      return None
    if not stored_leaves:
      return None
    wanted = sorted(tuple(x.shape) for x in jax.tree_util.tree_leaves(abstract_state))
    found = sorted(tuple(getattr(x, "shape", ())) for x in stored_leaves)
    if wanted == found:
      return None
    return (f"it holds {len(found)} arrays, this config's state has {len(wanted)}"
            if len(found) != len(wanted) else "array shapes differ")

  def save(self, step: int, state: dict, data_states: list[Any]) -> None:
    data = {"process_count": len(data_states), "states": data_states}
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data)), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_latest(self, abstract_state: dict) -> tuple[int, dict, dict] | None:
    """(step, state, data) of the newest readable checkpoint; unreadable newer ones are moved aside."""
    bad = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      why = self.mismatch(step, abstract_state)
      if why is not None:
        raise UserError(f"the checkpoint at step {step} in {self.directory} was written by another config ({why}); "
                        f"run with the config that wrote it (saved in {os.path.join(self.workdir, 'config.json')}) "
                        "or choose another --workdir")
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      except Exception as e:  # noqa: BLE001 - any failure to read means "not a usable checkpoint"
        log.warning("checkpoint at step %d in %s is unreadable (%s: %s); trying the previous one",
                    step, self.directory, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        bad.append(step)
        continue
      if bad:
        self._set_aside(bad)
      return step, restored["state"], restored["data"]
    if bad:
      self._set_aside(bad)
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Move unreadable step dirs to WORKDIR/corrupt_checkpoints so new saves can reuse the step numbers."""
    if jax.process_index() == 0:
      target = os.path.join(self.workdir, "corrupt_checkpoints")
      os.makedirs(target, exist_ok=True)
      for step in steps:
        src = os.path.join(self.directory, str(step))
        if os.path.exists(src):
          shutil.move(src, os.path.join(target, f"{step}-{int(time.time())}"))
          log.warning("moved unreadable checkpoint %s to %s", src, target)
    sharding.sync("camjax_set_aside_checkpoints")
    self.close()
    self.manager = self._open()

  def close(self) -> None:
    """Wait for the saves in flight and for the manager's clean-up of unfinished saves, then close.

    The manager starts that clean-up on a thread when it opens and waits for it
    only before its first save; ``CheckpointManager.close`` does not. A run that
    ends without saving (an error, ``--mode=eval``) would otherwise exit while
    the thread still runs, and it fails at interpreter shutdown ("cannot
    schedule new futures after interpreter shutdown"). The hook is private:
    orbax has no public call that waits for it.
    """
    await_cleanup = getattr(self.manager, "_maybe_await_cleanup_tmp_directory", None)
    if await_cleanup is not None:
      await_cleanup()
    self.manager.wait_until_finished()
    self.manager.close()
