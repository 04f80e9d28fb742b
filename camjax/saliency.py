"""Gradient-based localization baselines: backprop saliency and Grad-CAM.

These need a backward pass, unlike CAM; they serve as the comparison methods
of the paper (Simonyan et al. 2014) and as the way to localize with networks
whose head is not global pooling -> linear (the fully connected baselines).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from camjax.cam import upsample_maps


def _top1_or_given(logits: jax.Array, class_ids: jax.Array | None) -> jax.Array:
  if class_ids is None:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jnp.asarray(class_ids, jnp.int32)


def _check_ids(images: jax.Array, class_ids: Any) -> jax.Array | None:
  if images.ndim != 4:
    raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
  if class_ids is None:
    return None
  ids = jnp.asarray(class_ids, jnp.int32)
  if ids.shape != (images.shape[0],):
    raise ValueError(f"class_ids must have shape ({images.shape[0]},), got {ids.shape}")
  return ids


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _backprop_saliency(graphdef, state, images, class_ids):
  def selected_scores(x):
    model = nnx.merge(graphdef, state)
    model.eval()
    logits, _ = model(x)
    ids = _top1_or_given(logits, class_ids)
    return jnp.take_along_axis(logits, ids[:, None], axis=1).sum(), ids

  grads, ids = jax.grad(selected_scores, has_aux=True)(images)
  return jnp.max(jnp.abs(grads), axis=-1), ids


def backprop_saliency(model: nnx.Module, images: jax.Array, class_ids: Any = None) -> tuple[jax.Array, jax.Array]:
  """``max_channels |d score_c / d image|`` per pixel -> ((B, H, W), class ids (B,)).

  ``class_ids`` (B,) picks the class per image; default: the top-1 prediction.
  Images are independent in eval mode, so one backward pass of the summed
  scores gives every image's gradient.
  """
  ids = _check_ids(images, class_ids)
  graphdef, state = nnx.split(model)
  return _backprop_saliency(graphdef, state, images, ids)


class _Tap(nnx.Module):
  """Wraps a layer: adds ``delta`` to its output and remembers the output."""

  def __init__(self, inner: nnx.Module):
    self.inner = inner
    self.delta = nnx.data(None)
    self.output = nnx.data(None)

  def __call__(self, *args, **kwargs):
    out = self.inner(*args, **kwargs)
    if self.delta is not None:
      out = out + self.delta
    self.output = out
    return out


def _tap_layer(model: nnx.Module, layer: str) -> _Tap:
  """Replace the submodule at ``layer`` ("a/b/0" or "a.b.0") by a tap and return it."""
  parts = [p for p in layer.replace(".", "/").split("/") if p]
  if not parts:
    raise ValueError("layer must name a submodule, e.g. 'blocks/3'")
  parent = model
  for i, part in enumerate(parts):
    indexable = isinstance(parent, (list, tuple, nnx.List)) and part.isdigit()
    try:
      child = parent[int(part)] if indexable else getattr(parent, part)
    except (AttributeError, IndexError) as err:
      raise ValueError(f"model has no layer {'/'.join(parts[:i + 1])!r} (from {layer!r})") from err
    if i == len(parts) - 1:
      if not callable(child):
        raise ValueError(f"layer {layer!r} is not callable")
      tap = _Tap(child)
      if indexable:
        parent[int(part)] = tap
      else:
        setattr(parent, part, tap)
      return tap
    parent = child
  raise AssertionError("unreachable")


@functools.partial(jax.jit, static_argnames=("graphdef", "layer", "relu", "upsample"))
def _grad_cam(graphdef, state, images, class_ids, *, layer: str, relu: bool, upsample: bool):
  def run(delta):
    model = nnx.merge(graphdef, state)
    model.eval()
    tap = _tap_layer(model, layer)
    tap.delta = delta
    logits, _ = model(images)
    return logits, tap.output

  logits_shape, activation_shape = jax.eval_shape(lambda: run(None))
  del logits_shape

  def selected_scores(delta):
    logits, activations = run(delta)
    ids = _top1_or_given(logits, class_ids)
    return jnp.take_along_axis(logits, ids[:, None], axis=1)[:, 0], (activations, ids)

  delta = jnp.zeros(activation_shape.shape, activation_shape.dtype)
  scores, vjp_fn, (activations, ids) = jax.vjp(selected_scores, delta, has_aux=True)
  (grads,) = vjp_fn(jnp.ones_like(scores))
  alphas = jnp.mean(grads.astype(jnp.float32), axis=(1, 2))  # (B, K)
  maps = jnp.einsum("bhwk,bk->bhw", activations.astype(jnp.float32), alphas, precision=jax.lax.Precision.HIGHEST)
  if relu:
    maps = jax.nn.relu(maps)
  if upsample:
    maps = upsample_maps(maps[:, None], images.shape[1:3])[:, 0]
  return maps, ids


def grad_cam(
    model: nnx.Module,
    images: jax.Array,
    layer: str,
    class_ids: Any = None,
    *,
    relu: bool = True,
    upsample: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """Grad-CAM (Selvaraju et al. 2017) at the NHWC output of submodule ``layer``.

  ``alpha_k = mean_xy d score_c / d A_k``; map ``= ReLU(sum_k alpha_k A_k)``.
  ``layer`` is an attribute path such as ``"blocks/3"`` or ``"features/28"``.
  Returns ((B, H, W) maps, or (B, h, w) without ``upsample``, and class ids (B,)).
  """
  ids = _check_ids(images, class_ids)
  _tap_layer(nnx.clone(model), layer)  # fail early, outside jit, on a bad path
  graphdef, state = nnx.split(model)
  return _grad_cam(graphdef, state, images, ids, layer=layer, relu=relu, upsample=upsample)
