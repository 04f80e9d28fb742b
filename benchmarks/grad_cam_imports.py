"""Import pytorch-grad-cam without torchvision, scikit-learn or matplotlib.

grad-cam imports all three at module level, but the methods and metrics camjax
compares against use none of them, and no registry build of torchvision loads
beside a CPU-only torch. ``stand_ins()`` gives empty modules for whichever of
them is missing while grad-cam is imported, and removes them afterwards. The
parity tests and the methods benchmark share it.
"""

from __future__ import annotations

import contextlib
import sys
import types
from typing import Iterator

# Module name -> the attributes grad-cam reads from it at import time.
STAND_INS = {
    "torchvision": {}, "torchvision.transforms": dict(Compose=object, Normalize=object, ToTensor=object),
    "torchvision.transforms.functional": dict(resize=None), "torchvision.ops": {},
    "sklearn": {}, "sklearn.decomposition": dict(KernelPCA=object, NMF=object),
    "matplotlib": {}, "matplotlib.pyplot": {}, "matplotlib.lines": dict(Line2D=object)}


@contextlib.contextmanager
def stand_ins() -> Iterator[None]:
  """Empty modules for grad-cam's unused imports that do not load here; removed on exit."""
  added = []
  for name, attrs in STAND_INS.items():
    try:
      __import__(name)
    except Exception:  # noqa: BLE001 - missing or broken: stand in
      module = types.ModuleType(name)
      module.__dict__.update(attrs)
      sys.modules[name] = module
      added.append(name)
  for name in added:
    parent, _, child = name.rpartition(".")
    if parent:
      setattr(sys.modules[parent], child, sys.modules[name])
  try:
    yield
  finally:
    for name in added:
      sys.modules.pop(name, None)
