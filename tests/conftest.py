"""Shared test settings: CPU only, deterministic, small; the test tree mirrors the package tree.

The helpers beside this file (``_train_helpers``, ``fake_layouts``, ``tiny_config``) and
every test folder are importable from any test, whichever folder pytest enters first.
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TESTS = os.path.dirname(os.path.abspath(__file__))
# Appended, not prepended: a test folder named like a package (data, models, ...) never hides a real one.
NOT_TESTS = ("fixtures", "slow_steps", "__pycache__")
sys.path += [TESTS] + sorted(os.path.join(TESTS, d) for d in os.listdir(TESTS)
                             if os.path.isdir(os.path.join(TESTS, d)) and d not in NOT_TESTS)
