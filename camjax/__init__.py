"""camjax: Class Activation Mapping and weakly-supervised localization in JAX/Flax.

Data flows one way: data -> models -> cam -> localization -> viz.
Submodules are imported lazily so that, for example, the host-side evaluator
(`camjax.localization`) can be used without importing JAX.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("models", "cam", "saliency", "localization", "viz", "features", "data", "weights")


def __getattr__(name: str):
  if name in _SUBMODULES:
    return importlib.import_module(f"camjax.{name}")
  raise AttributeError(f"module 'camjax' has no attribute {name!r}")
