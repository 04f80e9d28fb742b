"""The package metadata: every console script names a callable entry, dependencies are requirements.txt."""

from __future__ import annotations

import os
import subprocess
import sys
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
    # One process per command: each module defines its own absl flags.
    check = f"import {module} as m, sys; sys.exit(0 if callable(getattr(m, {func!r}, None)) else 1)"
    assert subprocess.run([sys.executable, "-c", check], cwd=ROOT).returncode == 0, name


def test_the_package_installs_the_pinned_runtime_requirements():
  project = _pyproject()
  assert "dependencies" in project["project"]["dynamic"]
  assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
