"""Names of the 1000 ImageNet (ILSVRC 2012) classes in the standard synset order.

The list is read from a package already installed with camjax's dependencies:
``tensorflow_datasets`` ships it (``datasets/siscore/labels.py``,
``IMAGENET_LABELS_LIST``). That one file is loaded on its own, without importing
``tensorflow_datasets``. A text file with one name per line can be used instead
(``class_names(path)``); with neither, names fall back to ``"class <id>"``.
"""

from __future__ import annotations

import functools
import importlib.util
import os

NUM_CLASSES = 1000
_TFDS_LABELS = os.path.join("datasets", "siscore", "labels.py")


def _from_tfds() -> list[str] | None:
  spec = importlib.util.find_spec("tensorflow_datasets")
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(spec.submodule_search_locations[0], _TFDS_LABELS)
  if not os.path.isfile(path):
    return None
  module_spec = importlib.util.spec_from_file_location("_camjax_tfds_imagenet_labels", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  names = getattr(module, "IMAGENET_LABELS_LIST", None)
  if not isinstance(names, list) or len(names) != NUM_CLASSES:
    return None
  return [str(n) for n in names]


@functools.lru_cache(maxsize=None)
def class_names(path: str | None = None) -> tuple[str, ...]:
  """The 1000 class names, index = class id (``path``: a text file with one name per line)."""
  if path is not None:
    with open(path, encoding="utf-8") as f:
      names = [line.rstrip("\n") for line in f if line.strip()]
    return tuple(names)
  names = _from_tfds()
  if names is None:
    return tuple(f"class {i}" for i in range(NUM_CLASSES))
  return tuple(names)
