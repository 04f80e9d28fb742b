"""What every method of ``camjax.methods`` shares.

* Layers are tapped by name ("blocks/3", "head_act"): the submodule is wrapped,
  inside the trace, by a ``Tap`` that records its output, can add a zero
  ``delta`` to it (the gradient w.r.t. ``delta`` is the gradient w.r.t. the
  output) or replace it (the rest of the network then runs on the given map and
  XLA drops the unused part before it).
* One ``jax.jit``ed driver, ``run``, with the graph definition, the method, its
  layers and options static: each method compiles once per shape and option set.
* Targets: ``None`` (top-1), (B,) or (B, K) class ids, always (B, K) inside.
* Smoothing shared by all methods: test-time flips (``aug_smooth``) and the first
  principal component of weighted activations (``eigen_smooth``).
"""

from __future__ import annotations

import difflib
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from camjax.cam import upsample_maps
from camjax.errors import UserError

HIGHEST = jax.lax.Precision.HIGHEST
# pytorch-grad-cam's test-time augmentation: horizontal flip x input multiplied by 0.9, 1, 1.1.
AUG_FLIPS = (False, True)
AUG_FACTORS = (0.9, 1.0, 1.1)


class Tap(nnx.Module):
  """Wraps a layer: optionally replaces its output, adds ``delta`` to it, and remembers the result."""

  def __init__(self, inner: nnx.Module):
    self.inner = inner
    self.delta = nnx.data(None)
    self.replace = nnx.data(None)
    self.output = nnx.data(None)

  def __call__(self, *args, **kwargs):
    out = self.inner(*args, **kwargs) if self.replace is None else self.replace
    if self.delta is not None:
      out = out + self.delta
    self.output = out
    return out


def split_layer(layer: str) -> tuple[str, ...]:
  """"a/b/0" or "a.b.0" -> ("a", "b", "0")."""
  if not isinstance(layer, str):
    raise UserError(f"a layer name must be a string such as 'blocks/3', got {layer!r}")
  return tuple(p for p in layer.replace(".", "/").split("/") if p)


def canonical(layer: str) -> str:
  return "/".join(split_layer(layer))


def _child(parent: Any, part: str) -> tuple[Any, bool]:
  while isinstance(parent, Tap):
    parent = parent.inner
  indexable = isinstance(parent, (list, tuple, nnx.List)) and part.isdigit()
  child = parent[int(part)] if indexable else getattr(parent, part)
  return child, indexable


def _resolve(model: nnx.Module, layer: str) -> tuple[Any, str, bool, Any]:
  """(parent, last part, indexable, module) of ``layer``; AttributeError/IndexError when missing."""
  parts = split_layer(layer)
  if not parts:
    raise AttributeError(layer)
  parent = model
  for part in parts[:-1]:
    parent, _ = _child(parent, part)
  child, indexable = _child(parent, parts[-1])
  while isinstance(parent, Tap):
    parent = parent.inner
  return parent, parts[-1], indexable, child


def tap_layer(model: nnx.Module, layer: str) -> Tap:
  """Replace the submodule at ``layer`` by a ``Tap`` around it and return the tap."""
  parent, part, indexable, child = _resolve(model, layer)
  tap = Tap(child)
  if indexable:
    parent[int(part)] = tap
  else:
    setattr(parent, part, tap)
  return tap


def _module_paths(model: nnx.Module) -> list[str]:
  """Every callable submodule of ``model`` (not the model itself), children before parents."""
  return ["/".join(str(p) for p in path) for path, module in nnx.iter_modules(model)
          if path and callable(module) and not isinstance(module, nnx.List)]


def layer_names(model: nnx.Module, image_size: int | None = None, channels: int = 3) -> list[str]:
  """The layers whose output is a (B, h, w, C) map in a forward pass: what ``layer=`` accepts.

  Found by tracing one abstract forward pass (``jax.eval_shape``, nothing is
  computed) of an image of ``image_size`` px (default: the model's
  ``resolution``, else 224) with every submodule tapped.
  """
  size = image_size or getattr(model, "resolution", None) or 224
  paths = _module_paths(model)
  graphdef, state = nnx.split(model)

  def outputs(images):
    net = nnx.merge(graphdef, state)
    net.eval()
    taps = {path: tap_layer(net, path) for path in paths}
    net(images)
    return {p: t.output for p, t in taps.items() if isinstance(t.output, jax.Array)}

  shapes = jax.eval_shape(outputs, jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32))
  return [p for p in paths if p in shapes and len(shapes[p].shape) == 4]


def _summary(names: Sequence[str], limit: int = 30) -> str:
  """Names with one numeric part collapsed ("blocks/{0..15}/bn1"), at most ``limit`` groups: one readable line."""
  groups: dict[str, list[int]] = {}
  for name in names:
    parts = name.split("/")
    i = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    if i is None:
      groups.setdefault(name, [])
    else:
      groups.setdefault("/".join(parts[:i] + ["{}"] + parts[i + 1:]), []).append(int(parts[i]))
  out = []
  for pattern, ids in groups.items():
    if not ids:
      out.append(pattern)
      continue
    ids = sorted(set(ids))
    contiguous = len(ids) > 2 and ids == list(range(ids[0], ids[-1] + 1))
    out.append(pattern.format("{" + (f"{ids[0]}..{ids[-1]}" if contiguous else ",".join(map(str, ids))) + "}"))
  more = f" ... ({len(out) - limit} more)" if len(out) > limit else ""
  return ", ".join(out[:limit]) + more


def check_layers(model: nnx.Module, layers: str | Sequence[str]) -> tuple[str, ...]:
  """Canonical names of ``layers``; a missing or non-callable one raises ``UserError`` listing the valid ones."""
  names = (layers,) if isinstance(layers, str) else tuple(layers)
  if not names:
    raise UserError("layer must name at least one layer, e.g. 'blocks/3'")
  out = []
  for layer in names:
    name = canonical(layer)
    try:
      ok = bool(name) and callable(_resolve(model, name)[3])
    except (AttributeError, IndexError, TypeError):
      ok = False
    if not ok:
      try:
        valid = layer_names(model)
      except Exception:  # noqa: BLE001 - the listing is a courtesy; the error must still be the user's
        valid = _module_paths(model)
      close = difflib.get_close_matches(name, valid, n=3)
      hint = f" (did you mean {', '.join(close)}?)" if close else ""
      raise UserError(f"{type(model).__name__} has no layer {layer!r}{hint}; valid layers: {_summary(valid)}; "
                      "camjax.methods.layer_names(model) lists them all")
    out.append(name)
  return tuple(out)


def split_model(model: nnx.Module) -> tuple[Any, Any]:
  """(structure, arrays) of ``model`` for ``run`` and ``Net``: its pytree treedef and leaves when it is a pytree
  of arrays, else ``nnx.split``.

  Called on every method call, outside jit: flattening the pytree is one C++ pass (under a millisecond
  for EfficientNet-Lite0), ``nnx.split`` walks the module graph in Python (~7 ms, a tenth of a batch-8
  Grad-CAM on CPU). Both rebuild the same module inside the trace.
  """
  try:
    leaves, treedef = jax.tree_util.tree_flatten(model)
  except Exception:  # noqa: BLE001 - not flattenable as a pytree (e.g. shared references): the graph way
    return nnx.split(model)
  if leaves and all(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves):
    return treedef, leaves
  return nnx.split(model)


def merge_model(graphdef: Any, state: Any) -> nnx.Module:
  """The module ``split_model`` (or ``nnx.split``) took apart."""
  if isinstance(graphdef, jax.tree_util.PyTreeDef):
    return jax.tree_util.tree_unflatten(graphdef, state)
  return nnx.merge(graphdef, state)


class Net:
  """The model rebuilt inside a trace from (graphdef, state), in eval mode, with taps at ``layers``.

  (graphdef, state) from ``split_model`` or ``nnx.split``.
  ``net(images, deltas=..., replace=...) -> (float32 logits (B, N), layer outputs)``.
  """

  def __init__(self, graphdef: Any, state: Any, layers: tuple[str, ...]):
    self.graphdef, self.state, self.layers = graphdef, state, layers

  def __call__(self, images: jax.Array, deltas: Sequence[jax.Array] | None = None,
               replace: Sequence[jax.Array | None] | None = None) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    model = merge_model(self.graphdef, self.state)
    model.eval()
    taps = [tap_layer(model, layer) for layer in self.layers]
    for i, tap in enumerate(taps):
      if deltas is not None:
        tap.delta = deltas[i]
      if replace is not None:
        tap.replace = replace[i]
    logits, _ = model(images)
    outputs = tuple(tap.output for tap in taps)
    for layer, out in zip(self.layers, outputs):
      if out is None:
        raise UserError(f"layer {layer!r} is not called in the forward pass")
      if not isinstance(out, jax.Array) or out.ndim != 4:
        shape = getattr(out, "shape", type(out).__name__)
        raise UserError(f"layer {layer!r} outputs {shape}, not a (B, h, w, C) map; "
                        "camjax.methods.layer_names(model) lists the layers that do")
    return logits.astype(jnp.float32), outputs

  def activation_shapes(self, images: jax.Array) -> tuple[jax.ShapeDtypeStruct, ...]:
    return jax.eval_shape(lambda x: self(x)[1], images)


def resolve_ids(class_ids: jax.Array | None, logits: jax.Array) -> jax.Array:
  """(B, K) targets: the given ones, or the top-1 class as (B, 1)."""
  if class_ids is None:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)[:, None]
  return class_ids


def take_scores(logits: jax.Array, ids: jax.Array) -> jax.Array:
  """logits (B, N), ids (B, K) -> (B, K)."""
  return jnp.take_along_axis(logits, ids, axis=1)


def layer_gradients(net: Net, images: jax.Array, class_ids: jax.Array | None):
  """One forward, K backward passes (vmapped) -> logits, ids (B, K), activations, gradients.

  Activations are per layer (B, h, w, C), gradients per layer (B, K, h, w, C),
  both float32: ``d logit[b, ids[b, k]] / d A[b]``.
  """
  shapes = net.activation_shapes(images)
  deltas = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)
  logits, vjp_fn, acts = jax.vjp(lambda d: net(images, deltas=d), deltas, has_aux=True)
  ids = resolve_ids(class_ids, logits)
  cotangents = jax.nn.one_hot(ids, logits.shape[-1], dtype=logits.dtype)  # (B, K, N)
  (grads,) = jax.vmap(vjp_fn, in_axes=1)(cotangents)  # per layer (K, B, h, w, C)
  grads = tuple(jnp.moveaxis(g, 0, 1).astype(jnp.float32) for g in grads)
  return logits, ids, tuple(a.astype(jnp.float32) for a in acts), grads


def first_component(x: jax.Array, *, center: bool = True) -> jax.Array:
  """(..., h, w, C) -> (..., h, w): projection on the first principal component of the C-vectors.

  Centred over positions as pytorch-grad-cam does (``center``). An SVD fixes a
  component only up to sign; the sign here makes the projection correlate
  positively with the channel sum of ``x`` (the uncentred evidence), so the
  regions with the most (weighted) activation come out positive.
  """
  h, w, c = x.shape[-3:]
  flat = x.reshape(x.shape[:-3] + (h * w, c))
  centred = flat - flat.mean(axis=-2, keepdims=True) if center else flat
  _, _, vt = jnp.linalg.svd(centred, full_matrices=False)
  projection = jnp.einsum("...pc,...c->...p", centred, vt[..., 0, :], precision=HIGHEST)
  evidence = flat.sum(axis=-1)
  evidence = evidence - evidence.mean(axis=-1, keepdims=True)
  sign = jnp.where(jnp.sum(projection * evidence, axis=-1, keepdims=True) < 0, -1.0, 1.0)
  return (projection * sign).reshape(x.shape[:-3] + (h, w))


def combine_channels(weights: jax.Array, acts: jax.Array, eigen_smooth: bool) -> jax.Array:
  """``sum_c weights[b, k, c] * acts[b, :, :, c]`` -> (B, K, h, w), or its first component."""
  if eigen_smooth:
    return first_component(weights[:, :, None, None, :] * acts[:, None])
  return jnp.einsum("bhwc,bkc->bkhw", acts, weights, precision=HIGHEST)


def combine_elementwise(weighted: jax.Array, eigen_smooth: bool) -> jax.Array:
  """(B, K, h, w, C) weighted activations -> (B, K, h, w): channel sum, or first component."""
  return first_component(weighted) if eigen_smooth else weighted.sum(axis=-1)


def normalize_maps(maps: jax.Array, eps: float = 1e-7) -> jax.Array:
  """Min-max scale every map (last two axes) to [0, 1]: ``(m - min) / (max - min + eps)``.

  Both reference libraries scale this way before showing a map (pytorch-grad-cam
  with eps 1e-7, torch-cam with 1e-8); camjax methods return unscaled maps.
  """
  lo = maps.min(axis=(-2, -1), keepdims=True)
  shifted = maps - lo
  return shifted / (shifted.max(axis=(-2, -1), keepdims=True) + eps)


def resize_matrix(out_size: int, in_size: int, align_corners: bool) -> np.ndarray:
  """(out, in) bilinear interpolation weights, as PyTorch's ``interpolate(mode="bilinear")``."""
  i = np.arange(out_size, dtype=np.float64)
  if align_corners:
    x = i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros_like(i)
  else:
    x = np.clip((i + 0.5) * (in_size / out_size) - 0.5, 0, in_size - 1)
  lo = np.clip(np.floor(x).astype(int), 0, in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = x - lo
  m = np.zeros((out_size, in_size))
  np.add.at(m, (np.arange(out_size), lo), 1 - frac)
  np.add.at(m, (np.arange(out_size), hi), frac)
  return m.astype(np.float32)


def resize(maps: jax.Array, size: tuple[int, int], align_corners: bool = False) -> jax.Array:
  """Bilinear resize of (..., h, w) to (..., H, W) with PyTorch's corner convention."""
  rh = jnp.asarray(resize_matrix(size[0], maps.shape[-2], align_corners))
  rw = jnp.asarray(resize_matrix(size[1], maps.shape[-1], align_corners))
  return jnp.einsum("Hh,...hw,Ww->...HW", rh, maps, rw, precision=HIGHEST)


def chunked(fn: Callable[[jax.Array], jax.Array], total: int, chunk_size: int) -> jax.Array:
  """``fn`` over indices 0..total-1 in chunks of ``chunk_size`` (``lax.map``): memory bounded by one chunk.

  ``fn(indices (chunk,)) -> (chunk, ...)``; the last chunk is padded with index 0
  and the padding dropped.
  """
  chunk = max(1, min(int(chunk_size), total))
  n = math.ceil(total / chunk)
  idx = jnp.arange(n * chunk, dtype=jnp.int32)
  idx = jnp.where(idx < total, idx, 0).reshape(n, chunk)
  out = jax.lax.map(fn, idx)
  return out.reshape((n * chunk,) + out.shape[2:])[:total]


Method = Callable[..., tuple[jax.Array, jax.Array]]
METHODS: dict[str, Method] = {}


def register(name: str) -> Callable[[Method], Method]:
  def add(fn: Method) -> Method:
    METHODS[name] = fn
    return fn

  return add


def _augmented(images: jax.Array) -> jax.Array:
  """(A * B, H, W, C): every flip x factor of ``AUG_FLIPS`` x ``AUG_FACTORS``, flip-major."""
  views = [(images[:, :, ::-1] if flip else images) * factor for flip in AUG_FLIPS for factor in AUG_FACTORS]
  return jnp.concatenate(views, axis=0)


@functools.partial(jax.jit, static_argnames=("graphdef", "method", "layers", "options", "upsample", "aug_smooth"))
def run(graphdef, state, images, class_ids, key, extra, *, method: str, layers: tuple[str, ...],
        options: tuple[tuple[str, Any], ...], upsample: bool, aug_smooth: bool):
  """The jitted core of every method: maps (B, K, h, w) (or (B, K, H, W) with ``upsample``) and logits."""
  fn = METHODS[method]
  net = Net(graphdef, state, layers)
  opts = dict(options)
  size = images.shape[1:3]
  if not aug_smooth:
    maps, logits = fn(net, images, class_ids, key, extra, **opts)
    if upsample and maps.shape[-2:] != size:
      maps = upsample_maps(maps, size)
    return maps, logits
  # Test-time augmentation (pytorch-grad-cam's aug_smooth): the targets are those of the original
  # images, every view's map is min-max scaled at the output resolution, flipped back, and averaged.
  logits = net(images)[0]
  ids = resolve_ids(class_ids, logits)
  views = len(AUG_FLIPS) * len(AUG_FACTORS)
  maps, _ = fn(net, _augmented(images), jnp.tile(ids, (views, 1)), key, extra, **opts)
  if upsample and maps.shape[-2:] != size:
    maps = upsample_maps(maps, size)
  maps = normalize_maps(maps).reshape((len(AUG_FLIPS), len(AUG_FACTORS)) + ids.shape + maps.shape[-2:])
  unflipped = [maps[i, :, :, :, :, ::-1] if flip else maps[i] for i, flip in enumerate(AUG_FLIPS)]
  return jnp.mean(jnp.stack(unflipped).reshape((views,) + maps.shape[2:]), axis=0), logits


def choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
  """``value`` if it is one of ``allowed``, else a ``UserError`` naming them."""
  if value not in allowed:
    raise UserError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
  return value


def positive(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise UserError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


def check_images(images: Any) -> jax.Array:
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise UserError(f"images must be (B, H, W, C), got shape {images.shape}")
  return images


def check_ids(images: jax.Array, class_ids: Any) -> jax.Array | None:
  """None, or int32 (B, K) from (B,) or (B, K)."""
  if class_ids is None:
    return None
  ids = jnp.asarray(class_ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise UserError(f"class_ids must be integers, got dtype {ids.dtype}")
  ids = ids.astype(jnp.int32)
  if ids.ndim not in (1, 2) or ids.shape[0] != images.shape[0] or (ids.ndim == 2 and ids.shape[1] < 1):
    raise UserError(f"class_ids must be None, (B,) or (B, K) with B={images.shape[0]}, got shape {ids.shape}")
  return ids[:, None] if ids.ndim == 1 else ids


def _static(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_static(v) for v in value)
  if isinstance(value, (np.floating, np.integer, np.bool_)):
    return value.item()
  return value


def call(method: str, model: nnx.Module, images: Any, class_ids: Any, *, layers: Sequence[str] = (),
         upsample: bool, aug_smooth: bool = False, key: jax.Array | None = None,
         extra: Any = None, **options) -> tuple[jax.Array, jax.Array]:
  """Check the inputs outside jit (clear errors, no wasted compile) and run ``method``'s jitted core."""
  images = check_images(images)
  ids = check_ids(images, class_ids)
  names = check_layers(model, layers) if layers else ()
  graphdef, state = split_model(model)
  if key is None:
    key = jax.random.key(0)
  return run(graphdef, state, images, ids, key, extra, method=method, layers=names,
             options=tuple(sorted((k, _static(v)) for k, v in options.items())),
             upsample=bool(upsample), aug_smooth=bool(aug_smooth))
