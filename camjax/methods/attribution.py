"""Pixel attribution: gradients of the target logit with respect to the image.

Same call as the CAM methods, but there is no layer (``layer`` must stay None)
and the maps are at the image's resolution: (B, K, H, W), channels reduced.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from camjax.errors import UserError
from camjax.methods._core import call, chunked, positive, register, resolve_ids

Maps = tuple[jax.Array, jax.Array]


def _no_layer(layer: Any, name: str) -> None:
  if layer is not None:
    raise UserError(f"{name} attributes to the input pixels and takes no layer (got layer={layer!r})")


def _input_gradients(net, images, ids, num_classes):
  """d logit[b, ids[b, k]] / d images[b] -> (B, K, H, W, C) float32, one vmapped backward pass per target."""
  logits, vjp_fn = jax.vjp(lambda x: net(x)[0], images)
  cotangents = jax.nn.one_hot(ids, num_classes, dtype=logits.dtype)
  (grads,) = jax.vmap(vjp_fn, in_axes=1)(cotangents)
  return jnp.moveaxis(grads, 0, 1).astype(jnp.float32)


@register("backprop_saliency")
def _backprop_saliency(net, images, class_ids, key, extra):
  logits, _ = net(images)
  ids = resolve_ids(class_ids, logits)
  grads = _input_gradients(net, images, ids, logits.shape[-1])
  return jnp.max(jnp.abs(grads), axis=-1), logits


def backprop_saliency(model: nnx.Module, images: jax.Array, *, layer: None = None, class_ids: Any = None,
                      upsample: bool = True, aug_smooth: bool = False) -> Maps:
  """Backprop saliency (Simonyan et al. 2014): ``max_channels |d y_c / d x|`` per pixel."""
  _no_layer(layer, "backprop_saliency")
  return call("backprop_saliency", model, images, class_ids, upsample=upsample, aug_smooth=aug_smooth)


@register("smooth_grad")
def _smooth_grad(net, images, class_ids, key, extra, *, num_samples, noise_level, chunk_size):
  logits, _ = net(images)
  ids = resolve_ids(class_ids, logits)
  batch = images.shape[0]
  spread = (images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3))).astype(jnp.float32)  # (B,)

  def grads(idx):  # idx: flat (sample, image) indices
    b = idx % batch
    noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), images.shape[1:], jnp.float32))(idx)
    noisy = images[b] + (noise_level * spread[b][:, None, None, None] * noise).astype(images.dtype)
    return _input_gradients(net, noisy, ids[b], logits.shape[-1])

  g = chunked(grads, num_samples * batch, chunk_size).reshape((num_samples, batch) + ids.shape[1:] + images.shape[1:])
  return jnp.max(jnp.abs(g.mean(axis=0)), axis=-1), logits


def smooth_grad(model: nnx.Module, images: jax.Array, *, layer: None = None, class_ids: Any = None,
                num_samples: int = 50, noise_level: float = 0.15, key: jax.Array | None = None,
                chunk_size: int = 16, upsample: bool = True, aug_smooth: bool = False) -> Maps:
  """SmoothGrad (Smilkov et al. 2017): the input gradient averaged over ``x + N(0, sigma^2)``.

  ``sigma = noise_level * (max(x) - min(x))`` per image (the paper's 10-20%);
  the map is ``max_channels |mean gradient|``, as ``backprop_saliency``. The
  noisy copies run ``chunk_size`` at a time.
  """
  _no_layer(layer, "smooth_grad")
  return call("smooth_grad", model, images, class_ids, upsample=upsample, aug_smooth=aug_smooth, key=key,
              num_samples=positive("num_samples", num_samples), noise_level=float(noise_level),
              chunk_size=positive("chunk_size", chunk_size))


@register("integrated_gradients")
def _integrated_gradients(net, images, class_ids, key, extra, *, steps, chunk_size):
  logits, _ = net(images)
  ids = resolve_ids(class_ids, logits)
  batch = images.shape[0]
  baseline = jnp.broadcast_to(jnp.asarray(extra, images.dtype), images.shape)
  alphas = jnp.linspace(0.0, 1.0, steps + 1)
  rule = jnp.full((steps + 1,), 1.0 / steps).at[0].set(0.5 / steps).at[-1].set(0.5 / steps)  # trapezoid

  def grads(idx):  # idx: flat (step, image) indices
    step, b = idx // batch, idx % batch
    point = baseline[b] + alphas[step][:, None, None, None].astype(images.dtype) * (images[b] - baseline[b])
    g = _input_gradients(net, point, ids[b], logits.shape[-1])
    return g * rule[step][:, None, None, None, None]

  g = chunked(grads, (steps + 1) * batch, chunk_size)
  g = g.reshape((steps + 1, batch) + g.shape[1:]).sum(axis=0)  # (B, K, H, W, C)
  delta = (images - baseline).astype(jnp.float32)[:, None]
  return jnp.sum(g * delta, axis=-1), logits


def integrated_gradients(model: nnx.Module, images: jax.Array, *, layer: None = None, class_ids: Any = None,
                         baseline: Any = 0.0, steps: int = 50, chunk_size: int = 16, upsample: bool = True,
                         aug_smooth: bool = False) -> Maps:
  """Integrated Gradients (Sundararajan et al. 2017): ``(x - x') * integral_0^1 grad(x' + a (x - x')) da``.

  The integral is the trapezoid rule on ``steps`` intervals; the attribution is
  summed over colour channels and signed, so a map sums to about
  ``y_c(x) - y_c(baseline)`` (completeness). ``baseline`` is a scalar or an
  array broadcastable to the images, in model input units (0: the mean image
  after ImageNet normalisation).
  """
  _no_layer(layer, "integrated_gradients")
  return call("integrated_gradients", model, images, class_ids, upsample=upsample, aug_smooth=aug_smooth,
              extra=jnp.asarray(baseline, jnp.float32), steps=positive("steps", steps),
              chunk_size=positive("chunk_size", chunk_size))


__all__ = ["backprop_saliency", "integrated_gradients", "smooth_grad"]
