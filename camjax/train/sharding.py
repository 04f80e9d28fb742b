"""Device mesh, parameter and batch shardings, host-local <-> global arrays.

One program runs on 1 to N devices and hosts: the train step is a ``jax.jit``
over global arrays laid out on a ``Mesh`` with a ``data`` axis (the batch is
split over it) and a ``model`` axis (large kernels are split over their
output channels; everything else is replicated).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from camjax.errors import ConfigError

DATA = "data"
MODEL = "model"


def mesh_shape(data: int, model: int, num_devices: int, *, local_devices: int | None = None) -> tuple[int, int]:
  """Resolve ``data=-1`` (all devices left over) and check the mesh fits the devices.

  ``local_devices`` (the devices of one process) also checks that the model axis stays
  inside a process: each process reads its own batch rows, so processes must not share
  a data-parallel row.
  """
  if model < 1 or num_devices % model:
    raise ConfigError(f"mesh.model={model} does not divide the {num_devices} devices; "
                      f"set --config.mesh.model to a divisor of {num_devices}")
  if local_devices is not None and local_devices % model:
    raise ConfigError(f"mesh.model={model} spans processes (each has {local_devices} devices): every process "
                      f"reads its own batch rows; set --config.mesh.model to a divisor of {local_devices}")
  if data == -1:
    data = num_devices // model
  if data * model != num_devices:
    raise ConfigError(f"mesh.data * mesh.model = {data} * {model} != {num_devices} devices; "
                      "set --config.mesh.data=-1 to use all devices")
  return data, model


def make_mesh(data: int = -1, model: int = 1, devices: list | None = None) -> Mesh:
  """A ('data', 'model') mesh over all devices (of all processes).

  ``jax.make_mesh`` picks a device order that suits the interconnect. Each host's
  local batch must be one contiguous block of the global batch, so every process's
  devices must fill whole, adjacent rows of 'data' (``rows_are_host_contiguous``);
  where the interconnect order breaks that, the mesh falls back to jax.devices()
  order, in which the devices of a process are adjacent.
  """
  devices = list(jax.devices() if devices is None else devices)
  data, model = mesh_shape(data, model, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * 2
  mesh = jax.make_mesh((data, model), (DATA, MODEL), axis_types=auto, devices=devices)
  if not rows_are_host_contiguous(np.vectorize(lambda d: d.process_index)(mesh.devices)):
    mesh = Mesh(np.asarray(devices, dtype=object).reshape(data, model), (DATA, MODEL), axis_types=auto)
  return mesh


def rows_are_host_contiguous(process_of: np.ndarray) -> bool:
  """True when, in a (data, model) grid of process indices, each process owns a run of adjacent whole rows."""
  rows = [set(np.unique(row).tolist()) for row in process_of]
  if any(len(r) != 1 for r in rows):
    return all(r == rows[0] for r in rows)  # the model axis spans processes: validate_config refuses it
  owners = [r.pop() for r in rows]
  seen: set[int] = set()
  for i, owner in enumerate(owners):
    if owner in seen and owners[i - 1] != owner:
      return False
    seen.add(owner)
  return True


def path_str(path: tuple) -> str:
  """'blocks/0/conv/kernel' from a jax key path (dict keys, sequence indices, attributes)."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def param_spec(path: str, shape: tuple[int, ...], model_size: int) -> P:
  """Shard a kernel's output-channel (last) dim over 'model' when it divides; replicate otherwise."""
  if model_size > 1 and len(shape) >= 2 and path.rsplit("/", 1)[-1] == "kernel" and shape[-1] % model_size == 0:
    return P(*([None] * (len(shape) - 1)), MODEL)
  return P()


def tree_shardings(mesh: Mesh, tree: Any) -> Any:
  """NamedShardings for a pytree of arrays (parameters, optimizer state, ...) by the ``param_spec`` rule.

  Optimizer states repeat the parameter tree under their own keys, so the rule,
  keyed on the leaf name and shape, gives moments the layout of their parameter.
  """
  model_size = mesh.shape[MODEL]

  def one(path, leaf):
    return NamedSharding(mesh, param_spec(path_str(path), tuple(np.shape(leaf)), model_size))

  return jax.tree_util.tree_map_with_path(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over 'data', replicated over 'model'."""
  return NamedSharding(mesh, P(DATA))


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assemble each host's local batch into global arrays sharded over 'data'.

  Process ``p`` holds rows ``[p * b, (p + 1) * b)`` of the global batch.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def put_global(mesh: Mesh, tree: Any, shardings: Any | None = None) -> Any:
  """Place host values (identical on every process) on the mesh, multi-host safe."""
  if shardings is None:
    shardings = tree_shardings(mesh, tree)

  def one(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(one, tree, shardings)


def to_host(tree: Any) -> Any:
  """Full numpy copies of (possibly multi-host sharded) global arrays, on every process."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(one, tree)


def any_process(flag: bool) -> bool:
  """True on every process when the flag is set on any of them (one tiny collective)."""
  if jax.process_count() == 1:
    return bool(flag)
  flags = multihost_utils.process_allgather(np.asarray([int(flag)], np.int32))
  return bool(np.asarray(flags).any())


def gather_json(value: Any) -> list[Any]:
  """Every process's JSON-serialisable value, in process order, on every process.

  Counts go this way rather than through ``process_allgather`` of their arrays: without
  ``jax_enable_x64`` that would cast int64 / float64 totals (pixel histograms reach 1e9 and
  more) to 32 bits.
  """
  if jax.process_count() == 1:
    return [value]
  data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int32))).reshape(-1)
  padded = np.zeros((int(sizes.max()),), np.uint8)
  padded[: data.size] = data
  everything = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
  return [json.loads(bytes(row[:n]).decode()) for row, n in zip(everything, sizes)]


def sync(name: str) -> None:
  """Barrier across processes (no-op for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def per_device_batch(global_batch_size: int, data_size: int, *, grad_accum_steps: int = 1,
                     field: str = "training.global_batch_size") -> int:
  """Rows per data-parallel device, after checking the batch (and its micro-batches) split evenly."""
  if global_batch_size < 1 or global_batch_size % data_size:
    raise ConfigError(f"{field}={global_batch_size} is not divisible by the {data_size} data-parallel devices; "
                      f"set it to a multiple of {data_size}")
  per_device = global_batch_size // data_size
  if grad_accum_steps < 1 or per_device % grad_accum_steps:
    raise ConfigError(f"training.grad_accum_steps={grad_accum_steps} does not divide the per-device batch "
                      f"{per_device}; change one of them")
  return per_device
