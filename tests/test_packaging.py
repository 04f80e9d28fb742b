"""The package metadata: every console script names a callable entry, dependencies are requirements.txt."""

from __future__ import annotations

import importlib
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def test_every_console_script_names_a_callable_entry():
  scripts = _pyproject()["project"]["scripts"]
  assert {"camjax", "camjax-evaluate", "camjax-cam-images", "camjax-features", "camjax-ablation"} <= set(scripts)
  for name, target in scripts.items():
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func)), name


def test_the_package_installs_the_pinned_runtime_requirements():
  project = _pyproject()
  assert "dependencies" in project["project"]["dynamic"]
  assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
