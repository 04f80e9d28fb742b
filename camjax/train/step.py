"""The pure, jitted train step: gradients (with micro-batch accumulation), update, and a non-finite guard."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from camjax.train import sharding
from camjax.train.state import COMPUTE_DTYPES, ModelDef
from camjax.wsol import training as wsol_training

log = logging.getLogger("camjax.train")


class NonFiniteLossError(RuntimeError):
  """The loss, the gradient norm or the updated parameters of a step became NaN or Inf.

  The step's state is never saved: the newest checkpoint stays the last good one.
  """


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


# XLA:CPU hands convolutions to YNNPACK by default; its weight-gradient convolutions run at a
# fifth of the speed of XLA's own (Eigen) ones, which made them most of a VGG16 train step.
# The step keeps YNNPACK for dots and reductions only (its elementwise fusions are no faster
# here and let a NaN through a ReLU that XLA's own code propagates).
_CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


@functools.cache
def _cpu_compiler_options() -> tuple[tuple[str, str], ...]:
  """The CPU options this jaxlib accepts (an experimental option may be renamed or dropped)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options=_CPU_COMPILER_OPTIONS, backend="cpu").lower(np.float32(0)).compile()
  except Exception as e:  # noqa: BLE001 - an unknown option only costs speed, never the run
    log.info("XLA:CPU does not take the train step's options (%s); using its defaults", str(e).splitlines()[0])
    return ()
  return tuple(_CPU_COMPILER_OPTIONS.items())


def compiler_options(mesh) -> dict[str, str] | None:
  """XLA options for the train step on ``mesh``: CPU tuning when every device is a CPU, else None (TPU, GPU)."""
  if {d.platform for d in mesh.devices.flat} != {"cpu"}:
    return None
  return dict(_cpu_compiler_options()) or None


def make_train_step(model_def: ModelDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    config: Any, mesh) -> Callable:
  """The pure step ``(state, batch) -> (state, metrics)``; gradient accumulation over micro-batches.

  The loss is the WSOL method's (``config.method``, see ``camjax.wsol.training``);
  HaS and CutMix draw from a key of the seed and the step counter, one per micro-batch.
  """
  accum = int(config.training.grad_accum_steps)
  dtype = COMPUTE_DTYPES[config.model.dtype]
  method, seed = config.method, int(config.training.seed)

  def loss_fn(params, batch_stats, other, images, labels, key):
    model = model_def.merge(params, batch_stats, other, train=True)
    loss, logits = wsol_training.method_loss(method, model, images.astype(dtype), labels, key)
    _, new_stats, new_other = model_def.split(model)
    correct = jnp.sum(jnp.argmax(logits, -1) == labels)
    return loss, (correct, new_stats, new_other)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step_fn(state, batch):
    images, labels, step = batch["image"], batch["label"], state["step"]
    params = state["params"]
    step_key = wsol_training.method_key(seed, step)
    if accum == 1:
      (loss, (correct, stats, other)), grads = grad_fn(params, state["batch_stats"], state["other"], images, labels,
                                                       jax.random.fold_in(step_key, 0))
    else:
      # Micro-batch i holds rows j * accum + i, so every device keeps its own rows.
      micro = NamedSharding(mesh, P(None, sharding.DATA))

      def split(x):
        x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, micro)

      def body(carry, mb):
        g_sum, loss_sum, correct_sum, stats, other = carry
        mb_images, mb_labels, index = mb
        (loss, (correct, stats, other)), g = grad_fn(params, stats, other, mb_images, mb_labels,
                                                     jax.random.fold_in(step_key, index))
        g_sum = jax.tree.map(jnp.add, g_sum, g)
        return (g_sum, loss_sum + loss, correct_sum + correct, stats, other), None

      zeros = jax.tree.map(jnp.zeros_like, params)
      init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), state["batch_stats"], state["other"])
      (grads, loss, correct, stats, other), _ = jax.lax.scan(
          body, init, (split(images), split(labels), jnp.arange(accum)))
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
