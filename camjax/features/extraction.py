"""Pooled deep features of a whole split, every example exactly once, to disk.

The batches come from ``camjax.data.pipeline.eval_batches`` (or anything with
the same keys): host-local, padded, with a ``valid`` mask and the example
``index``. Each batch is laid out on the device mesh like evaluation, the
backbone runs inside one ``jax.jit``, its feature map is globally pooled, and
only valid rows are kept. The result is sorted by index, so it does not depend
on the number of hosts or devices.

Only pooled features (N, K) are stored: the spatial maps of a split are too big
to keep. CAMs of a classifier fitted on these features come from re-running the
backbone (``camjax.features.linear.LinearHeadModel`` + ``camjax.cam``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from camjax.train import sharding
from camjax.errors import UserError
from camjax.models.base import POOLINGS, global_pool

log = logging.getLogger("camjax.features")


@dataclasses.dataclass
class FeatureSet:
  """Pooled features of one split, sorted by example index.

  features: (N, K) float32; labels: (N,) int64; indices: (N,) int64 example
  indices in the split; logits: (N, C) float32 of the model's own head, or None;
  ids: (N,) str image ids or None; meta: JSON-serialisable facts (split,
  pooling, backbone, ...).
  """

  features: np.ndarray
  labels: np.ndarray
  indices: np.ndarray
  logits: np.ndarray | None = None
  ids: np.ndarray | None = None
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n = self.features.shape[0]
    for name in ("labels", "indices", "logits", "ids"):
      value = getattr(self, name)
      if value is not None and value.shape[0] != n:
        raise ValueError(f"FeatureSet.{name} has {value.shape[0]} rows, features have {n}")

  def __len__(self) -> int:
    return int(self.features.shape[0])

  def subset(self, rows: np.ndarray) -> "FeatureSet":
    pick = lambda a: None if a is None else a[rows]
    return FeatureSet(self.features[rows], self.labels[rows], self.indices[rows], pick(self.logits),
                      pick(self.ids), dict(self.meta))

  def head_accuracy(self) -> float | None:
    """Top-1 accuracy of the backbone's own classifier, when its logits were kept."""
    if self.logits is None or len(self) == 0:
      return None
    return float(np.mean(np.argmax(self.logits, axis=1) == self.labels))

  def save(self, path: str) -> str:
    """Write an .npz (features, labels, indices, optional logits/ids, meta as JSON)."""
    arrays = {"features": self.features.astype(np.float32), "labels": self.labels.astype(np.int64),
              "indices": self.indices.astype(np.int64), "meta": np.asarray(json.dumps(self.meta))}
    if self.logits is not None:
      arrays["logits"] = self.logits.astype(np.float32)
    if self.ids is not None:
      arrays["ids"] = self.ids.astype(str)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path

  @classmethod
  def load(cls, path: str) -> "FeatureSet":
    with np.load(path, allow_pickle=False) as data:
      return cls(
          features=data["features"], labels=data["labels"], indices=data["indices"],
          logits=data["logits"] if "logits" in data else None,
          ids=data["ids"] if "ids" in data else None,
          meta=json.loads(str(data["meta"])) if "meta" in data else {})


def model_pooling(model: nnx.Module) -> str:
  """The pooling of the model's own head (``model.head.pooling`` or ``model.pooling``), else "gap"."""
  for owner in (getattr(model, "head", None), model):
    pooling = getattr(owner, "pooling", None)
    if isinstance(pooling, str) and pooling in POOLINGS:
      return pooling
  return "gap"


@functools.partial(jax.jit, static_argnames=("graphdef", "pooling"))
def _pool_step(graphdef, state, images, *, pooling: str):
  model = nnx.merge(graphdef, state)
  model.eval()
  logits, features = model(images)
  return global_pool(features.astype(jnp.float32), pooling), logits.astype(jnp.float32)


def replicate_model(model: nnx.Module, mesh: jax.sharding.Mesh) -> nnx.Module:
  """Put the arrays of ``model`` on ``mesh`` (in place; returns the model).

  Arrays already laid out on ``mesh`` (a restored, possibly model-parallel
  checkpoint) stay as they are; everything else is replicated.
  """
  replicated = sharding.replicated(mesh)

  def place(x):
    if not isinstance(x, (jax.Array, np.ndarray)):
      return x
    if isinstance(x, jax.Array) and isinstance(x.sharding, jax.sharding.NamedSharding) and x.sharding.mesh == mesh:
      return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # keys have no host (numpy) form
      return jax.device_put(x, replicated)
    return sharding.put_global(mesh, x, replicated)

  state = nnx.state(model)
  nnx.update(model, jax.tree.map(place, state))
  return model


def default_mesh() -> jax.sharding.Mesh:
  return sharding.make_mesh(data=-1, model=1)


def gather_rows(array: np.ndarray) -> np.ndarray:
  """Host-local rows of every process concatenated in process order (identity on one process)."""
  array = np.asarray(array)
  if jax.process_count() == 1:
    return array
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def device_batches(batches: Iterable[Mapping[str, np.ndarray]], mesh: jax.sharding.Mesh,
                   device_keys: tuple[str, ...] = ("image",), host_keys: tuple[str, ...] | None = None
                   ) -> Iterator[tuple[dict[str, jax.Array], dict[str, np.ndarray]]]:
  """Yield (global device arrays of ``device_keys``, host arrays of ``host_keys`` (default all) from all processes)."""
  data_size = mesh.shape[sharding.DATA]
  for batch in batches:
    if "valid" not in batch or "index" not in batch:
      raise ValueError(f"a feature batch needs 'valid' and 'index' keys, got {sorted(batch)}; "
                       "use camjax.data.pipeline.eval_batches")
    rows = np.asarray(batch["image"]).shape[0] * jax.process_count()
    if rows % data_size:
      raise UserError(f"the global batch of {rows} rows does not split over the {data_size} data-parallel devices; "
                      f"set the batch size (features.batch_size) to a multiple of {data_size}")
    on_device = sharding.global_batch(mesh, {k: np.asarray(batch[k]) for k in device_keys})
    host = {k: gather_rows(v) for k, v in batch.items()
            if k not in device_keys and np.ndim(v) >= 1 and (host_keys is None or k in host_keys)}
    yield on_device, host


def extract_features(
    model: nnx.Module,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    pooling: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
    keep_logits: bool = True,
    meta: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> FeatureSet:
  """Globally pooled features of every valid example of ``batches``, sorted by index.

  Args:
    model: any camjax model (``logits, features = model(images)``), run in eval mode.
    batches: host-local padded batches with "image", "label", "valid", "index".
    pooling: "gap" or "gmp"; default the model's own pooling.
    mesh: device mesh (default: all devices on a 'data' axis).
    keep_logits: also keep the model's own logits (for the head's accuracy).
    progress: called with the number of valid rows after each batch.
  """
  pooling = pooling or model_pooling(model)
  if pooling not in POOLINGS:
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
  mesh = mesh or default_mesh()
  replicate_model(model, mesh)
  graphdef, state = nnx.split(model)
  feats, logits, labels, indices, ids = [], [], [], [], []
  for on_device, host in device_batches(batches, mesh, host_keys=("valid", "index", "label", "id")):
    pooled, out_logits = _pool_step(graphdef, state, on_device["image"], pooling=pooling)
    pooled, out_logits = sharding.to_host((pooled, out_logits))
    valid = np.asarray(host["valid"]).astype(bool)
    feats.append(pooled[valid])
    if keep_logits:
      logits.append(out_logits[valid])
    labels.append(np.asarray(host["label"])[valid])
    indices.append(np.asarray(host["index"])[valid])
    if "id" in host:
      ids.append(np.asarray(host["id"]).astype(str)[valid])
    if progress is not None:
      progress(int(valid.sum()))
  if not feats:
    raise UserError("no batches to extract features from; is the split empty? (check features.max_examples)")
  indices_all = np.concatenate(indices).astype(np.int64)
  order = np.argsort(indices_all, kind="stable")
  indices_all = indices_all[order]
  if indices_all.size and np.any(np.diff(indices_all) == 0):
    dup = indices_all[1:][np.diff(indices_all) == 0][:5]
    raise ValueError(f"example indices {dup.tolist()} were seen more than once; the batches must cover "
                     "each example exactly once (eval_batches with its 'valid' mask does)")
  info = {"pooling": pooling, "num_examples": int(indices_all.size), **(dict(meta) if meta else {})}
  return FeatureSet(
      features=np.concatenate(feats).astype(np.float32)[order],
      labels=np.concatenate(labels).astype(np.int64)[order],
      indices=indices_all,
      logits=np.concatenate(logits).astype(np.float32)[order] if keep_logits else None,
      ids=np.concatenate(ids)[order] if ids else None,
      meta=info)


def array_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, *,
                  extra: Mapping[str, np.ndarray] | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Padded batches with 'valid' and 'index' from in-memory arrays (single process).

  For folders of images, tests and small experiments; splits of a data set go
  through ``camjax.data.pipeline.eval_batches`` instead.
  """
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)
  n = images.shape[0]
  if labels.shape[0] != n:
    raise ValueError(f"{n} images but {labels.shape[0]} labels")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  extra = dict(extra or {})
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    pad = batch_size - (stop - start)
    def padded(a):
      a = np.asarray(a[start:stop])
      return np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a
    batch = {"image": padded(images), "label": padded(labels),
             "valid": np.arange(batch_size) < stop - start,
             "index": np.concatenate([np.arange(start, stop), np.full(pad, -1)]).astype(np.int64)}
    for key, value in extra.items():
      batch[key] = padded(value)
    yield batch
