"""ImageNet backbones from torchvision checkpoint files (VGG16, AlexNet, GoogLeNet, ResNet50, Inception v3).

The paper fine-tunes its GAP networks from ImageNet weights. A user holding
torchvision's files (for example ``vgg16-397923af.pth``, ``alexnet-owt-7be5be79.pth``,
``googlenet-1378be20.pth``, ``resnet50-0676ba61.pth``, ``inception_v3_google-0cc3c7bd.pth``) loads them with::

    model = camjax.models.create("vgg16_gap", num_classes=200)
    camjax.weights.load_pretrained(model, "vgg16-397923af.pth")  # format inferred from the model

The backbone layers map one to one (kernels OIHW -> HWIO, linear (out, in) ->
(in, out), BatchNorm weight/bias/running_mean/running_var -> scale/bias/mean/var);
layers the GAP and WSOL variants add (``cam_conv``, ``SPG_A3_*``, the classifier)
keep their fresh initialisation, and the file's layers the variants drop
(VGG/AlexNet ``classifier.*``, GoogLeNet ``inception5*``, Inception v3
``Mixed_7*``, ``fc``, ``aux*``, ``AuxLogits.*``) are skipped. The full
baselines (``vgg16``, ``alexnet``, ``googlenet``, ``resnet50``, ``inceptionv3``)
and ``resnet50_wsol`` (whose classifier reads the same 2048 channels, as the
WSOL standard loads it for ImageNet) also get their last layer when its class
count matches.

Inputs must be normalised as the weights expect: see ``INPUT_NORMALIZATION``.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from flax import nnx

from camjax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from camjax.errors import UserError
from camjax.weights import assign, torch_reader

FORMATS = ("torchvision_vgg16", "torchvision_alexnet", "torchvision_googlenet", "torchvision_resnet50",
           "torchvision_inception_v3", "efficientnet_lite")

# (mean, std) on RGB in [0, 1] that the pretrained weights expect.
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
INPUT_NORMALIZATION = {
    "torchvision_vgg16": IMAGENET,
    "torchvision_alexnet": IMAGENET,
    # torchvision's googlenet weights are ported from TF and run with transform_input=True,
    # which maps ImageNet-normalised input back to (x - 0.5) / 0.5.
    "torchvision_googlenet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "torchvision_resnet50": IMAGENET,
    # Inception v3's weights are ported from TF too (transform_input=True in torchvision).
    "torchvision_inception_v3": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "efficientnet_lite": IMAGENET,
}

_MODEL_FORMATS = {
    "VGG16": "torchvision_vgg16", "VGG16Gap": "torchvision_vgg16", "VGG16Wsol": "torchvision_vgg16",
    "AlexNet": "torchvision_alexnet", "AlexNetGap": "torchvision_alexnet", "AlexNetStarGap": "torchvision_alexnet",
    "GoogLeNet": "torchvision_googlenet", "GoogLeNetGap": "torchvision_googlenet",
    "ResNet50": "torchvision_resnet50", "ResNet50Wsol": "torchvision_resnet50",
    "InceptionV3": "torchvision_inception_v3", "InceptionV3Wsol": "torchvision_inception_v3",
    "EfficientNetLite": "efficientnet_lite",
}


def infer_format(model: nnx.Module) -> str:
  """The checkpoint format whose backbone fits ``model`` (by model class)."""
  name = type(model).__name__
  if name not in _MODEL_FORMATS:
    raise UserError(f"no torch pretrained weights fit {name}; .pth files load into "
                    f"{', '.join(sorted(_MODEL_FORMATS))} (for other models use a camjax checkpoint)")
  return _MODEL_FORMATS[name]


def _fc_map(names: Mapping[str, str], head: bool) -> dict[str, assign.Target]:
  m = {}
  for ours in ("fc6", "fc7", "fc8"):
    if ours == "fc8" and not head:
      continue
    m.update(assign.linear_layer(names[ours], ours))
  return m


def _head_fits(model: nnx.Module, state_dict: Mapping[str, np.ndarray], key: str, layer) -> bool:
  """The file's last layer has the shape of the model's (same class count) and the model has a bias."""
  w = state_dict.get(key)
  return (w is not None and getattr(layer, "bias", None) is not None
          and tuple(w.shape) == tuple(layer.kernel.get_value().shape[::-1]))


def _plain_key_map(model: nnx.Module, torch_names: Mapping[str, str], full_class: str,
                   head: bool) -> dict[str, assign.Target]:
  """A plain conv stack (``features``) and, for the original network ``full_class``, its fc layers."""
  m = {}
  for ours, theirs in torch_names.items():
    if ours.startswith("conv"):
      m.update(assign.conv_layer(theirs, "features", ours))
  if type(model).__name__ == full_class:
    m.update(_fc_map(torch_names, head))
  return m


def vgg16_key_map(model: nnx.Module, *, head: bool = False) -> dict[str, assign.Target]:
  """torchvision ``vgg16`` keys -> ``vgg16_gap`` / ``vgg16`` variables."""
  from camjax.models import vgg

  return _plain_key_map(model, vgg.TORCH_NAMES, "VGG16", head)


def alexnet_key_map(model: nnx.Module, *, head: bool = False) -> dict[str, assign.Target]:
  """torchvision ``alexnet`` keys -> ``alexnet_gap`` / ``alexnet_star_gap`` / ``alexnet`` variables."""
  from camjax.models import alexnet

  return _plain_key_map(model, alexnet.TORCH_NAMES, "AlexNet", head)


def _basic_conv(prefix: str, *path) -> dict[str, assign.Target]:
  m = assign.conv_layer(f"{prefix}.conv", *path, "conv", bias=False)
  m.update(assign.batch_norm(f"{prefix}.bn", *path, "bn"))
  return m


def googlenet_key_map(model: nnx.Module, *, head: bool = False) -> dict[str, assign.Target]:
  """torchvision ``googlenet`` keys -> ``googlenet_gap`` (to inception4e) / ``googlenet`` variables."""
  m = {}
  for stem in ("conv1", "conv2", "conv3"):
    m.update(_basic_conv(stem, stem))
  for name in model.inceptions:
    m.update(_basic_conv(f"{name}.branch1", name, "branch1"))
    for branch, indices in (("branch2", (0, 1)), ("branch3", (0, 1)), ("branch4", (1,))):
      for i in indices:
        m.update(_basic_conv(f"{name}.{branch}.{i}", name, branch, i))
  if head and type(model).__name__ == "GoogLeNet":
    m.update(assign.linear_layer("fc", "head", "classifier", bias=model.head.classifier.bias is not None))
  return m


def _conv_bn_map(model: nnx.Module, skip: tuple[str, ...]) -> dict[str, assign.Target]:
  """Every conv and BatchNorm of ``model`` outside the top-level layers ``skip``, keyed by its own path.

  The ResNet50 and Inception v3 modules sit at torchvision's key paths, so the
  map is read off the model; a layer the file lacks, or a file key the model
  lacks, is then reported by ``assign.load_mapped`` like any other mismatch.
  """
  m = {}
  for path, module in nnx.iter_modules(model):
    if not path or path[0] in skip:
      continue
    prefix = ".".join(map(str, path))
    if isinstance(module, nnx.Conv):
      m.update(assign.conv_layer(prefix, *path, bias=module.bias is not None))
    elif isinstance(module, nnx.BatchNorm):
      m.update(assign.batch_norm(prefix, *path))
  return m


def _fc_head(model: nnx.Module) -> dict[str, assign.Target]:
  return assign.linear_layer("fc", "head", "classifier", bias=model.head.classifier.bias is not None)


def resnet50_key_map(model: nnx.Module, *, head: bool = False) -> dict[str, assign.Target]:
  """torchvision ``resnet50`` keys -> ``resnet50`` / ``resnet50_wsol`` variables (same shapes in both)."""
  m = _conv_bn_map(model, ("head",))
  if head:
    m.update(_fc_head(model))
  return m


# Layers the WSOL Inception v3 adds; they keep their initialisation.
INCEPTION_WSOL_ADDED = ("SPG_A3_1b", "SPG_A3_2b")


def inception_v3_key_map(model: nnx.Module, *, head: bool = False) -> dict[str, assign.Target]:
  """torchvision ``inception_v3`` keys -> ``inceptionv3`` / ``inceptionv3_wsol`` (to Mixed_6e) variables."""
  m = _conv_bn_map(model, ("head",) + INCEPTION_WSOL_ADDED)
  if head and type(model).__name__ == "InceptionV3":
    m.update(_fc_head(model))
  return m


# Keys a torchvision file may hold that a camjax model of that family does not use.
_SKIPPABLE = {
    "torchvision_vgg16": ("classifier.*",),
    "torchvision_alexnet": ("classifier.*",),
    "torchvision_googlenet": ("aux1.*", "aux2.*", "inception5a.*", "inception5b.*", "fc.*"),
    "torchvision_resnet50": ("fc.*",),
    "torchvision_inception_v3": ("AuxLogits.*", "Mixed_7a.*", "Mixed_7b.*", "Mixed_7c.*", "fc.*"),
}
_KEY_MAPS = {
    "torchvision_vgg16": (vgg16_key_map, "classifier.6.weight", "fc8"),
    "torchvision_alexnet": (alexnet_key_map, "classifier.6.weight", "fc8"),
    "torchvision_googlenet": (googlenet_key_map, "fc.weight", ("head", "classifier")),
    "torchvision_resnet50": (resnet50_key_map, "fc.weight", ("head", "classifier")),
    "torchvision_inception_v3": (inception_v3_key_map, "fc.weight", ("head", "classifier")),
}
# Models whose last layer is loaded when the file's fits (same class count, a bias): the full
# baselines, and resnet50_wsol, which the WSOL standard starts from ImageNet's fc on ImageNet.
_HEAD_MODELS = ("VGG16", "AlexNet", "GoogLeNet", "ResNet50", "ResNet50Wsol", "InceptionV3")


def key_map(model: nnx.Module, format: str, *, head: bool = False) -> dict[str, assign.Target]:
  """torch key -> camjax variable for ``format`` (see ``FORMATS``)."""
  if format not in _KEY_MAPS:
    raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
  return _KEY_MAPS[format][0](model, head=head)


def load_pretrained(
    model: nnx.Module,
    path: str | os.PathLike | Mapping[str, np.ndarray],
    format: str | None = None,
    *,
    head: bool | None = None,
    flag: str = "pretrained.path",
) -> nnx.Module:
  """Load ImageNet weights from a torchvision (or EfficientNet-Lite) checkpoint into ``model`` in place.

  Args:
    model: a camjax model (``vgg16_gap``, ``vgg16_wsol``, ``alexnet_gap``,
      ``alexnet_star_gap``, ``googlenet_gap``, their FC baselines, ``resnet50``,
      ``resnet50_wsol``, ``inceptionv3``, ``inceptionv3_wsol`` or ``efficientnet_lite*``).
    path: the ``.pth`` file (read without torch and without running code) or a
      ready ``{key: array}`` mapping.
    format: one of ``FORMATS``; ``None`` infers it from the model.
    head: load the final classifier too; ``None`` loads it when the model has
      a matching one (full baselines and ``resnet50_wsol`` with 1000 classes),
      never for the GAP models with an added conv.

    flag: the setting ``path`` came from, named when the file does not exist.

  The file is read first, so a missing, truncated or unsafe file is reported
  (as a one-line ``camjax.errors.UserError`` naming it) before any question
  about the model. Raises ``assign.WeightMismatchError`` listing every missing
  key, unexpected key and shape mismatch; nothing is changed in that case.
  """
  if format is not None and format not in FORMATS:
    raise UserError(f"pretrained format must be one of {FORMATS}, got {format!r}")
  if isinstance(path, (str, os.PathLike)):
    name = torch_reader.check_file(path, flag)
    state_dict = torch_reader.load_state_dict(name)
  else:
    name, state_dict = "state dict", dict(path)
  format = infer_format(model) if format is None else format
  expected = infer_format(model) if type(model).__name__ in _MODEL_FORMATS else None
  if expected is not None and expected != format:
    raise UserError(f"{type(model).__name__} takes {expected} weights, not {format}")
  if format == "efficientnet_lite":
    from camjax.weights import efficientnet_lite

    return efficientnet_lite.load_into(model, state_dict, head=head, source_name=name)
  builder, head_key, head_path = _KEY_MAPS[format]
  if head is None:
    head = False
    # Reuse a 1000-way head; ACoL's and SPG's class layers are new to their networks, as in the WSOL standard.
    if type(model).__name__ in _HEAD_MODELS and getattr(model, "architecture", "cam") in ("cam", "adl"):
      layer = model
      for part in (head_path if isinstance(head_path, tuple) else (head_path,)):
        layer = getattr(layer, part)
      head = _head_fits(model, state_dict, head_key, layer)
  # Keys in the map are always required; these patterns only excuse keys outside it.
  ignore = list(assign.DEFAULT_IGNORE) + list(_SKIPPABLE[format])
  assign.load_mapped(model, state_dict, builder(model, head=head), ignore=ignore, source=name)
  return model
