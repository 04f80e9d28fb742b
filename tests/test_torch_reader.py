"""The torch-free checkpoint reader: round trips against torch.save, and refusal of code."""

import collections
import os
import pickle
import zipfile

import numpy as np
import pytest

from camjax.weights import torch_reader

torch = pytest.importorskip("torch")

FORMATS = {"zip": True, "legacy": False}


def _save(obj, path, fmt):
  torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
  return path


def _state_dict():
  g = torch.Generator().manual_seed(0)
  base = torch.randn(4, 6, generator=g)
  sd = collections.OrderedDict()
  sd["conv.weight"] = torch.randn(8, 3, 3, 3, generator=g)
  sd["half"] = torch.randn(5, generator=g).half()
  sd["long"] = torch.arange(-3, 7, dtype=torch.int64)
  sd["int32"] = torch.arange(4, dtype=torch.int32)
  sd["uint8"] = torch.arange(250, 256, dtype=torch.uint8)
  sd["double"] = torch.randn(3, dtype=torch.float64, generator=g)
  sd["mask"] = torch.tensor([True, False, True])
  sd["scalar"] = torch.tensor(7)
  sd["empty"] = torch.zeros(0, 3)
  sd["base"] = base
  sd["transposed"] = base.t()  # non-contiguous, shares storage with base
  sd["slice"] = base[1:3, 2:5]  # storage offset and strides
  sd["strided"] = base[:, ::2]
  sd["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
  return sd


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_state_dict_round_trip(tmp_path, fmt):
  sd = _state_dict()
  path = _save(sd, tmp_path / f"sd_{fmt}.pt", fmt)
  got = torch_reader.load(path)
  assert isinstance(got, collections.OrderedDict)
  assert list(got) == list(sd)
  for key, ref in sd.items():
    ref = ref.detach()
    arr = got[key]
    assert isinstance(arr, np.ndarray), key
    assert arr.shape == tuple(ref.shape), key
    assert arr.flags.c_contiguous
    np.testing.assert_array_equal(arr, ref.numpy(), err_msg=key)
    assert arr.dtype == ref.numpy().dtype, key


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_bfloat16_and_nested_containers(tmp_path, fmt):
  obj = {"epoch": 3, "name": "run", "nested": [torch.ones(2, dtype=torch.bfloat16) * 1.5, (torch.arange(3.0), None)]}
  got = torch_reader.load(_save(obj, tmp_path / "n.pt", fmt))
  assert got["epoch"] == 3 and got["name"] == "run"
  np.testing.assert_array_equal(got["nested"][0].astype(np.float32), [1.5, 1.5])
  np.testing.assert_array_equal(got["nested"][1][0], [0.0, 1.0, 2.0])
  assert got["nested"][1][1] is None


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_load_state_dict_unwraps_and_strips_prefix(tmp_path, fmt):
  obj = {"state_dict": {"module.fc.weight": torch.ones(2, 3), "module.fc.bias": torch.zeros(2)}, "epoch": 1}
  got = torch_reader.load_state_dict(_save(obj, tmp_path / "w.pt", fmt))
  assert sorted(got) == ["fc.bias", "fc.weight"]
  assert got["fc.weight"].shape == (2, 3)


class _Payload:
  """Pickles as a call that would create a marker file if anything ran it."""

  def __init__(self, func, marker):
    self.func, self.marker = func, marker

  def __reduce__(self):
    if self.func == "system":
      return (os.system, (f"touch {self.marker}",))
    return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("func,global_name", [("system", f"{os.system.__module__}.system"), ("eval", "builtins.eval")])
def test_code_in_checkpoint_is_refused(tmp_path, fmt, func, global_name):
  marker = tmp_path / "pwned"
  obj = {"weight": torch.ones(2), "evil": _Payload(func, marker)}
  path = _save(obj, tmp_path / "evil.pt", fmt)
  with pytest.raises(torch_reader.UnsafeCheckpointError, match=global_name.replace(".", r"\.")):
    torch_reader.load(path)
  assert not marker.exists()


def test_plain_pickle_with_payload_is_refused(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "plain.pkl"
  path.write_bytes(pickle.dumps(_Payload("system", marker), protocol=2))
  with pytest.raises(torch_reader.UnsafeCheckpointError, match="system"):
    torch_reader.load(path)
  assert not marker.exists()


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
  path = _save({"w": torch.arange(6.0)}, tmp_path / "z.pt", "zip")
  with zipfile.ZipFile(path) as zf:
    records = {n: zf.read(n) for n in zf.namelist()}
  pkl_name = next(n for n in records if n.endswith("data.pkl"))
  # A crafted size (6,) -> (60,) would read past the storage's end.
  records[pkl_name] = records[pkl_name].replace(b"K\x06\x85", b"K<\x85", 1)
  bad = tmp_path / "bad.pt"
  with zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as zf:
    for name, data in records.items():
      zf.writestr(name, data)
  with pytest.raises(torch_reader.CheckpointFormatError, match="storage"):
    torch_reader.load(bad)


def test_not_a_checkpoint(tmp_path):
  path = tmp_path / "junk.pt"
  path.write_bytes(b"hello world, not a pickle")
  with pytest.raises(torch_reader.CheckpointFormatError):
    torch_reader.load(path)
  with pytest.raises(FileNotFoundError):
    torch_reader.load(tmp_path / "missing.pt")
