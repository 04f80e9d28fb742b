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

A small file must not make the reader allocate much: every size the file
declares is checked against the bytes it really holds before anything is
allocated (a storage against its archive record or the rest of the file, a
tensor against its storage), each pickle is walked once without building
anything before it is unpickled (so a length or memo index it declares cannot
ask for more than the file holds), and the arrays returned may take at most
``max_bytes`` in all (by default ``default_max_bytes(file size)``), which stops
expanded (stride-0) views of a tiny storage. Every error names the file.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import mmap
import os
import pickle
import pickletools
import struct
import zipfile
import zlib
from typing import Any, BinaryIO

import numpy as np

from camjax.errors import UserError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# No storage or tensor may declare more elements than this (64 Gi), whatever its byte size.
MAX_ELEMENTS = 1 << 36
# The arrays read from a file may take at most this many times its size, and never less than
# MIN_MAX_BYTES: a genuine file holds every storage it uses, and views sharing a storage rarely
# add more than one copy of it; an expanded (stride-0) view of a tiny storage is what this stops.
MAX_BYTES_PER_FILE_BYTE = 4
MIN_MAX_BYTES = 256 << 20

_ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first local file header
_LEGACY_HEAD = pickle.dumps(MAGIC_NUMBER, protocol=2)  # how torch.save's legacy layout begins


class UnsafeCheckpointError(pickle.UnpicklingError, UserError):
  """The checkpoint references a global outside the allowlist (it may run code on load)."""


class CheckpointFormatError(UserError):
  """The file is not a PyTorch checkpoint this reader understands, or is corrupt."""


class CheckpointNotFoundError(FileNotFoundError, UserError):
  """The checkpoint file does not exist (or is not a file)."""


class _Corrupt(Exception):
  """A parse failure inside the file; the caller words it (``not a checkpoint`` or ``truncated``)."""


def default_max_bytes(file_size: int) -> int:
  """The most bytes of arrays the reader allocates for a file of ``file_size`` bytes by default."""
  return max(MIN_MAX_BYTES, MAX_BYTES_PER_FILE_BYTE * int(file_size))


def _human(nbytes: int) -> str:
  for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if nbytes >= scale:
      return f"{nbytes / scale:.1f} {unit}"
  return f"{nbytes} bytes"


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


class _Budget:
  """The bytes of arrays the reader may still allocate for one file."""

  def __init__(self, limit: int):
    self.limit = int(limit)
    self.used = 0

  def take(self, nbytes: int, what: str) -> None:
    if self.used + nbytes > self.limit:
      raise CheckpointFormatError(
          f"{what} would take {_human(nbytes)} in memory, over the reader's limit of {_human(self.limit)} "
          f"for this file ({_human(self.used)} already read); pass a larger max_bytes if the file is genuine")
    self.used += nbytes


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


def _check_ints(values: Any, what: str) -> tuple[int, ...]:
  if not isinstance(values, (tuple, list)) or not all(isinstance(v, int) for v in values):
    raise CheckpointFormatError(f"tensor {what} {values!r} is not a tuple of integers")
  return tuple(int(v) for v in values)


class _PendingTensor:
  """A tensor whose storage bytes may not be available yet (legacy layout)."""

  def __init__(self, storage: Any, offset: int, size: tuple, stride: tuple, dtype: np.dtype | None = None):
    if not isinstance(offset, int):
      raise CheckpointFormatError(f"tensor storage offset {offset!r} is not an integer")
    self.storage = storage
    self.offset = int(offset)
    self.size = _check_ints(size, "size")
    self.stride = _check_ints(stride, "stride")
    self.dtype = dtype

  def materialise(self, key: str, budget: _Budget) -> np.ndarray:
    storage, base_offset, view_numel = self.storage, 0, None
    if isinstance(storage, _StorageView):
      base_offset, view_numel = storage.offset, storage.numel
      storage = storage.base
    if not isinstance(storage, _StorageRef) or storage.data is None:
      raise CheckpointFormatError(
          f"tensor {key!r} refers to storage {getattr(storage, 'key', storage)!r} whose data is missing")
    data = storage.data
    if base_offset or view_numel is not None:
      end = data.shape[0] if view_numel is None else base_offset + view_numel
      if end > data.shape[0]:
        raise CheckpointFormatError(f"tensor {key!r}: a view of storage {storage.key!r} ends at element {end} "
                                    f"but the storage holds {data.shape[0]}")
      data = data[base_offset:end]
    if self.dtype is not None and self.dtype != data.dtype:
      # _rebuild_tensor_v3: an untyped (byte) storage read as another dtype.
      if data.nbytes % self.dtype.itemsize:
        raise CheckpointFormatError(f"storage {storage.key!r} of {data.nbytes} bytes cannot hold {self.dtype} elements")
      data = data.view(self.dtype)
    return _strided_copy(data, self.offset, self.size, self.stride, storage.key, key, budget)


def _strided_copy(data: np.ndarray, offset: int, size: tuple, stride: tuple, storage_key: str, key: str,
                  budget: _Budget) -> np.ndarray:
  """Apply (offset, size, stride) to a 1-D storage, refusing any access outside it or over the budget."""
  where = f"tensor {key!r} (storage {storage_key!r})"
  if len(size) != len(stride):
    raise CheckpointFormatError(f"{where}: size {size} and stride {stride} differ in rank")
  if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
    raise CheckpointFormatError(f"{where}: negative offset, size or stride")
  numel = 1
  for n in size:
    numel *= n
  if numel > MAX_ELEMENTS or any(n > MAX_ELEMENTS for n in size):
    raise CheckpointFormatError(f"{where} has shape {size}, over the limit of {MAX_ELEMENTS} elements")
  if numel == 0:
    return np.zeros(size, data.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.shape[0]:
    raise CheckpointFormatError(f"{where} reads element {last} but the storage holds {data.shape[0]} elements")
  budget.take(numel * data.itemsize, f"tensor {key!r} of shape {size} (strides {stride} over a storage of "
              f"{data.shape[0]} elements)")
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
        f"refusing to load global {module[:80]}.{name[:80]}: only tensors, OrderedDict and plain containers "
        "are allowed (the file may try to run code when loaded)")

  def persistent_load(self, pid: Any) -> Any:
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
      raise UnsafeCheckpointError(f"refusing persistent id {str(pid)[:80]!r}: only storages are allowed")
    return self._storage_loader(pid)


# What the unpickler raises on bytes that are not a well-formed pickle of allowed objects: the
# allowed callables run on arguments the file chose, so a TypeError is bad input here too.
_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                  OverflowError, struct.error)
# What zipfile raises on an archive whose records or directory are damaged.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError, struct.error, OSError)
_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")


def _scan_pickle(f: BinaryIO) -> None:
  """Walk one pickle's opcodes without building anything, then rewind.

  Counted lengths (bytes, strings, longs) must fit the bytes that follow and
  memo indices must not exceed the pickle's length: otherwise the unpickler
  would allocate what the file declares before finding out it is not there.
  """
  start = f.tell()
  try:
    for opcode, arg, pos in pickletools.genops(f):
      if opcode.name in _MEMO_PUTS and arg > pos - start:
        raise _Corrupt(f"memo index {arg} at byte {pos} is larger than the pickle so far")
  except (ValueError, OverflowError, struct.error) as e:
    raise _Corrupt(_short(e)) from e
  f.seek(start)


def _short(error: BaseException) -> str:
  text = " ".join(str(error).split()) or type(error).__name__
  return text if len(text) <= 160 else text[:157] + "..."


def _unpickle(f: BinaryIO, storage_loader) -> Any:
  """One pickle from ``f`` through the allowlist; a malformed one raises ``_Corrupt``."""
  _scan_pickle(f)
  try:
    return _RestrictedUnpickler(f, storage_loader).load()
  except (UnsafeCheckpointError, CheckpointFormatError, _Corrupt):
    raise
  except _PICKLE_ERRORS as e:
    raise _Corrupt(_short(e)) from e


def _parse_storage_pid(pid: tuple) -> tuple[_StorageType, str, int, Any]:
  if len(pid) not in (5, 6):
    raise CheckpointFormatError(f"storage record has {len(pid)} fields, expected 5 or 6")
  storage_type, key, _location, numel = pid[1:5]
  view = pid[5] if len(pid) == 6 else None
  if not isinstance(storage_type, _StorageType):
    raise CheckpointFormatError(f"storage record names {str(storage_type)[:80]!r}, not a storage type")
  key = str(key)[:200]
  if not isinstance(numel, int) or not 0 <= numel <= MAX_ELEMENTS:
    raise CheckpointFormatError(f"storage {key!r} declares {str(numel)[:40]} elements; "
                                f"expected 0 to {MAX_ELEMENTS}")
  return storage_type, key, int(numel), view


def _key_path(parent: str, part: Any) -> str:
  if isinstance(part, int):
    return f"{parent}[{part}]"
  part = str(part)[:200]
  return f"{parent}.{part}" if parent else part


def _materialise(obj: Any, budget: _Budget) -> Any:
  """Replace every pending tensor in nested containers by its NumPy array."""
  try:
    return _materialise_at(obj, "", budget, {})
  except RecursionError:
    raise CheckpointFormatError("containers nested too deeply for a state dict") from None


def _materialise_at(obj: Any, path: str, budget: _Budget, seen: dict[int, Any]) -> Any:
  if isinstance(obj, _PendingTensor):
    return obj.materialise(path or "<top level>", budget)
  if id(obj) in seen:
    return seen[id(obj)]
  if isinstance(obj, dict):
    seen[id(obj)] = obj
    for k in list(obj.keys()):
      obj[k] = _materialise_at(obj[k], _key_path(path, k), budget, seen)
    return obj
  if isinstance(obj, list):
    seen[id(obj)] = obj
    for i, v in enumerate(obj):
      obj[i] = _materialise_at(v, _key_path(path, i), budget, seen)
    return obj
  if isinstance(obj, tuple):
    out = tuple(_materialise_at(v, _key_path(path, i), budget, seen) for i, v in enumerate(obj))
    seen[id(obj)] = out
    return out
  if isinstance(obj, (_StorageRef, _StorageView)):
    raise CheckpointFormatError("bare storages (not wrapped in a tensor) are not supported")
  return obj


def _read_record(zf: zipfile.ZipFile, info: zipfile.ZipInfo, nbytes: int) -> bytes:
  """``nbytes`` bytes of an archive record (already checked to hold that many)."""
  try:
    with zf.open(info) as rec:
      raw = rec.read(nbytes)
  except _ZIP_ERRORS as e:
    raise _Corrupt(f"record {info.filename[:200]!r}: {_short(e)}") from e
  if len(raw) != nbytes:
    raise _Corrupt(f"record {info.filename[:200]!r} ends after {len(raw)} of {nbytes} bytes")
  return raw


def _record_bytes(info: zipfile.ZipInfo, archive_size: int) -> int:
  """The bytes a record can really hold: a stored record no more than the archive itself."""
  if info.compress_type == zipfile.ZIP_STORED:
    return min(info.file_size, info.compress_size, archive_size)
  return info.file_size


def _load_zip(zf: zipfile.ZipFile, budget: _Budget, archive_size: int) -> Any:
  infos = {info.filename: info for info in zf.infolist()}
  pkl = [n for n in infos if n == "data.pkl" or n.endswith("/data.pkl")]
  if len(pkl) != 1:
    raise CheckpointFormatError(f"zip checkpoint must hold exactly one data.pkl, found {len(pkl)}")
  prefix = pkl[0][: -len("data.pkl")]
  byteorder = "little"
  if prefix + "byteorder" in infos:
    info = infos[prefix + "byteorder"]
    byteorder = _read_record(zf, info, min(16, _record_bytes(info, archive_size))).decode("ascii", "replace").strip()
    if byteorder not in ("little", "big"):
      raise CheckpointFormatError(f"unknown byteorder record {byteorder[:20]!r}")
  storages: dict[str, _StorageRef] = {}

  def load_storage(pid: tuple) -> _StorageRef:
    storage_type, key, numel, _ = _parse_storage_pid(pid)
    if key in storages:
      return storages[key]
    record = f"{prefix}data/{key}"
    info = infos.get(record)
    if info is None:
      raise CheckpointFormatError(f"storage record {record!r} is missing from the archive")
    dtype = storage_type.dtype
    nbytes = numel * dtype.itemsize
    held = _record_bytes(info, archive_size)
    if nbytes > held:
      raise CheckpointFormatError(f"storage {key!r} declares {numel} {dtype} elements ({_human(nbytes)}) but its "
                                  f"archive record holds {held} bytes")
    budget.take(nbytes, f"storage {key!r}")
    ref = _StorageRef(key, dtype, numel)
    ref.data = _as_native(_read_record(zf, info, nbytes), dtype, byteorder)
    storages[key] = ref
    return ref

  info = infos[pkl[0]]
  size = _record_bytes(info, archive_size)
  budget.take(size, "data.pkl")
  try:
    obj = _unpickle(io.BytesIO(_read_record(zf, info, size)), load_storage)
  except _Corrupt as e:
    raise CheckpointFormatError(f"truncated or corrupt (data.pkl: {e})") from e.__cause__
  return _materialise(obj, budget)


def _as_native(raw: bytes | memoryview, dtype: np.dtype, byteorder: str) -> np.ndarray:
  order = "<" if byteorder == "little" else ">"
  stored = dtype.newbyteorder(order) if dtype.itemsize > 1 and dtype.kind in "iufc" else dtype
  arr = np.frombuffer(raw, dtype=stored)
  return arr.astype(dtype, copy=False) if stored != dtype else arr


def _load_legacy(f: BinaryIO, budget: _Budget, size: int) -> Any:
  def no_storage(pid):
    raise UnsafeCheckpointError("header pickles of a checkpoint must not reference storages")

  start = f.tell()
  head = f.read(len(_LEGACY_HEAD))
  f.seek(start)
  try:
    magic = _unpickle(f, no_storage)
  except _Corrupt as e:
    if _LEGACY_HEAD.startswith(head):  # the file ends inside torch's magic number
      raise CheckpointFormatError(f"truncated or corrupt ({e})") from None
    raise CheckpointFormatError(f"not a PyTorch checkpoint (neither a zip archive nor a pickle: {e})") from None
  if magic != MAGIC_NUMBER:
    raise CheckpointFormatError("not a PyTorch checkpoint: bad magic number (a plain pickle or a corrupt file)")
  try:
    return _load_legacy_body(f, budget, size, no_storage)
  except _Corrupt as e:
    raise CheckpointFormatError(f"truncated or corrupt ({e})") from e.__cause__


def _load_legacy_body(f: BinaryIO, budget: _Budget, size: int, no_storage) -> Any:
  protocol = _unpickle(f, no_storage)
  if protocol != PROTOCOL_VERSION:
    raise CheckpointFormatError(f"unsupported legacy protocol version {str(protocol)[:40]}")
  sys_info = _unpickle(f, no_storage)
  byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"

  storages: dict[str, _StorageRef] = {}

  def load_storage(pid: tuple) -> Any:
    storage_type, key, numel, view = _parse_storage_pid(pid)
    ref = storages.get(key)
    if ref is None:
      ref = storages[key] = _StorageRef(key, storage_type.dtype, numel)
    if view is not None:
      if not isinstance(view, tuple) or len(view) != 3 or not all(isinstance(v, int) for v in view[1:]):
        raise CheckpointFormatError(f"storage {key!r}: malformed view record {str(view)[:80]}")
      _, offset, view_numel = view
      if offset < 0 or view_numel < 0 or offset + view_numel > ref.numel:
        raise CheckpointFormatError(f"storage {key!r}: a view of {view_numel} elements from {offset} does not fit "
                                    f"its {ref.numel} elements")
      return _StorageView(ref, offset, view_numel)
    return ref

  obj = _unpickle(f, load_storage)
  keys = _unpickle(f, no_storage)
  if not isinstance(keys, list):
    raise CheckpointFormatError("legacy checkpoint: storage key list is missing")
  for key in keys:
    key = str(key)[:200]
    ref = storages.get(key)
    if ref is None:
      raise CheckpointFormatError(f"legacy checkpoint lists storage {key!r} that no tensor uses")
    header = f.read(8)
    if len(header) != 8:
      raise _Corrupt(f"the file ends before storage {key!r}")
    numel = struct.unpack("<q" if byteorder == "little" else ">q", header)[0]
    if not 0 <= numel <= MAX_ELEMENTS:
      raise _Corrupt(f"storage {key!r} declares {numel} elements")
    nbytes = numel * ref.dtype.itemsize
    left = size - f.tell()
    if nbytes > left:
      raise _Corrupt(f"storage {key!r} declares {numel} {ref.dtype} elements ({_human(nbytes)}) but only "
                     f"{left} bytes are left in the file")
    budget.take(nbytes, f"storage {key!r}")
    raw = f.read(nbytes)
    if len(raw) != nbytes:
      raise _Corrupt(f"storage {key!r} ends after {len(raw)} of {nbytes} bytes")
    ref.data = _as_native(raw, ref.dtype, byteorder)
  return _materialise(obj, budget)


def check_file(path: str | os.PathLike, flag: str | None = None) -> str:
  """``path`` as a string after checking that it is a readable, non-empty file (cheap: reads nothing).

  The errors are one line naming the file (as ``<flag>=<path>`` when ``flag`` is given).
  """
  name = os.fspath(path)
  shown = f"{flag}={name}" if flag else name
  if not os.path.exists(name):
    raise CheckpointNotFoundError(f"{shown} does not exist; give the path of a torch.save checkpoint (.pth)")
  if not os.path.isfile(name):
    raise CheckpointNotFoundError(f"{shown} is not a file; give the path of a torch.save checkpoint (.pth)")
  if not os.access(name, os.R_OK):
    raise UserError(f"{shown} is not readable; fix its permissions")
  if os.path.getsize(name) == 0:
    raise CheckpointFormatError(f"{shown} is empty, not a checkpoint")
  return name


def load(path: str | os.PathLike | BinaryIO, *, max_bytes: int | None = None) -> Any:
  """Load a checkpoint written by ``torch.save``; tensors become NumPy arrays.

  ``max_bytes`` caps the bytes of all arrays read (storages and tensors);
  ``None`` means ``default_max_bytes(file size)``.

  Raises :class:`UnsafeCheckpointError` (naming the global) when the file
  references anything beyond tensors and plain containers,
  :class:`CheckpointFormatError` when it is not a readable checkpoint (corrupt,
  truncated, or declaring more than it holds), and
  :class:`CheckpointNotFoundError` when it does not exist. All are
  ``camjax.errors.UserError`` with a one-line message naming the file.
  """
  if isinstance(path, (str, os.PathLike)):
    name = check_file(path)
    try:
      fh = open(name, "rb")
    except OSError as e:
      raise UserError(f"{name}: cannot read ({e.strerror})") from e
    with fh:
      size = os.fstat(fh.fileno()).st_size
      with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        stream = io.BytesIO(mm[:]) if size < (1 << 20) else _MmapReader(mm)
        return _load_named(stream, size, name, max_bytes)
  name = str(getattr(path, "name", "<stream>"))
  data = path.read()
  return _load_named(io.BytesIO(data), len(data), name, max_bytes)


def _load_named(f: BinaryIO, size: int, name: str, max_bytes: int | None) -> Any:
  budget = _Budget(default_max_bytes(size) if max_bytes is None else max_bytes)
  try:
    if size == 0:
      raise CheckpointFormatError("empty, not a checkpoint")
    return _load_stream(f, size, budget)
  except (CheckpointFormatError, UnsafeCheckpointError) as e:
    e.args = (f"{name}: {e.args[0] if e.args else type(e).__name__}",) + e.args[1:]
    raise


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
    self._pos = max(self._pos, end)
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


def _load_stream(f: BinaryIO, size: int, budget: _Budget) -> Any:
  start = f.tell()
  head = f.read(len(_ZIP_MAGIC))
  f.seek(start)
  if zipfile.is_zipfile(f):
    f.seek(start)
    try:
      zf = zipfile.ZipFile(f)
    except _ZIP_ERRORS as e:
      raise CheckpointFormatError(f"truncated or corrupt (zip archive: {_short(e)})") from e
    with zf:
      return _load_zip(zf, budget, size)
  if _ZIP_MAGIC.startswith(head):
    raise CheckpointFormatError("truncated or corrupt (a zip archive without its central directory)")
  f.seek(start)
  return _load_legacy(f, budget, size)


def load_state_dict(path: str | os.PathLike | BinaryIO, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
  """Load a ``{name: array}`` state dict, unwrapping ``{"state_dict": ...}`` / ``{"model": ...}``.

  A ``module.`` prefix (from ``DataParallel``) is stripped from every key.
  """
  obj = load(path, max_bytes=max_bytes)
  for wrapper in ("state_dict", "model", "model_state_dict"):
    if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
      obj = obj[wrapper]
      break
  if not isinstance(obj, dict):
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(getattr(path, "name", "<stream>"))
    raise CheckpointFormatError(
        f"{name}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
  out: dict[str, np.ndarray] = {}
  for key, value in obj.items():
    if not isinstance(value, np.ndarray):
      continue  # counters and metadata stored beside tensors
    key = str(key)
    out[key[len("module."):] if key.startswith("module.") else key] = value
  return out
