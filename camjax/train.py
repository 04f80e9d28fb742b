"""Sharded training loop: optimizer groups, a jitted pure train step, checkpoints, faults, metrics.

The model is an ``nnx.Module``; the loop splits it once into static graph
definitions and pure pytrees (plain nested dicts of arrays)::

  state = {"step", "params", "batch_stats", "other", "opt_state"}

so the train step is one ``jax.jit`` with explicit ``NamedSharding`` in and out
and the state donated. The same program runs on one CPU, on 8 devices and on
several hosts: the global batch is assembled from each host's local rows.

Checkpoints (orbax, in ``WORKDIR/checkpoints``) hold the state and every
process's data-iterator state, so a restarted run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import re
import shutil
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from camjax import models, sharding, train_data
from camjax.errors import UserError
from camjax.metrics_writer import MetricsWriter

log = logging.getLogger("camjax.train")

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CHECKPOINT_DIR = "checkpoints"


class NonFiniteLossError(RuntimeError):
  """The loss, the gradient norm or the updated parameters of a step became NaN or Inf.

  The step's state is never saved: the newest checkpoint stays the last good one.
  """


# ----------------------------------------------------------------------------- model <-> pytrees


def build_model(config: Any, seed: int | None = None) -> nnx.Module:
  """The config's model with parameters from ``seed`` (default ``training.seed``)."""
  overrides = dict(config.model.overrides.to_dict()) if hasattr(config.model.overrides, "to_dict") else dict(config.model.overrides)
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  if config.model.dtype != "float32":
    overrides["dtype"] = COMPUTE_DTYPES[config.model.dtype]
  if config.model.use_bias:
    overrides["use_bias"] = True
  return models.create(config.model.name, num_classes=config.model.num_classes, pooling=config.model.pooling,
                       seed=config.training.seed if seed is None else seed, **overrides)


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


class ModelDef:
  """The static halves of an nnx model: graph definitions (train / eval) and state templates.

  ``split`` turns a module into plain dicts of arrays; ``merge`` rebuilds a module
  from them (inside or outside ``jit``). RNG keys are stored as raw key data so
  every leaf is an ordinary array that orbax and NamedSharding handle.
  """

  def __init__(self, model: nnx.Module):
    model.eval()
    self.eval_graphdef = nnx.split(model, nnx.Param, nnx.BatchStat, ...)[0]
    model.train()
    self.train_graphdef, params, stats, other = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    self._templates = tuple(_abstract(s) for s in (params, stats, other))
    self._key_impls = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(other.to_pure_dict())[0]:
      if _is_key(leaf):
        self._key_impls[sharding.path_str(path)] = jax.random.key_impl(leaf)

  def split(self, model: nnx.Module) -> tuple[dict, dict, dict]:
    _, params, stats, other = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    other = jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, other.to_pure_dict())
    return params.to_pure_dict(), stats.to_pure_dict(), other

  def merge(self, params: dict, batch_stats: dict, other: dict, *, train: bool) -> nnx.Module:
    def keys(path, x):
      impl = self._key_impls.get(sharding.path_str(path))
      return x if impl is None else jax.random.wrap_key_data(x, impl=impl)

    other = jax.tree_util.tree_map_with_path(keys, other)
    states = []
    for template, pure in zip(self._templates, (params, batch_stats, other)):
      state = jax.tree.map(lambda x: x, template)
      nnx.replace_by_pure_dict(state, pure)
      states.append(state)
    return nnx.merge(self.train_graphdef if train else self.eval_graphdef, *states)


# ----------------------------------------------------------------------------- optimizer


def flat_paths(tree: Any) -> list[str]:
  return [sharding.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _matches(patterns, path: str) -> bool:
  return any(re.fullmatch(p, path) for p in patterns)


def _check_patterns(patterns, paths: list[str], field: str) -> None:
  for pattern in patterns:
    if not any(re.fullmatch(pattern, p) for p in paths):
      raise UserError(f"{field} pattern {pattern!r} matches no parameter (e.g. {paths[0]!r}); fix --config.{field}")


def param_labels(params: dict, config: Any) -> dict:
  """'frozen', 'new' or 'base' for every parameter, by regex on its path ('head/classifier/kernel')."""
  paths = flat_paths(params)
  _check_patterns(config.pretrained.freeze, paths, "pretrained.freeze")
  _check_patterns(config.optimizer.new_layer_patterns, paths, "optimizer.new_layer_patterns")

  def label(path, _):
    name = sharding.path_str(path)
    if _matches(config.pretrained.freeze, name):
      return "frozen"
    if _matches(config.optimizer.new_layer_patterns, name):
      return "new"
    return "base"

  return jax.tree_util.tree_map_with_path(label, params)


def decay_mask(params: dict) -> dict:
  """Weight decay on kernels only: never on biases or BatchNorm scale/offset."""
  return jax.tree_util.tree_map_with_path(lambda path, _: sharding.path_str(path).endswith("kernel"), params)


def make_schedule(opt: Any, num_steps: int) -> optax.Schedule:
  """Base learning rate per step: constant, step (x decay_factor at fractions of training) or cosine."""
  if opt.schedule == "constant":
    main = optax.constant_schedule(opt.lr)
  elif opt.schedule == "step":
    bounds = sorted(int(round(b * num_steps)) for b in opt.boundaries)
    main = optax.piecewise_constant_schedule(opt.lr, {b: opt.decay_factor for b in bounds if 0 < b})
  elif opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(opt.lr, max(1, num_steps - opt.warmup_steps))
  else:
    raise UserError(f"optimizer.schedule={opt.schedule!r} is unknown; set --config.optimizer.schedule to "
                    "constant, step or cosine")
  if opt.warmup_steps > 0:
    warm = optax.linear_schedule(0.0, opt.lr, opt.warmup_steps)
    return optax.join_schedules([warm, main], [opt.warmup_steps])
  return main


def make_optimizer(config: Any, params: dict, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """SGD/Adam with per-group learning rates, masked weight decay and frozen groups."""
  opt = config.optimizer
  schedule = make_schedule(opt, num_steps)

  def group(mult: float) -> optax.GradientTransformation:
    lr = lambda step: schedule(step) * mult  # noqa: E731
    if opt.name == "sgd":
      return optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov)
    if opt.name == "adam":
      return optax.adam(lr)
    if opt.name == "adamw":
      return optax.adamw(lr, weight_decay=opt.weight_decay, mask=decay_mask)
    raise UserError(f"optimizer.name={opt.name!r} is unknown; set --config.optimizer.name to sgd, adam or adamw")

  parts = []
  if opt.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.weight_decay > 0 and opt.name != "adamw":
    parts.append(optax.add_decayed_weights(opt.weight_decay, mask=decay_mask(params)))
  parts.append(optax.multi_transform(
      {"base": group(1.0), "new": group(opt.new_layer_lr_mult), "frozen": optax.set_to_zero()},
      param_labels(params, config)))
  return optax.chain(*parts), schedule


# ----------------------------------------------------------------------------- pretrained weights


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


def _saved_steps(directory: str) -> list[int]:
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
    steps = _saved_steps(base)
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
      if not _matches(config.pretrained.load, name) or _matches(config.pretrained.skip, name):
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


# ----------------------------------------------------------------------------- train step


def _nonfinite_arrays(tree: Any) -> dict:
  """How many arrays of ``tree`` hold a NaN or Inf, and the leaf index of the first (scalars, inside jit).

  One boolean per array instead of a global norm: a norm overflows to Inf for
  large but finite weights.
  """
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return {"count": jnp.zeros((), jnp.int32), "first": jnp.zeros((), jnp.int32)}
  bad = jnp.stack([jnp.logical_not(jnp.all(jnp.isfinite(x))) for x in leaves])
  return {"count": jnp.sum(bad, dtype=jnp.int32), "first": jnp.argmax(bad).astype(jnp.int32)}


def nonfinite_message(metrics: dict, param_paths: list[str], stats_paths: list[str]) -> str | None:
  """What went NaN or Inf in one step's host metrics (``loss``, ``grad_norm``, ``nonfinite``), or None."""
  found = [f"{name} is {float(metrics[name])}" for name in ("loss", "grad_norm") if not np.isfinite(metrics[name])]
  groups = (("params", param_paths, "parameters"), ("batch_stats", stats_paths, "BatchNorm statistics"))
  for group, paths, what in groups:
    report = metrics["nonfinite"][group]
    count = int(report["count"])
    if count:
      first = paths[int(report["first"])] if int(report["first"]) < len(paths) else "?"
      found.append(f"the updated {what} hold NaN/Inf in {count} of {len(paths)} arrays (e.g. {group}/{first})")
  return ", ".join(found) or None


def make_train_step(model_def: ModelDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    config: Any, mesh) -> Callable:
  """The pure step ``(state, batch) -> (state, metrics)``; gradient accumulation over micro-batches."""
  accum = int(config.training.grad_accum_steps)
  dtype = COMPUTE_DTYPES[config.model.dtype]
  nan_step = int(config.training.debug_nan_at_step)

  def loss_fn(params, batch_stats, other, images, labels, step):
    model = model_def.merge(params, batch_stats, other, train=True)
    logits, _ = model(images.astype(dtype))
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    if nan_step >= 0:  # tests only: the loss of step number nan_step (1-based) becomes NaN
      loss = loss * jnp.where(step + 1 == nan_step, jnp.nan, 1.0)
    _, new_stats, new_other = model_def.split(model)
    correct = jnp.sum(jnp.argmax(logits, -1) == labels)
    return loss, (correct, new_stats, new_other)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step_fn(state, batch):
    images, labels, step = batch["image"], batch["label"], state["step"]
    params = state["params"]
    if accum == 1:
      (loss, (correct, stats, other)), grads = grad_fn(params, state["batch_stats"], state["other"], images, labels, step)
    else:
      # Micro-batch i holds rows j * accum + i, so every device keeps its own rows.
      micro = NamedSharding(mesh, P(None, sharding.DATA))

      def split(x):
        x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, micro)

      def body(carry, mb):
        g_sum, loss_sum, correct_sum, stats, other = carry
        (loss, (correct, stats, other)), g = grad_fn(params, stats, other, mb[0], mb[1], step)
        g_sum = jax.tree.map(jnp.add, g_sum, g)
        return (g_sum, loss_sum + loss, correct_sum + correct, stats, other), None

      zeros = jax.tree.map(jnp.zeros_like, params)
      init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), state["batch_stats"], state["other"])
      (grads, loss, correct, stats, other), _ = jax.lax.scan(body, init, (split(images), split(labels)))
      grads = jax.tree.map(lambda g: g / accum, grads)
      loss = loss / accum
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    new_state = {"step": step + 1, "params": new_params, "batch_stats": stats, "other": other,
                 "opt_state": opt_state}
    # A few scalars for the host's guard: the loop never saves a state whose report is not clean.
    nonfinite = {"params": _nonfinite_arrays(new_params), "batch_stats": _nonfinite_arrays(stats)}
    metrics = {"loss": loss, "accuracy": correct / labels.shape[0], "learning_rate": schedule(step),
               "grad_norm": optax.global_norm(grads), "nonfinite": nonfinite}
    return new_state, metrics

  return step_fn


# ----------------------------------------------------------------------------- checkpoints


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


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class TrainResult:
  """What a finished (or preempted) run hands to evaluation."""

  state: dict
  model_def: ModelDef
  mesh: Any
  step: int
  num_steps: int
  preempted: bool = False


class _Preemption:
  """SIGTERM sets a flag; the loop finishes its step, saves and returns."""

  def __init__(self):
    self.flag = False
    self._previous = None

  def __enter__(self) -> "_Preemption":
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    self.flag = True

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def init_state(config: Any, mesh, num_steps: int, *, pretrained: bool = True
               ) -> tuple[dict, dict, ModelDef, optax.GradientTransformation, optax.Schedule]:
  """Fresh (or pretrained) sharded state, its shardings, the model definition and optimizer.

  ``pretrained=False`` skips loading ``config.pretrained`` (a resumed run restores everything anyway).
  """
  model = build_model(config)
  fmt = pretrained_format(config) if pretrained else None
  if fmt == "torchvision":
    from camjax import weights

    weights.load_pretrained(model, os.path.expanduser(config.pretrained.path))
    log.info("loaded ImageNet weights from %s", config.pretrained.path)
  model_def = ModelDef(model)
  params, stats, other = model_def.split(model)
  del model
  if fmt == "camjax":
    params, stats, loaded = load_pretrained(config, params, stats)
    log.info("loaded %d arrays from %s", len(loaded), config.pretrained.path)
  tx, schedule = make_optimizer(config, params, num_steps)
  host = {"step": np.zeros((), np.int32), "params": params, "batch_stats": stats, "other": other}
  shardings = sharding.tree_shardings(mesh, host)
  shardings["step"] = sharding.replicated(mesh)
  state = sharding.put_global(mesh, host, shardings)
  opt_shardings = sharding.tree_shardings(mesh, jax.eval_shape(tx.init, state["params"]))
  state["opt_state"] = jax.jit(tx.init, out_shardings=opt_shardings)(state["params"])
  shardings["opt_state"] = opt_shardings
  return state, shardings, model_def, tx, schedule


def _restore_data(iterator: Any, data: dict | None, step: int) -> None:
  if not data or not data.get("states"):
    return
  states = data["states"]
  if data.get("process_count") == jax.process_count():
    iterator.set_state(states[jax.process_index()])
  elif all(s == states[0] for s in states):
    iterator.set_state(states[0])  # the state does not depend on the process: reusable as is
  else:
    log.warning("checkpoint at step %d was written by %s processes, this run has %d: the data order restarts",
                step, data.get("process_count"), jax.process_count())


def train(config: Any, workdir: str, *, devices: list | None = None) -> TrainResult:
  """Train (or resume) the config in ``workdir``; returns the final state for evaluation.

  ``devices`` restricts the mesh to some devices (default: all devices of all processes).
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model, devices)
  sharding.host_local_batch_size(config.training.global_batch_size, mesh)  # fails early when it does not split
  accum = config.training.grad_accum_steps
  if accum < 1 or (config.training.global_batch_size // mesh.shape[sharding.DATA]) % accum:
    raise UserError(f"training.grad_accum_steps={accum} does not divide the per-device batch "
                    f"{config.training.global_batch_size // mesh.shape[sharding.DATA]}; change one of them")
  num_steps = train_data.steps_for(config)
  is_main = jax.process_index() == 0
  began = time.perf_counter()
  preempted = False
  # Everything opened from here on is closed in reverse order, whatever stops the run.
  with contextlib.ExitStack() as closing:
    checkpoints = Checkpoints(workdir, keep=config.training.keep_checkpoints)
    closing.callback(checkpoints.close)
    resuming = checkpoints.latest_step() is not None
    state, shardings, model_def, tx, schedule = init_state(config, mesh, num_steps, pretrained=not resuming)
    abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
    param_paths, stats_paths = flat_paths(state["params"]), flat_paths(state["batch_stats"])

    iterator = train_data.train_iterator(config, process_index=jax.process_index(),
                                         process_count=jax.process_count())
    if hasattr(iterator, "close"):
      closing.callback(iterator.close)
    restored = checkpoints.restore_latest(abstract_state)
    saved = None
    if restored is not None:
      saved, state, data = restored
      _restore_data(iterator, data, saved)
      log.info("resumed from checkpoint at step %d in %s", saved, checkpoints.directory)
    start = done = int(jax.device_get(state["step"]))

    step_fn = make_train_step(model_def, tx, schedule, config, mesh)
    batch_shardings = {"image": sharding.batch_sharding(mesh), "label": sharding.batch_sharding(mesh)}
    train_step = jax.jit(step_fn, in_shardings=(shardings, batch_shardings),
                         out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=(0,))

    # Records past ``start`` come from a run that went further before it stopped: this run writes them again.
    writer = closing.enter_context(MetricsWriter(workdir, enabled=is_main, resume_step=start))
    progress = _progress(config, start, num_steps, enabled=is_main)
    closing.callback(progress.close)
    pending: list[tuple[int, dict]] = []  # (step number, device metrics) not yet checked / logged
    checked: list[tuple[int, dict]] = []
    last: dict | None = None  # the host metrics of the newest checked step
    last_time, last_step = time.perf_counter(), start

    def check_pending() -> None:
      """Fetch the metrics in flight; stop on a step whose loss, gradient or new parameters are not finite.

      Called before every save, so a non-finite state is never written.
      """
      nonlocal last
      while pending:
        number, metrics = pending.pop(0)
        host = jax.device_get(metrics)
        what = nonfinite_message(host, param_paths, stats_paths)
        if what is not None:
          checkpoints.wait()
          good = checkpoints.latest_step()
          kept = "no checkpoint was saved" if good is None else f"last good checkpoint: step {good}"
          raise NonFiniteLossError(
              f"non-finite values at step {number}: {what}; stopped without saving that step "
              f"({kept} in {checkpoints.directory}). Lower --config.optimizer.lr, set "
              "--config.optimizer.grad_clip_norm, or check the data")
        del host["nonfinite"]
        checked.append((number, host))
        last = host

    preemption = closing.enter_context(_Preemption())
    for step in range(start, num_steps):
      local = next(iterator)
      batch = sharding.global_batch(mesh, {"image": local["image"], "label": local["label"]})
      state, metrics = train_step(state, batch)
      check_pending()  # the previous step's metrics: one step stays in flight
      pending.append((step + 1, metrics))
      done = step + 1
      if config.training.debug_step_delay > 0:
        time.sleep(config.training.debug_step_delay)
      progress.update(1)
      if done % config.training.log_every == 0 or done == num_steps:
        check_pending()
        now = time.perf_counter()
        scalars = {k: float(np.mean([m[k] for _, m in checked])) for k in checked[0][1]}
        images = (done - last_step) * config.training.global_batch_size
        scalars["images_per_second"] = images / max(now - last_time, 1e-9)
        writer.write(done, scalars)
        progress.set_postfix(loss=f"{scalars['loss']:.4f}", acc=f"{scalars['accuracy']:.3f}")
        checked.clear()
        last_time, last_step = now, done
      if jax.process_count() == 1 or done % config.training.preemption_check_every == 0:
        preempted = sharding.any_process(preemption.flag)  # a collective: every process stops together
      if done % config.training.checkpoint_every == 0 or done == num_steps or preempted:
        check_pending()  # never save a state that went non-finite
        checkpoints.save(done, state, sharding.gather_json(iterator.get_state()))
        saved = done
      if preempted:
        checkpoints.wait()
        log.warning("SIGTERM received: saved a checkpoint at step %d in %s; rerun the same command to resume",
                    done, checkpoints.directory)
        if is_main:
          print(f"camjax: preempted at step {done}; checkpoint saved in {checkpoints.directory}; "
                "rerun the same command to resume", flush=True)
        break
  if is_main and not preempted and not config.training.progress_bar:
    print(_summary(start, done, time.perf_counter() - began, last, saved, checkpoints.directory), flush=True)
  return TrainResult(state=state, model_def=model_def, mesh=mesh, step=int(jax.device_get(state["step"])),
                     num_steps=num_steps, preempted=preempted)


def _summary(start: int, done: int, seconds: float, last: dict | None, saved: int | None, directory: str) -> str:
  """The line a run without a progress bar ends with: steps, time, final loss and accuracy, newest checkpoint."""
  text = f"camjax: trained {done - start} steps (from {start}) in {seconds:.1f} s"
  if last is not None:
    text += f"; final loss {float(last['loss']):.4f}, accuracy {float(last['accuracy']):.3f}"
  if saved is not None:
    text += f"; checkpoint step {saved} in {directory}"
  return text


def _progress(config: Any, start: int, total: int, *, enabled: bool):
  from tqdm import tqdm

  return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, desc="train",
              disable=not (enabled and config.training.progress_bar))


def restore_for_eval(config: Any, workdir: str) -> TrainResult:
  """The newest checkpoint of ``workdir`` as a TrainResult (for ``--mode=eval``).

  A workdir without a checkpoint is a UserError, found before orbax opens
  anything. Opening the checkpoints creates nothing and leaves unfinished saves
  of a running job alone.
  """
  directory = checkpoint_dir(workdir)
  if not _saved_steps(directory):
    raise UserError(f"no checkpoint in {directory}; train first with --mode=train (or --mode=train_and_eval), "
                    "or point --workdir at a trained run")
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
  num_steps = max(1, config.training.num_steps)
  state, shardings, model_def, _, _ = init_state(config, mesh, num_steps, pretrained=False)
  abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
  checkpoints = Checkpoints(workdir, keep=config.training.keep_checkpoints, read_only=True)
  try:
    restored = checkpoints.restore_latest(abstract_state)
  finally:
    checkpoints.close()
  if restored is None:
    raise UserError(f"no readable checkpoint in {directory} (the unreadable ones were moved to "
                    f"{os.path.join(os.path.abspath(workdir), 'corrupt_checkpoints')}); train again with --mode=train")
  step, state, _ = restored
  return TrainResult(state=state, model_def=model_def, mesh=mesh, step=step, num_steps=num_steps)
