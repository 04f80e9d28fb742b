"""camjax: Class Activation Mapping and weakly-supervised localization in JAX/Flax.

Data flows one way: data -> models -> cam -> localization -> report.

  cam, saliency        the library face: CAM beside the logits; gradient baselines
  app, main, errors    one command runner and the entry point
  models, weights      Flax NNX networks; safe pretrained-weight import
  data                 data set builders, the grain input pipeline
  train                state, optimizer, step, checkpoints, loop, sharding, metrics
  evaluation           the eval loop over a trained model, the centre baseline
  localization         the host-side evaluator (no JAX)
  report               figures and the report page
  features             GAP features and linear classifiers on them (paper Sec. 4)
  tools                cam_images, evaluate (saved maps), ablation; thin entries beside main
Submodules are imported lazily so that, for example, the host-side evaluator
(`camjax.localization`) can be used without importing JAX.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("models", "cam", "saliency", "localization", "report", "features", "data", "weights", "train",
               "evaluation", "tools")


def __getattr__(name: str):
  if name in _SUBMODULES:
    return importlib.import_module(f"camjax.{name}")
  raise AttributeError(f"module 'camjax' has no attribute {name!r}")
