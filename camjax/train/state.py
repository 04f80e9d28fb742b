"""The model as pure pytrees: build it from the config, split it into arrays, merge it back (inside jit too).

The model is an ``nnx.Module``; training splits it once into static graph
definitions and plain nested dicts of arrays::

  state = {"step", "params", "batch_stats", "other", "opt_state"}

so the train step is one ``jax.jit`` with explicit ``NamedSharding`` in and out.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from camjax import models
from camjax.train import sharding
from camjax.wsol import training as wsol_training

log = logging.getLogger("camjax.train")


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(config: Any, seed: int | None = None) -> nnx.Module:
  """The config's model with parameters from ``seed`` (default ``training.seed``).

  The WSOL method picks the architecture (ACoL, SPG, ADL) and its hyperparameters,
  so evaluating a run builds the network it trained; a method the model cannot
  take is a ConfigError here, for training, evaluation and the tools alike.
  """
  overrides = (dict(config.model.overrides.to_dict()) if hasattr(config.model.overrides, "to_dict")
               else dict(config.model.overrides))
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  if config.get("method") is not None:
    wsol_training.check_method(config)
    overrides.update(wsol_training.model_overrides(config.method))
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


# A model built under ``nnx.eval_shape`` (shapes only) holds ShapeDtypeStructs, not keys:
# reading them under ``eval_shape`` works for both.
def _key_impl(key: Any) -> Any:
  impls = []
  jax.eval_shape(lambda k: impls.append(jax.random.key_impl(k)), key)
  return impls[0]


def _key_data(key: Any) -> Any:
  return jax.random.key_data(key) if isinstance(key, jax.Array) else jax.eval_shape(jax.random.key_data, key)


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
        self._key_impls[sharding.path_str(path)] = _key_impl(leaf)

  def split(self, model: nnx.Module) -> tuple[dict, dict, dict]:
    _, params, stats, other = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    other = jax.tree.map(lambda x: _key_data(x) if _is_key(x) else x, other.to_pure_dict())
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
