"""The training loop: init or resume, step, log, checkpoint, stop on preemption or non-finite values.

The same program runs on one CPU, on 8 devices and on several hosts: the global
batch is assembled from each host's local rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from typing import Any

import jax
import numpy as np
import optax

from camjax.errors import UserError
from camjax.train import data as train_data
from camjax.train import sharding
from camjax.train.checkpoint import (
  Checkpoints,
  checkpoint_dir,
  load_pretrained,
  pretrained_format,
  saved_steps,
)
from camjax.train.metrics import MetricsWriter
from camjax.train.optim import flat_paths, make_optimizer
from camjax.train.state import ModelDef, build_model
from camjax.train.step import NonFiniteLossError, compiler_options, make_train_step, nonfinite_message
from camjax.wsol import training as wsol_training

log = logging.getLogger("camjax.train")


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
  wsol_training.check_method(config)
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model, devices)
  sharding.per_device_batch(config.training.global_batch_size, mesh.shape[sharding.DATA],
                            grad_accum_steps=config.training.grad_accum_steps)  # fails early when it does not split
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
                         out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=(0,),
                         compiler_options=compiler_options(mesh))

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

  A workdir without a checkpoint is a UserError, found (by orbax's step list)
  before the model is built. Opening the checkpoints creates nothing and leaves
  unfinished saves of a running job alone; unreadable newer steps are set aside
  and the previous one restores.
  """
  directory = checkpoint_dir(workdir)
  if not saved_steps(directory):
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
