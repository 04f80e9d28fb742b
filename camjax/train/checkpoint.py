"""Checkpoints, the one place that writes, finds and reads them back.

Training saves through ``Checkpoints`` (orbax manager over WORKDIR/checkpoints:
async, keep K, corrupt ones set aside); a checkpoint holds the train state and
every process's data-iterator state, so a restarted run continues bit for bit.
Everything else reads: ``find_checkpoints`` (orbax's own step list) names the
steps of a workdir, and ``restore_model`` / ``model_from_workdir`` (cam_images,
fine-grained features), ``load_pretrained`` and ``restore_for_eval`` read the
newest one that is readable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from camjax.errors import UserError
from camjax.train import sharding
from camjax.train.optim import matches_any
from camjax.train.state import build_model

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


def _reader(directory: str) -> ocp.CheckpointManager:
  """An orbax manager that only reads ``directory``.

  It creates nothing, leaves a running job's unfinished saves alone and reads no
  step metadata up front (which would warn about every step dir without it).
  """
  options = ocp.CheckpointManagerOptions(create=False, cleanup_tmp_directories=False, lightweight_initialize=True)
  handlers = {"state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(os.path.abspath(directory), item_names=("state", "data"), item_handlers=handlers,
                               options=options)


def saved_steps(directory: str) -> list[int]:
  """The steps orbax finds in a checkpoints directory, oldest first ([] when it does not exist)."""
  manager = _reader(directory)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


@dataclasses.dataclass(frozen=True)
class Found:
  """The checkpoints a path names: orbax's checkpoints directory and the steps to try, newest first."""

  directory: str
  steps: tuple[int, ...]

  def state_dir(self, step: int) -> str:
    """The 'state' item of ``step`` (for messages and ``read_checkpoint_arrays``)."""
    return os.path.join(str(ocp.step.find_step_path(self.directory, ocp.step.standard_name_format(), step=step)),
                        "state")


def find_checkpoints(path: str, *, missing: str | None = None, empty: str | None = None) -> Found:
  """The checkpoints of a training workdir, of its checkpoints dir, or of one step dir.

  ``missing`` / ``empty``: the one-line UserError for a path that does not
  exist / holds no checkpoint, in the words of the setting the user gave.
  """
  given = path
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise UserError(missing or f"{given} does not exist; give a camjax training workdir")
  # A step dir is one checkpoint, not a manager's directory: only its 'state' item tells it apart.
  if os.path.isdir(os.path.join(path, "state")) and os.path.basename(path).isdigit():
    return Found(os.path.dirname(path), (int(os.path.basename(path)),))
  for base in (os.path.join(path, CHECKPOINT_DIR), path):
    steps = saved_steps(base)
    if steps:
      return Found(base, tuple(reversed(steps)))
  raise UserError(empty or f"{given} holds no camjax checkpoint; give a training workdir, its checkpoints dir or "
                  "one checkpoint step dir")


def _first_line(error: Exception) -> str:
  text = str(error).splitlines()[0][:200] if str(error) else ""
  return f"{type(error).__name__}: {text}"


def restore_newest(found: Found, target: Callable[[int, Any], Any]) -> tuple[int, dict]:
  """(step, arrays) of the newest readable checkpoint in ``found``; unreadable newer ones are skipped, loudly.

  ``target(step, stored)`` turns the stored 'state' metadata into the abstract
  arrays to read (any subset: the rest stays on disk); it raises a UserError
  when the checkpoint cannot fit. Nothing is moved: readers leave a run's
  directory as it is (resuming training sets unreadable steps aside).
  """
  manager = _reader(found.directory)
  try:
    for step in found.steps:
      try:
        stored = manager.item_metadata(step)["state"]
        if stored is None:
          raise ValueError("no 'state' item")
      except Exception as e:  # noqa: BLE001 - unreadable metadata: a corrupt or unfinished checkpoint
        log.warning("checkpoint at step %d in %s is unreadable (%s); trying the previous one", step,
                    found.directory, _first_line(e))
        continue
      want = target(step, stored)
      try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=want, restore_args=ocp.checkpoint_utils.construct_restore_args(want), partial_restore=True)))
      except Exception as e:  # noqa: BLE001 - any failure to read means "not a usable checkpoint"
        log.warning("checkpoint at step %d in %s is unreadable (%s); trying the previous one", step,
                    found.directory, _first_line(e))
        continue
      return step, restored["state"]
  finally:
    manager.close()
  raise UserError(f"no readable checkpoint in {found.directory} (steps {', '.join(map(str, found.steps))}); "
                  "train again or point at another run")


def _on_local_device(tree: Any) -> Any:
  """Abstract arrays on this process's first device: every host reads the checkpoint whole."""
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=local), tree)


def read_checkpoint_arrays(state_dir: str) -> dict:
  """A saved 'state' item as numpy arrays, whatever mesh or number of processes wrote it."""
  state_dir = os.path.abspath(os.path.expanduser(state_dir))  # orbax reads absolute paths only
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(state_dir)
  tree = getattr(metadata, "item_metadata", metadata)
  restored = checkpointer.restore(state_dir, _on_local_device(tree))
  checkpointer.close()
  return jax.tree.map(np.asarray, restored)


MODEL_GROUPS = ("params", "batch_stats")  # a model's share of the train state (not: step, optimizer, RNG)


def _flat(tree: Any) -> dict[str, Any]:
  return {sharding.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _misfit(stored: Any, want: dict) -> list[str]:
  """Why the stored arrays cannot fill ``want`` (group -> abstract arrays): missing, extra or reshaped arrays."""
  problems = []
  for group in MODEL_GROUPS:
    have = _flat(stored[group]) if group in stored else {}
    need = _flat(want.get(group, {}))
    for name, leaf in need.items():
      if name not in have:
        problems.append(f"missing {group}/{name}")
      elif tuple(have[name].shape) != tuple(leaf.shape):
        problems.append(f"{group}/{name}: checkpoint {tuple(have[name].shape)} != model {tuple(leaf.shape)}")
    problems += [f"unexpected {group}/{name}" for name in have if name not in need]
  return problems


RUN_CONFIG_FILE = "config.json"


def run_dir(path: str) -> str:
  """The run directory of a workdir or of one of its step directories (``WORKDIR/checkpoints/<step>``)."""
  path = os.path.abspath(os.path.expanduser(path))
  parent = os.path.dirname(path)
  if os.path.isdir(os.path.join(path, "state")) and os.path.basename(parent) == CHECKPOINT_DIR:
    return os.path.dirname(parent)
  return path


def run_config(path: str) -> dict | None:
  """The config.json ``camjax.main`` wrote when the run at ``path`` started (lists as tuples); None without one."""
  file = os.path.join(run_dir(path), RUN_CONFIG_FILE)
  if not os.path.isfile(file):
    return None
  try:
    with open(file, encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {file} ({e}); is it a camjax run's config.json?") from e

  def tuples(value: Any) -> Any:
    if isinstance(value, dict):
      return {k: tuples(v) for k, v in value.items()}
    return tuple(tuples(v) for v in value) if isinstance(value, list) else value

  return tuples(saved)


def with_run_model(config: Any, saved_model: dict, saved_method: dict | None = None) -> Any:
  """``config`` (a new, unlocked ConfigDict) with a run's model section (and WSOL method) over its own.

  Fields the run does not mention keep this config's values; the run's ``overrides``
  are taken whole, not merged, since they are the network's constructor arguments.
  ``saved_method`` is the run's ``method`` section: ACoL and SPG runs build a
  network of their own architecture, so the model alone would not fit their checkpoint.
  """
  import ml_collections

  merged = config.to_dict()
  model = {**merged.get("model", {}), **dict(saved_model)}
  if "overrides" in saved_model:
    model["overrides"] = dict(saved_model["overrides"] or {})
  merged["model"] = model
  if saved_method:
    merged["method"] = {**merged.get("method", {}), **dict(saved_method)}
  return ml_collections.ConfigDict(merged)


def restore_model(config: Any, path: str, *, missing: str | None = None, empty: str | None = None,
                  fix: str = "use the config that wrote it") -> tuple[nnx.Module, int]:
  """The config's model in eval mode with the weights of the newest readable checkpoint under ``path``; its step.

  The NNX route: the abstract model (``nnx.eval_shape``) splits into
  parameters, BatchNorm statistics and the rest; orbax reads just those arrays
  against the abstract state (the optimizer state stays on disk); ``nnx.merge``
  makes the module. RNG streams get fixed keys (evaluation draws none).
  ``missing``, ``empty``: as in ``find_checkpoints``; ``fix`` ends the message
  for a checkpoint that does not fit the model.
  """
  from camjax.weights import assign

  found = find_checkpoints(path, missing=missing, empty=empty)
  abstract = nnx.eval_shape(lambda: build_model(config))
  abstract.eval()
  graphdef, params, stats, rest = nnx.split(abstract, nnx.Param, nnx.BatchStat, ...)
  want = _on_local_device({"params": params.to_pure_dict(), "batch_stats": stats.to_pure_dict()})
  want = {group: tree for group, tree in want.items() if jax.tree_util.tree_leaves(tree)}

  def target(step: int, stored: Any) -> dict:
    problems = _misfit(stored, want)
    if problems:
      raise UserError(f"checkpoint {found.state_dir(step)} does not fit model {config.model.name} ({fix}): "
                      + "; ".join(problems[:5]))
    return want

  step, arrays = restore_newest(found, target)
  for group, state in (("params", params), ("batch_stats", stats)):
    if group in arrays:
      nnx.replace_by_pure_dict(state, arrays[group])
  model = nnx.merge(graphdef, params, stats, rest)
  assign.fill_rng_state(model, 0)
  model.eval()
  return model, step


def model_from_workdir(config: Any, workdir_or_step_dir: str, *, missing: str | None = None,
                       empty: str | None = None, fix: str = "use the config that wrote it") -> nnx.Module:
  """The config's model, weights loaded, in eval mode (``restore_model`` without the step)."""
  return restore_model(config, workdir_or_step_dir, missing=missing, empty=empty, fix=fix)[0]


def load_pretrained(config: Any, params: dict, batch_stats: dict) -> tuple[dict, dict, list[str]]:
  """Copy parameters and BatchNorm statistics whose paths match ``pretrained.load`` (and not ``skip``)."""
  given = config.pretrained.path
  found = find_checkpoints(
      given, missing=f"pretrained.path={given} does not exist; fix --config.pretrained.path",
      empty=f"pretrained.path={given} holds no camjax checkpoint; set --config.pretrained.path to a training "
            "workdir, its checkpoints dir or one checkpoint step dir")
  step, saved = restore_newest(
      found, lambda _, stored: {g: _on_local_device(stored[g]) for g in MODEL_GROUPS if g in stored})
  state_dir = found.state_dir(step)
  loaded: list[str] = []

  def copy(group: str, tree: dict) -> dict:
    source = _flat(saved.get(group, {}))

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
    # Every process's iterator state in one JSON item, not grain's per-process handler: a run may
    # resume on another process count (loop._restore_data), and the synthetic iterator is not grain's.
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
