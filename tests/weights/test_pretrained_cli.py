"""camjax.main with a bad --config.pretrained.path: one line naming the file, exit 2, nothing run."""

from __future__ import annotations

import os

import numpy as np
import pytest

import _train_helpers as h

torch = pytest.importorskip("torch")


class _Payload:
  """Pickles as ``os.system("touch <marker>")``: refused by the reader, so the marker must never appear."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def _missing(tmp_path):
  return tmp_path / "missing.pth"


def _truncated(tmp_path):
  full = tmp_path / "full.pth"
  torch.save({"features.0.weight": torch.randn(16, 3, 3, 3), "features.0.bias": torch.randn(16)}, full)
  data = full.read_bytes()
  path = tmp_path / "truncated.pth"
  path.write_bytes(data[: len(data) // 2])
  return path


def _random_bytes(tmp_path):
  path = tmp_path / "random.pth"
  path.write_bytes(np.random.default_rng(0).integers(0, 256, size=3000, dtype=np.uint8).tobytes())
  return path


def _refused_global(tmp_path):
  path = tmp_path / "evil.pth"
  torch.save({"features.0.bias": torch.ones(2), "evil": _Payload(tmp_path / "pwned")}, path,
             _use_new_zipfile_serialization=False)
  return path


@pytest.mark.parametrize("make, needle", [
    (_missing, "pretrained.path={path} does not exist"),
    (_truncated, "{path}: truncated or corrupt"),
    (_random_bytes, "{path}: not a PyTorch checkpoint"),
    (_refused_global, "{path}: refusing to load global"),
])
def test_bad_pretrained_file_is_one_line_naming_it(tmp_path, make, needle):
  # tiny_config's small_gap has no torch key map: the file's problem must still be what is reported.
  path = make(tmp_path)
  proc = h.run(h.cli(str(tmp_path / "work"), f"--config.pretrained.path={path}",
                     "--config.pretrained.format=torchvision"))
  errors = [line for line in proc.stderr.splitlines() if line.startswith("camjax: error:")]
  assert proc.returncode == 2, proc.stderr
  assert len(errors) == 1 and needle.format(path=path) in errors[0], proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "pwned").exists()
  assert h.checkpoint_steps(str(tmp_path / "work")) == []  # no training step ran
