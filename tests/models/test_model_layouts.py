"""Every registered model keeps its variable paths, shapes and parameter count.

Torchvision key maps, the EfficientNet-Lite key map and saved checkpoints all
address variables by path, so a refactor of the zoo must not move or reshape
any of them. ``fixtures/model_layouts.json`` was written from the models before
the heads were shared; regenerate it only for a deliberate layout change::

    PYTHONPATH=. python tests/models/test_model_layouts.py > tests/fixtures/model_layouts.json
"""

import json
import math
import os
import sys

import jax
import pytest
from flax import nnx

from camjax import models
from camjax.models.layers import count_params

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "model_layouts.json")
NUM_CLASSES = 1000


def _path(keys) -> str:
  return "/".join(str(k) for k in keys)


def layout(name: str) -> dict:
  """Shape-only build of ``name``: parameter count and ``{path: [variable type, shape]}`` for every variable."""
  model = nnx.eval_shape(lambda: models.create(name, num_classes=NUM_CLASSES))
  variables = {}
  for keys, var in nnx.to_flat_state(nnx.state(model)):
    value = var.get_value()
    shape = list(value.shape) if hasattr(value, "shape") else []
    variables[_path(keys)] = [type(var).__name__, shape]
  return {"params": count_params(model), "variables": variables}


def _fixture() -> dict:
  with open(FIXTURE) as f:
    return json.load(f)


def test_fixture_covers_the_registry():
  assert sorted(_fixture()) == models.names()


@pytest.mark.parametrize("name", models.names())
def test_layout_unchanged(name):
  expected = _fixture()[name]
  got = layout(name)
  assert got["params"] == expected["params"]
  missing = sorted(set(expected["variables"]) - set(got["variables"]))
  extra = sorted(set(got["variables"]) - set(expected["variables"]))
  assert not missing and not extra, f"{name}: missing {missing[:5]}, unexpected {extra[:5]}"
  changed = {p: (expected["variables"][p], v) for p, v in got["variables"].items() if v != expected["variables"][p]}
  assert not changed, f"{name}: changed variables {dict(list(changed.items())[:5])}"
  params = sum(math.prod(s) for kind, s in got["variables"].values() if kind == "Param")
  assert params == expected["params"]


if __name__ == "__main__":
  jax.config.update("jax_platforms", "cpu")
  out = {name: layout(name) for name in models.names()}
  # One variable per line keeps the fixture diffable.
  sys.stdout.write("{\n")
  for i, (name, entry) in enumerate(out.items()):
    sys.stdout.write(f'  {json.dumps(name)}: {{"params": {entry["params"]}, "variables": {{\n')
    rows = [f"    {json.dumps(p)}: {json.dumps(v)}" for p, v in entry["variables"].items()]
    sys.stdout.write(",\n".join(rows))
    sys.stdout.write("\n  }}" + ("," if i < len(out) - 1 else "") + "\n")
  sys.stdout.write("}\n")
