"""Names of the 1000 ImageNet (ILSVRC 2012) classes in the standard synset order.

They ship with camjax as ``imagenet_classes.txt`` beside this module (one name per
line, line = class id). A text file of the same form can be used instead
(``class_names(path)``).
"""

from __future__ import annotations

import functools
from importlib import resources

NUM_CLASSES = 1000


@functools.lru_cache(maxsize=None)
def class_names(path: str | None = None) -> tuple[str, ...]:
  """The class names, index = class id (``path``: a text file with one name per line; default: ImageNet's)."""
  if path is None:
    text = resources.files("camjax.data").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
  else:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  return tuple(line for line in text.splitlines() if line.strip())
