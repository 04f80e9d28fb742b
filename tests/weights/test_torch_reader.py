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


# ----------------------------------------------------------------------------- limits, truncation, error types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Loads each file under a 2 GiB address-space limit (a regression then fails with MemoryError instead of
# taking the machine's memory) and prints, per file, the error and the peak bytes Python and NumPy allocated.
_ISOLATED = """
import json, resource, sys, time, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from camjax.weights import torch_reader
out = []
for path in sys.argv[1:]:
  tracemalloc.start()
  start = time.perf_counter()
  try:
    torch_reader.load(path)
    error = None
  except Exception as e:
    error = [type(e).__name__, str(e)]
  out.append({"error": error, "peak": tracemalloc.get_traced_memory()[1], "seconds": time.perf_counter() - start})
  tracemalloc.stop()
print(json.dumps(out))
"""


def _load_isolated(*paths):
  import json
  import subprocess
  import sys

  env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
  proc = subprocess.run([sys.executable, "-c", _ISOLATED, *map(str, paths)], env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_expanded_view_of_a_tiny_storage_is_refused_before_allocating(tmp_path):
  # torch.ones(1).expand(50000, 50000) is a 1.6 KB file whose tensor would take 9.3 GiB.
  paths = [_save({"w": torch.ones(1).expand(50000, 50000)}, tmp_path / f"expand_{fmt}.pth", fmt) for fmt in FORMATS]
  for path, got in zip(paths, _load_isolated(*paths)):
    assert got["error"] is not None and got["error"][0] == "CheckpointFormatError", got
    message = got["error"][1]
    assert message.startswith(f"{path}: ") and "'w'" in message and "(50000, 50000)" in message, message
    assert "\n" not in message
    assert got["peak"] < 16 << 20 and got["seconds"] < 10, got


def test_pickle_lengths_and_memo_indices_are_checked_before_unpickling(tmp_path):
  # A 100-byte file declaring a 2 GiB bytes object, and a memo put at index 2**28 (the unpickler would
  # size its memo table from it): both are refused from what the file really holds.
  huge_bytes = tmp_path / "bytes.pth"
  huge_bytes.write_bytes(b"\x80\x02B\xf0\xff\xff\x7f" + b"x" * 100)
  huge_memo = tmp_path / "memo.pth"
  huge_memo.write_bytes(b"\x80\x02K\x01r\xff\xff\xff\x0f.")
  for path, got in zip((huge_bytes, huge_memo), _load_isolated(huge_bytes, huge_memo)):
    assert got["error"] is not None and got["error"][0] == "CheckpointFormatError", got
    assert got["error"][1].startswith(f"{path}: "), got
    assert got["peak"] < 16 << 20, got


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_expanded_views_within_the_limit_still_load(tmp_path, fmt):
  path = _save({"row": torch.arange(3.0).expand(500, 3), "w": torch.ones(1000, 1000)}, tmp_path / "ok.pth", fmt)
  got = torch_reader.load(path)
  np.testing.assert_array_equal(got["row"], np.tile(np.arange(3.0, dtype=np.float32), (500, 1)))
  # max_bytes caps everything read: the 4 MB tensor (and its 4 MB storage) do not fit in 6 MB.
  with pytest.raises(torch_reader.CheckpointFormatError, match=r"'w'|storage") as err:
    torch_reader.load(path, max_bytes=6 << 20)
  assert str(err.value).startswith(f"{path}: ") and "max_bytes" in str(err.value)


def _zip_records(path):
  with zipfile.ZipFile(path) as zf:
    return {n: zf.read(n) for n in zf.namelist()}


def _write_zip(path, records):
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
    for name, data in records.items():
      zf.writestr(name, data)
  return path


def test_storage_declaring_more_than_its_record_holds_is_refused(tmp_path):
  records = _zip_records(_save({"w": torch.arange(6.0)}, tmp_path / "z.pt", "zip"))
  pkl_name = next(n for n in records if n.endswith("data.pkl"))
  # The storage record (..., 'cpu', 6) now claims 2**31 - 1 float32 elements: 8 GiB from a 24-byte record.
  assert records[pkl_name].count(b"K\x06t") == 1
  records[pkl_name] = records[pkl_name].replace(b"K\x06t", b"J\xff\xff\xff\x7ft")
  bad = _write_zip(tmp_path / "bad.pt", records)
  with pytest.raises(torch_reader.CheckpointFormatError, match="holds 24 bytes") as err:
    torch_reader.load(bad)
  assert str(err.value).startswith(f"{bad}: ")


def _truncations(data):
  n = len(data)
  return sorted({1, 3, 12, n // 10, n // 2, n * 9 // 10, n - 1})


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_truncated_checkpoints_name_the_file(tmp_path, fmt):
  data = _save(_state_dict(), tmp_path / "full.pth", fmt).read_bytes()
  for n in _truncations(data):
    path = tmp_path / f"cut_{n}.pth"
    path.write_bytes(data[:n])
    with pytest.raises(torch_reader.CheckpointFormatError) as err:
      torch_reader.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: truncated or corrupt ("), (n, message)
    assert "\n" not in message


def test_random_bytes_name_the_file(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(30):
    path = tmp_path / f"random_{i}.pth"
    path.write_bytes(rng.integers(0, 256, size=int(rng.integers(1, 4000)), dtype=np.uint8).tobytes())
    with pytest.raises((torch_reader.CheckpointFormatError, torch_reader.UnsafeCheckpointError)) as err:
      torch_reader.load(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_reader_errors_are_one_line_user_errors_naming_the_file(tmp_path):
  from camjax.errors import UserError

  assert issubclass(torch_reader.CheckpointFormatError, UserError)
  assert issubclass(torch_reader.CheckpointFormatError, ValueError)
  assert issubclass(torch_reader.UnsafeCheckpointError, UserError)
  assert issubclass(torch_reader.UnsafeCheckpointError, pickle.UnpicklingError)
  marker = tmp_path / "pwned"
  evil = _save({"w": torch.ones(2), "evil": _Payload("system", marker)}, tmp_path / "evil.pt", "zip")
  with pytest.raises(UserError) as err:
    torch_reader.load(evil)
  assert str(err.value).startswith(f"{evil}: refusing to load global") and not marker.exists()
  missing = tmp_path / "missing.pth"
  with pytest.raises(torch_reader.CheckpointNotFoundError, match="missing.pth does not exist") as err:
    torch_reader.load(missing)
  assert isinstance(err.value, UserError) and isinstance(err.value, FileNotFoundError)
  with pytest.raises(UserError, match="is not a file"):
    torch_reader.load(tmp_path)
  empty = tmp_path / "empty.pth"
  empty.write_bytes(b"")
  with pytest.raises(torch_reader.CheckpointFormatError, match=f"{empty} is empty"):
    torch_reader.load(empty)
  not_a_dict = _save([torch.ones(1)], tmp_path / "list.pth", "zip")
  with pytest.raises(torch_reader.CheckpointFormatError, match=f"{not_a_dict}: expected a state dict"):
    torch_reader.load_state_dict(not_a_dict)
