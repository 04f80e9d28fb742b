"""Optimizer with parameter groups: frozen / new layers (learning-rate multiplier) / base, decay on kernels only."""

from __future__ import annotations

import logging
import re
from typing import Any

import jax
import optax

from camjax.errors import UserError
from camjax.train import sharding

log = logging.getLogger("camjax.train")


def flat_paths(tree: Any) -> list[str]:
  return [sharding.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def matches_any(patterns, path: str) -> bool:
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
    if matches_any(config.pretrained.freeze, name):
      return "frozen"
    if matches_any(config.optimizer.new_layer_patterns, name):
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
