"""Shared test settings: CPU only, deterministic, small; the test tree mirrors the package tree.

The helpers beside this file (``_train_helpers``, ``fake_layouts``, ``tiny_config``) and
every test folder are importable from any test, whichever folder pytest enters first.
"""

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Many tests (and the runs they start in subprocesses) compile the same programs: one
# compilation cache per test session, shared by the pytest workers and their subprocesses,
# compiles each once. Set before jax is imported; the first process to load this file owns it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="camjax-test-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  atexit.register(shutil.rmtree, _cache, True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# And most programs here are small and run once: LLVM at -O1 compiles them about 1.5 times faster.
# Convolutions and matrix products run in their libraries either way; users' runs keep XLA's default.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1").strip()

TESTS = os.path.dirname(os.path.abspath(__file__))
# Appended, not prepended: a test folder named like a package (data, models, ...) never hides a real one.
NOT_TESTS = ("fixtures", "slow_steps", "__pycache__")
sys.path += [TESTS] + sorted(os.path.join(TESTS, d) for d in os.listdir(TESTS)
                             if os.path.isdir(os.path.join(TESTS, d)) and d not in NOT_TESTS)


def pytest_collection_modifyitems(config, items):
  """Slow tests first, so that with several workers the longest one does not start last."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
