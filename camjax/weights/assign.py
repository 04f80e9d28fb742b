"""Copy a PyTorch state dict into an nnx model through a key map, checking everything first.

A key map sends each torch key to a path of attributes in the model and a
layout conversion. All missing keys, unexpected keys and shape mismatches are
collected and reported in one error before any parameter is touched.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Iterable, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

PathPart = Union[str, int]

# torch layout -> flax layout
LAYOUTS = {
    "conv": lambda a: np.transpose(a, (2, 3, 1, 0)),  # OIHW -> HWIO (depthwise (C,1,k,k) -> (k,k,1,C))
    "linear": lambda a: np.transpose(a, (1, 0)),  # (out, in) -> (in, out)
    "copy": lambda a: a,
}

# Keys that carry no weights (BatchNorm step counters).
DEFAULT_IGNORE = ("*num_batches_tracked",)


class WeightMismatchError(ValueError):
  """The state dict does not fit the model: lists every missing, unexpected and mis-shaped key."""


@dataclasses.dataclass(frozen=True)
class Target:
  path: tuple[PathPart, ...]
  layout: str = "copy"


def conv(*path: PathPart) -> Target:
  return Target(tuple(path), "conv")


def linear(*path: PathPart) -> Target:
  return Target(tuple(path), "linear")


def copy(*path: PathPart) -> Target:
  return Target(tuple(path), "copy")


def batch_norm(torch_prefix: str, *path: PathPart) -> dict[str, Target]:
  """torch BatchNorm2d (weight, bias, running_mean, running_var) -> nnx.BatchNorm (scale, bias, mean, var)."""
  names = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
  return {f"{torch_prefix}.{t}": copy(*path, n) for t, n in names.items()}


def conv_layer(torch_prefix: str, *path: PathPart, bias: bool = True) -> dict[str, Target]:
  out = {f"{torch_prefix}.weight": conv(*path, "kernel")}
  if bias:
    out[f"{torch_prefix}.bias"] = copy(*path, "bias")
  return out


def linear_layer(torch_prefix: str, *path: PathPart, bias: bool = True) -> dict[str, Target]:
  out = {f"{torch_prefix}.weight": linear(*path, "kernel")}
  if bias:
    out[f"{torch_prefix}.bias"] = copy(*path, "bias")
  return out


def resolve(model: nnx.Module, path: Sequence[PathPart]) -> nnx.Variable:
  obj = model
  for part in path:
    obj = obj[part] if isinstance(part, int) else getattr(obj, part, None)
    if obj is None:
      raise KeyError(f"model has no {'.'.join(map(str, path))}")
  if not isinstance(obj, nnx.Variable):
    raise KeyError(f"{'.'.join(map(str, path))} is not a parameter or statistic")
  return obj


def _ignored(key: str, patterns: Iterable[str]) -> bool:
  return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_mapped(
    model: nnx.Module,
    state_dict: Mapping[str, np.ndarray],
    key_map: Mapping[str, Target],
    *,
    ignore: Sequence[str] = DEFAULT_IGNORE,
    source: str = "state dict",
) -> list[str]:
  """Assign ``state_dict[k]`` (converted) to the model variable ``key_map[k]`` for every key.

  ``ignore`` holds glob patterns of state-dict keys that may be present and are
  skipped (for example a classifier that is replaced). Raises
  :class:`WeightMismatchError` listing every problem; returns the loaded keys.
  """
  problems = []
  missing = [k for k in key_map if k not in state_dict]
  unexpected = [k for k in state_dict if k not in key_map and not _ignored(k, ignore)]
  converted = {}
  for key, target in key_map.items():
    if key not in state_dict:
      continue
    try:
      var = resolve(model, target.path)
    except KeyError as e:
      problems.append(f"  {key}: {e.args[0]}")
      continue
    value = np.asarray(state_dict[key])
    want = tuple(var.get_value().shape)
    if value.ndim != {"conv": 4, "linear": 2}.get(target.layout, value.ndim):
      problems.append(f"  {key}: shape {value.shape} cannot be a {target.layout} weight for {want}")
      continue
    value = LAYOUTS[target.layout](value)
    if value.shape != want:
      where = ".".join(map(str, target.path))
      problems.append(f"  {key}: shape {value.shape} (after {target.layout} layout) != model {where} {want}")
      continue
    converted[key] = (var, value)
  if missing:
    problems.insert(0, f"  missing keys ({len(missing)}): {', '.join(missing)}")
  if unexpected:
    problems.insert(0, f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
  if problems:
    raise WeightMismatchError(f"{source} does not fit {type(model).__name__}:\n" + "\n".join(problems))
  for var, value in converted.values():
    var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))
  return list(converted)


def abstract_paths(model: nnx.Module) -> list[str]:
  """Variables of ``model`` still holding shapes only (``nnx.eval_shape`` output not yet filled)."""
  return [".".join(map(str, path)) for path, node in nnx.iter_graph(model)
          if isinstance(node, nnx.Variable) and isinstance(node.get_value(), jax.ShapeDtypeStruct)]


def fill_rng_state(model: nnx.Module, seed: int) -> None:
  """Give the RNG streams of an abstract model concrete keys: one distinct key per module.

  Like ``camjax.models.create``, ``params`` streams derive from ``seed`` and
  ``dropout`` streams from ``seed + 1``; each stream is folded with its position
  so that, as with nnx's own forking, no two dropout layers share masks.
  """
  seeds = {"params": seed, "dropout": seed + 1}
  for index, (_, node) in enumerate(nnx.iter_graph(model)):
    if not isinstance(node, nnx.Variable) or not isinstance(node.get_value(), jax.ShapeDtypeStruct):
      continue
    tag = getattr(node, "tag", None)
    if isinstance(node, nnx.RngKey) and tag in seeds:
      node.set_value(jax.random.fold_in(jax.random.key(seeds[tag]), index))
    elif isinstance(node, nnx.RngCount):
      node.set_value(jnp.zeros(node.get_value().shape, node.get_value().dtype))
