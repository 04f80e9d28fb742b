"""Gradient-free class activation maps: channel weights from extra forward passes, or from the activations alone.

Score-CAM, SS-CAM, IS-CAM and Ablation-CAM need one forward pass per channel
(and per sample); they run as ``lax.map`` over chunks of ``chunk_size`` masked
inputs, so memory is bounded by one chunk while each chunk fills the device.
The result does not depend on ``chunk_size``. Returns and options as in
``camjax.methods.gradient``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from camjax.methods._core import (
    call, choice, chunked, combine_channels, first_component, positive, register, resize, resolve_ids, take_scores)

Maps = tuple[jax.Array, jax.Array]


def _relu(maps: jax.Array, relu: bool) -> jax.Array:
  return jax.nn.relu(maps) if relu else maps


def _masks(acts: jax.Array, size: tuple[int, int], normalize_first: bool, align_corners: bool) -> jax.Array:
  """(n, h, w) channels -> (n, H, W) masks in [0, 1]: upsampled and min-max scaled."""
  up = resize(acts, size, align_corners)
  src = acts if normalize_first else up
  lo = src.min(axis=(-2, -1), keepdims=True)
  hi = src.max(axis=(-2, -1), keepdims=True)
  return (up - lo) / (hi - lo + 1e-8)


def _coefficients(variant: str, num_samples: int, integration: str) -> jax.Array:
  """IS-CAM's input scales per sample (1 for the other variants)."""
  s = jnp.arange(1, num_samples + 1, dtype=jnp.float32)
  if variant != "is":
    return jnp.ones_like(s)
  if integration == "cumulative":
    return s * (s + 1) / (2 * num_samples)  # sum_{j<=s} j / N, as torch-cam accumulates it
  return s / num_samples


@register("score_cam")
def _score_cam(net, images, class_ids, key, extra, *, relu, eigen_smooth, chunk_size, normalize_first,
               align_corners, weighting, variant, num_samples, noise_std, integration):
  logits, (acts,) = net(images)
  acts = acts.astype(jnp.float32)
  ids = resolve_ids(class_ids, logits)
  batch, _, _, channels = acts.shape
  size = images.shape[1:3]
  channel_maps = jnp.moveaxis(acts, -1, 1)  # (B, C, h, w)
  coefficients = _coefficients(variant, num_samples, integration)

  def scores(idx):
    sample, flat = idx // (batch * channels), idx % (batch * channels)
    b, k = flat // channels, flat % channels
    masks = _masks(channel_maps[b, k], size, normalize_first, align_corners)
    if variant == "ss":
      noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), size, jnp.float32))(idx)
      masks = masks + noise_std * noise
    masks = masks * coefficients[sample][:, None, None]
    out = net(images[b] * masks[..., None].astype(images.dtype))[0]
    if weighting == "probability":
      out = jax.nn.softmax(out, axis=-1)
    return take_scores(out, ids[b])  # (chunk, K)

  total = num_samples * batch * channels
  s = chunked(scores, total, chunk_size).reshape(num_samples, batch, channels, -1).mean(axis=0)  # (B, C, K)
  weights = jax.nn.softmax(s, axis=1) if weighting == "softmax" else s
  return _relu(combine_channels(jnp.moveaxis(weights, 1, 2), acts, eigen_smooth), relu), logits


def _score_options(chunk_size, normalize_first, align_corners, weighting):
  choice("weighting", weighting, ("softmax", "probability"))
  return dict(chunk_size=positive("chunk_size", chunk_size), normalize_first=bool(normalize_first),
              align_corners=bool(align_corners), weighting=weighting)


def score_cam(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None, chunk_size: int = 32,
              relu: bool = True, normalize_first: bool = False, align_corners: bool = False,
              weighting: str = "softmax", upsample: bool = False, eigen_smooth: bool = False,
              aug_smooth: bool = False) -> Maps:
  """Score-CAM (Wang et al. 2020): channels weighted by the target logit of the image masked by them.

  Mask ``M_k`` = channel k upsampled to the image (bilinear) and min-max scaled
  to [0, 1]; ``w = softmax_k(y_c(x * M_k))`` (``weighting="softmax"``, both
  libraries: subtracting a baseline score, as torch-cam does, cancels in the
  softmax); map ``ReLU(sum_k w_k A_k)``. The masks multiply the model input
  (a zero baseline there). pytorch-grad-cam upsamples with ``align_corners=True``
  and then scales; torch-cam scales at the layer's resolution
  (``normalize_first=True``) and upsamples with ``align_corners=False`` (default).
  ``weighting="probability"`` uses the softmax probability of the class as the
  weight, as the authors' code does.
  """
  return call("score_cam", model, images, class_ids, layers=(layer,), upsample=upsample, aug_smooth=aug_smooth,
              relu=relu, eigen_smooth=eigen_smooth, variant="score", num_samples=1, noise_std=0.0,
              integration="linear", **_score_options(chunk_size, normalize_first, align_corners, weighting))


def ss_cam(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None, num_samples: int = 35,
           noise_std: float = 2.0, key: jax.Array | None = None, chunk_size: int = 32, relu: bool = True,
           normalize_first: bool = True, align_corners: bool = False, weighting: str = "softmax",
           upsample: bool = False, eigen_smooth: bool = False, aug_smooth: bool = False) -> Maps:
  """SS-CAM (Wang et al. 2020, "Smoothed Score-CAM"): Score-CAM's scores averaged over noisy masks.

  As torch-cam (pytorch-grad-cam has none): ``M_k + N(0, noise_std^2)`` per pixel
  at the image's resolution, ``num_samples`` draws (defaults 35 and 2.0), the
  scores averaged before the softmax. The noise comes from ``key`` and the
  channel's index, so it does not depend on ``chunk_size``.
  """
  return call("score_cam", model, images, class_ids, layers=(layer,), upsample=upsample, aug_smooth=aug_smooth,
              key=key, relu=relu, eigen_smooth=eigen_smooth, variant="ss",
              num_samples=positive("num_samples", num_samples), noise_std=float(noise_std), integration="linear",
              **_score_options(chunk_size, normalize_first, align_corners, weighting))


def is_cam(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None, num_samples: int = 10,
           integration: str = "cumulative", chunk_size: int = 32, relu: bool = True, normalize_first: bool = True,
           align_corners: bool = False, weighting: str = "softmax", upsample: bool = False,
           eigen_smooth: bool = False, aug_smooth: bool = False) -> Maps:
  """IS-CAM (Naidu et al. 2020, "Integrated Score-CAM"): scores of ``c_i * x * M_k`` averaged over N steps.

  ``integration="cumulative"`` follows torch-cam (the only library with IS-CAM)
  and the paper's sum: ``c_i = sum_{j<=i} j / N = i (i + 1) / 2N``, which grows
  past 1; ``"linear"`` takes ``c_i = i / N``, the straight path of Integrated
  Gradients.
  """
  choice("integration", integration, ("cumulative", "linear"))
  return call("score_cam", model, images, class_ids, layers=(layer,), upsample=upsample, aug_smooth=aug_smooth,
              relu=relu, eigen_smooth=eigen_smooth, variant="is", num_samples=positive("num_samples", num_samples),
              noise_std=0.0, integration=integration,
              **_score_options(chunk_size, normalize_first, align_corners, weighting))


@register("ablation_cam")
def _ablation_cam(net, images, class_ids, key, extra, *, relu, eigen_smooth, chunk_size, ablation_value):
  logits, (acts,) = net(images)
  ids = resolve_ids(class_ids, logits)
  base = take_scores(logits, ids)  # (B, K)
  batch, channels = acts.shape[0], acts.shape[-1]

  def scores(idx):
    b, k = idx // channels, idx % channels
    keep = 1 - jax.nn.one_hot(k, channels, dtype=acts.dtype)[:, None, None, :]
    ablated = acts[b] * keep + (1 - keep) * jnp.asarray(ablation_value, acts.dtype)
    out = net(images[b], replace=(ablated,))[0]
    return take_scores(out, ids[b])

  ablated_scores = chunked(scores, batch * channels, chunk_size).reshape(batch, channels, -1)  # (B, C, K)
  weights = (base[:, None, :] - ablated_scores) / base[:, None, :]
  maps = combine_channels(jnp.moveaxis(weights, 1, 2), acts.astype(jnp.float32), eigen_smooth)
  return _relu(maps, relu), logits


def ablation_cam(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None, chunk_size: int = 32,
                 ablation_value: float = 0.0, relu: bool = True, upsample: bool = False, eigen_smooth: bool = False,
                 aug_smooth: bool = False) -> Maps:
  """Ablation-CAM (Desai & Ramaswamy 2020): ``w_k = (y_c - y_c^k) / y_c``, ``y_c^k`` with channel k set to 0.

  As the paper and pytorch-grad-cam (torch-cam has none). Only the layers after
  ``layer`` run again. pytorch-grad-cam ablates to ``min(A) - 1e7`` instead of 0
  when the layer's minimum is not 0; pass ``ablation_value`` for such layers.
  """
  return call("ablation_cam", model, images, class_ids, layers=(layer,), upsample=upsample, aug_smooth=aug_smooth,
              relu=relu, eigen_smooth=eigen_smooth, chunk_size=positive("chunk_size", chunk_size),
              ablation_value=float(ablation_value))


@register("eigen_cam")
def _eigen_cam(net, images, class_ids, key, extra, *, relu, center):
  logits, (acts,) = net(images)
  ids = resolve_ids(class_ids, logits)
  maps = first_component(acts.astype(jnp.float32), center=center)[:, None]
  return _relu(jnp.broadcast_to(maps, ids.shape + maps.shape[-2:]), relu), logits


def eigen_cam(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None, relu: bool = True,
              center: bool = True, upsample: bool = False, aug_smooth: bool = False) -> Maps:
  """Eigen-CAM (Muhammad & Yeasin 2020): the activations projected on their first principal component.

  Class-agnostic: every target gets the same map. As pytorch-grad-cam (torch-cam
  has none): positions are centred before the SVD (``center``; the paper
  projects uncentred activations) and the map goes through ReLU. The sign, which
  an SVD leaves open and pytorch-grad-cam leaves to LAPACK, is chosen so that
  the map correlates positively with the summed activations.
  """
  return call("eigen_cam", model, images, class_ids, layers=(layer,), upsample=upsample, aug_smooth=aug_smooth,
              relu=relu, center=bool(center))


__all__ = ["ablation_cam", "eigen_cam", "is_cam", "score_cam", "ss_cam"]
