"""Read PyTorch checkpoint files into NumPy arrays without PyTorch and without running code.

``torch.save`` writes a pickle, and unpickling an untrusted pickle can run any
code (a REDUCE of ``os.system`` is enough). This reader unpickles with an
allowlist: plain containers, ``collections.OrderedDict``, PyTorch's tensor and
parameter rebuild functions and its storage types. Every other global is refused
with :class:`UnsafeCheckpointError` naming it, before anything is called.

Both on-disk layouts are read:

* zip (PyTorch >= 1.6 default): ``<prefix>/data.pkl`` with storages in
  ``<prefix>/data/<key>`` and an optional ``<prefix>/byteorder`` record;
* legacy (``_use_new_zipfile_serialization=False``): four pickles in a row
  (magic number, protocol version, system info, the object), the list of storage
  keys, then for each key an int64 element count and the raw storage bytes.

Tensors come back as C-contiguous NumPy arrays with the shape, storage offset
and strides applied (views of one storage come back as separate copies).
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import mmap
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The checkpoint references a global outside the allowlist (it may run code on load)."""


class CheckpointFormatError(ValueError):
  """The file is not a PyTorch checkpoint this reader understands, or is corrupt."""


def _bfloat16() -> np.dtype:
  import ml_dtypes  # shipped with JAX; only needed for bfloat16 checkpoints

  return np.dtype(ml_dtypes.bfloat16)


# torch storage class name -> NumPy dtype (a callable for lazily imported dtypes).
_STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": _bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
    "UntypedStorage": np.uint8,
}

# torch dtype names (as pickled by ``torch.dtype.__reduce__``) -> NumPy dtype.
_TORCH_DTYPES: dict[str, Any] = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": _bfloat16,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
    "complex64": np.complex64,
    "complex128": np.complex128,
}


def _resolve_dtype(spec: Any) -> np.dtype:
  if callable(spec) and not isinstance(spec, type):
    return spec()
  return np.dtype(spec)


class _StorageType:
  """Stands in for ``torch.<X>Storage`` in the pickle: only carries the dtype."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _resolve_dtype(_STORAGE_DTYPES[name])


class _TorchDType:
  """Stands in for a ``torch.<dtype>`` global."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _resolve_dtype(_TORCH_DTYPES[name])


class _StorageRef:
  """A storage named by the pickle; its bytes are attached once they are read."""

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key = key
    self.dtype = dtype
    self.numel = numel
    self.data: np.ndarray | None = None  # 1-D, self.dtype, native byte order


class _StorageView:
  """Legacy storage view: ``numel`` elements of ``base`` from ``offset``."""

  def __init__(self, base: _StorageRef, offset: int, numel: int):
    self.base = base
    self.offset = offset
    self.numel = numel


class _PendingTensor:
  """A tensor whose storage bytes may not be available yet (legacy layout)."""

  def __init__(self, storage: Any, offset: int, size: tuple, stride: tuple, dtype: np.dtype | None = None):
    self.storage = storage
    self.offset = int(offset)
    self.size = tuple(int(s) for s in size)
    self.stride = tuple(int(s) for s in stride)
    self.dtype = dtype

  def materialise(self) -> np.ndarray:
    storage, base_offset = self.storage, 0
    if isinstance(storage, _StorageView):
      base_offset = storage.offset
      storage = storage.base
    if not isinstance(storage, _StorageRef) or storage.data is None:
      raise CheckpointFormatError(f"tensor refers to storage {getattr(storage, 'key', storage)!r} whose data is missing")
    data = storage.data
    if base_offset:
      data = data[base_offset:]
    if self.dtype is not None and self.dtype != data.dtype:
      # _rebuild_tensor_v3: an untyped (byte) storage read as another dtype.
      if data.nbytes % self.dtype.itemsize:
        raise CheckpointFormatError(f"storage {storage.key!r} of {data.nbytes} bytes cannot hold {self.dtype} elements")
      data = data.view(self.dtype)
    return _strided_copy(data, self.offset, self.size, self.stride, storage.key)


def _strided_copy(data: np.ndarray, offset: int, size: tuple, stride: tuple, key: str) -> np.ndarray:
  """Apply (offset, size, stride) to a 1-D storage, refusing any access outside it."""
  if len(size) != len(stride):
    raise CheckpointFormatError(f"tensor on storage {key!r}: size {size} and stride {stride} differ in rank")
  if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
    raise CheckpointFormatError(f"tensor on storage {key!r}: negative offset, size or stride")
  if any(s == 0 for s in size):
    return np.zeros(size, data.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.shape[0]:
    raise CheckpointFormatError(
        f"tensor on storage {key!r} reads element {last} but the storage holds {data.shape[0]} elements")
  view = np.lib.stride_tricks.as_strided(
      data[offset:], shape=size, strides=tuple(s * data.itemsize for s in stride), writeable=False)
  return np.array(view, copy=True, order="C")


def _rebuild_tensor(storage, storage_offset, size, stride):
  return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
  del requires_grad, backward_hooks, metadata
  if not isinstance(dtype, _TorchDType):
    raise CheckpointFormatError(f"_rebuild_tensor_v3 got dtype {dtype!r}")
  return _PendingTensor(storage, storage_offset, size, stride, dtype=dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
  del requires_grad, backward_hooks, state
  if not isinstance(data, _PendingTensor):
    raise CheckpointFormatError("_rebuild_parameter expects a tensor")
  return data


_ALLOWED_CALLABLES = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler whose globals are the allowlist above; storages come from ``storage_loader``."""

  def __init__(self, file: BinaryIO, storage_loader):
    super().__init__(file)
    self._storage_loader = storage_loader

  def find_class(self, module: str, name: str) -> Any:
    # Python 2 names, as protocol 2 pickles write them (``__builtin__`` for ``builtins``).
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
      module = _compat_pickle.IMPORT_MAPPING[module]
    if (module, name) in _ALLOWED_CALLABLES:
      return _ALLOWED_CALLABLES[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module == "torch" and name in _TORCH_DTYPES:
      return _TorchDType(name)
    raise UnsafeCheckpointError(
        f"refusing to load global {module}.{name}: only tensors, OrderedDict and plain containers "
        "are allowed (the file may try to run code when loaded)")

  def persistent_load(self, pid: Any) -> Any:
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
      raise UnsafeCheckpointError(f"refusing persistent id {str(pid)[:80]!r}: only storages are allowed")
    return self._storage_loader(pid)


def _parse_storage_pid(pid: tuple) -> tuple[_StorageType, str, int, Any]:
  if len(pid) not in (5, 6):
    raise CheckpointFormatError(f"storage record has {len(pid)} fields, expected 5 or 6")
  storage_type, key, _location, numel = pid[1:5]
  view = pid[5] if len(pid) == 6 else None
  if not isinstance(storage_type, _StorageType):
    raise CheckpointFormatError(f"storage record names {storage_type!r}, not a storage type")
  return storage_type, str(key), int(numel), view


def _materialise(obj: Any, seen: dict[int, Any] | None = None) -> Any:
  """Replace every pending tensor in nested containers by its NumPy array."""
  if seen is None:
    seen = {}
  if isinstance(obj, _PendingTensor):
    return obj.materialise()
  if id(obj) in seen:
    return seen[id(obj)]
  if isinstance(obj, dict):
    seen[id(obj)] = obj
    for k in list(obj.keys()):
      obj[k] = _materialise(obj[k], seen)
    return obj
  if isinstance(obj, list):
    seen[id(obj)] = obj
    for i, v in enumerate(obj):
      obj[i] = _materialise(v, seen)
    return obj
  if isinstance(obj, tuple):
    out = tuple(_materialise(v, seen) for v in obj)
    seen[id(obj)] = out
    return out
  if isinstance(obj, (_StorageRef, _StorageView)):
    raise CheckpointFormatError("bare storages (not wrapped in a tensor) are not supported")
  return obj


def _load_zip(zf: zipfile.ZipFile) -> Any:
  names = zf.namelist()
  pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
  if len(pkl) != 1:
    raise CheckpointFormatError(f"zip checkpoint must hold exactly one data.pkl, found {len(pkl)}")
  prefix = pkl[0][: -len("data.pkl")]
  byteorder = "little"
  if prefix + "byteorder" in names:
    byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
    if byteorder not in ("little", "big"):
      raise CheckpointFormatError(f"unknown byteorder record {byteorder!r}")
  storages: dict[str, _StorageRef] = {}

  def load_storage(pid: tuple) -> _StorageRef:
    storage_type, key, numel, _ = _parse_storage_pid(pid)
    if key in storages:
      return storages[key]
    record = f"{prefix}data/{key}"
    if record not in names:
      raise CheckpointFormatError(f"storage record {record!r} is missing from the archive")
    raw = zf.read(record)
    dtype = storage_type.dtype
    nbytes = numel * dtype.itemsize
    if len(raw) < nbytes:
      raise CheckpointFormatError(f"storage {key!r} holds {len(raw)} bytes, expected {nbytes}")
    ref = _StorageRef(key, dtype, numel)
    ref.data = _as_native(raw[:nbytes], dtype, byteorder)
    storages[key] = ref
    return ref

  with zf.open(pkl[0]) as f:
    obj = _RestrictedUnpickler(io.BytesIO(f.read()), load_storage).load()
  return _materialise(obj)


def _as_native(raw: bytes | memoryview, dtype: np.dtype, byteorder: str) -> np.ndarray:
  order = "<" if byteorder == "little" else ">"
  stored = dtype.newbyteorder(order) if dtype.itemsize > 1 and dtype.kind in "iufc" else dtype
  arr = np.frombuffer(raw, dtype=stored)
  return arr.astype(dtype, copy=False) if stored != dtype else arr


def _load_legacy(f: BinaryIO) -> Any:
  def no_storage(pid):
    raise UnsafeCheckpointError("header pickles of a checkpoint must not reference storages")

  try:
    magic = _RestrictedUnpickler(f, no_storage).load()
  except UnsafeCheckpointError:
    raise
  except Exception as e:  # noqa: BLE001  (any parse failure means: not this format)
    raise CheckpointFormatError(f"not a PyTorch checkpoint (neither zip nor legacy pickle): {e}") from None
  if magic != MAGIC_NUMBER:
    raise CheckpointFormatError("not a PyTorch checkpoint: bad magic number (a plain pickle or a corrupt file)")
  protocol = _RestrictedUnpickler(f, no_storage).load()
  if protocol != PROTOCOL_VERSION:
    raise CheckpointFormatError(f"unsupported legacy protocol version {protocol!r}")
  sys_info = _RestrictedUnpickler(f, no_storage).load()
  byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"

  storages: dict[str, _StorageRef] = {}

  def load_storage(pid: tuple) -> Any:
    storage_type, key, numel, view = _parse_storage_pid(pid)
    ref = storages.get(key)
    if ref is None:
      ref = storages[key] = _StorageRef(key, storage_type.dtype, numel)
    if view is not None:
      view_key, offset, view_numel = view
      return _StorageView(ref, int(offset), int(view_numel))
    return ref

  obj = _RestrictedUnpickler(f, load_storage).load()
  keys = _RestrictedUnpickler(f, no_storage).load()
  if not isinstance(keys, list):
    raise CheckpointFormatError("legacy checkpoint: storage key list is missing")
  for key in keys:
    key = str(key)
    ref = storages.get(key)
    if ref is None:
      raise CheckpointFormatError(f"legacy checkpoint lists storage {key!r} that no tensor uses")
    header = f.read(8)
    if len(header) != 8:
      raise CheckpointFormatError(f"legacy checkpoint truncated before storage {key!r}")
    numel = struct.unpack("<q" if byteorder == "little" else ">q", header)[0]
    nbytes = numel * ref.dtype.itemsize
    raw = f.read(nbytes)
    if numel < 0 or len(raw) != nbytes:
      raise CheckpointFormatError(f"legacy checkpoint truncated inside storage {key!r}")
    ref.data = _as_native(raw, ref.dtype, byteorder)
  return _materialise(obj)


def load(path: str | os.PathLike | BinaryIO) -> Any:
  """Load a checkpoint written by ``torch.save``; tensors become NumPy arrays.

  Raises :class:`UnsafeCheckpointError` (naming the global) when the file
  references anything beyond tensors and plain containers, and
  :class:`CheckpointFormatError` when it is not a readable checkpoint.
  """
  if isinstance(path, (str, os.PathLike)):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"checkpoint file not found: {os.fspath(path)}")
    with open(path, "rb") as fh:
      size = os.fstat(fh.fileno()).st_size
      if size == 0:
        raise CheckpointFormatError(f"checkpoint file is empty: {os.fspath(path)}")
      with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return _load_stream(io.BytesIO(mm[:]) if size < (1 << 20) else _MmapReader(mm))
  return _load_stream(path)


class _MmapReader(io.RawIOBase):
  """Seekable file-like view of an mmap (zipfile and pickle both read from it)."""

  def __init__(self, mm: mmap.mmap):
    self._mm = mm
    self._pos = 0

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return True

  def tell(self) -> int:
    return self._pos

  def seek(self, pos: int, whence: int = 0) -> int:
    base = {0: 0, 1: self._pos, 2: len(self._mm)}[whence]
    self._pos = max(0, base + pos)
    return self._pos

  def read(self, n: int = -1) -> bytes:
    end = len(self._mm) if n is None or n < 0 else min(len(self._mm), self._pos + n)
    out = self._mm[self._pos:end]
    self._pos = end
    return out

  def readinto(self, b) -> int:
    data = self.read(len(b))
    b[: len(data)] = data
    return len(data)

  def readline(self, size: int = -1) -> bytes:
    end = self._mm.find(b"\n", self._pos)
    end = len(self._mm) if end < 0 else end + 1
    if size is not None and size >= 0:
      end = min(end, self._pos + size)
    return self.read(end - self._pos)


def _load_stream(f: BinaryIO) -> Any:
  start = f.tell()
  if zipfile.is_zipfile(f):
    f.seek(start)
    with zipfile.ZipFile(f) as zf:
      return _load_zip(zf)
  f.seek(start)
  return _load_legacy(f)


def load_state_dict(path: str | os.PathLike | BinaryIO) -> dict[str, np.ndarray]:
  """Load a ``{name: array}`` state dict, unwrapping ``{"state_dict": ...}`` / ``{"model": ...}``.

  A ``module.`` prefix (from ``DataParallel``) is stripped from every key.
  """
  obj = load(path)
  for wrapper in ("state_dict", "model", "model_state_dict"):
    if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
      obj = obj[wrapper]
      break
  if not isinstance(obj, dict):
    raise CheckpointFormatError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
  out: dict[str, np.ndarray] = {}
  for key, value in obj.items():
    if not isinstance(value, np.ndarray):
      continue  # counters and metadata stored beside tensors
    key = str(key)
    out[key[len("module."):] if key.startswith("module.") else key] = value
  return out
