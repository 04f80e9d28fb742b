"""Models built by name: ``create("googlenet_gap", num_classes=1000)``."""

from __future__ import annotations

from typing import Callable

from flax import nnx

_BUILDERS: dict[str, Callable[..., nnx.Module]] = {}


def register(name: str):
  """Class or function decorator adding a builder ``(num_classes, pooling, rngs, **kw) -> Module``."""

  def wrap(builder):
    if name in _BUILDERS:
      raise ValueError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    return builder

  return wrap


def names() -> list[str]:
  return sorted(_BUILDERS)


def create(name: str, *, num_classes: int, pooling: str = "gap", seed: int = 0, **overrides) -> nnx.Module:
  """Build a model by name with parameters initialised from ``seed``.

  ``overrides`` go to the model's constructor (for example ``use_bias=True``,
  ``dtype=jnp.bfloat16`` or, for ``small_gap``, ``widths=(16, 32)``).
  """
  if name not in _BUILDERS:
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}")
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  rngs = nnx.Rngs(params=seed, dropout=seed + 1)
  return _BUILDERS[name](num_classes=num_classes, pooling=pooling, rngs=rngs, **overrides)
