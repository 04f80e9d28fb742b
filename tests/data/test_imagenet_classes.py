"""The ImageNet class names shipped with camjax: 1000, in synset order, the list TFDS also carries."""

from __future__ import annotations

import importlib.util
import os
import tomllib

from camjax.data.imagenet_classes import NUM_CLASSES, class_names

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_shipped_names_are_imagenets_in_synset_order():
  names = class_names()
  assert len(names) == NUM_CLASSES == len(set(names))
  assert names[0].startswith("tench") and names[285] == "Egyptian cat" and names[999].startswith("toilet tissue")
  labels = os.path.join(importlib.util.find_spec("tensorflow_datasets").submodule_search_locations[0], "datasets",
                        "siscore", "labels.py")
  spec = importlib.util.spec_from_file_location("tfds_imagenet_labels", labels)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert list(names) == module.IMAGENET_LABELS_LIST


def test_the_names_file_is_package_data(tmp_path):
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
  assert "imagenet_classes.txt" in package_data["camjax.data"]
  custom = tmp_path / "names.txt"
  custom.write_text("a\nb\n\n")
  assert class_names(str(custom)) == ("a", "b")
