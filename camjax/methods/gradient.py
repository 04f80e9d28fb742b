"""Gradient-based class activation maps: one forward pass, one backward pass per target (vmapped).

Notation: ``A`` the (h, w, C) output of ``layer``, ``g = d y_c / d A`` the
gradient of the target logit ``y_c`` (before softmax, as in both reference
libraries), sums over positions ``(i, j)`` unless said otherwise. Every function
returns ``(maps (B, K, h, w), logits (B, num_classes))``; ``upsample=True``
resizes the maps to the image, ``eigen_smooth`` replaces the channel sum by the
first principal component (pytorch-grad-cam's option), ``aug_smooth`` averages
over flips and brightness (pytorch-grad-cam's test-time augmentation).
Maps are not min-max scaled; ``normalize_maps`` does that.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from camjax.methods._core import (
    call, choice, combine_channels, combine_elementwise, first_component, layer_gradients,
    normalize_maps, positive, register, resize, resolve_ids)
from camjax.errors import UserError

Maps = tuple[jax.Array, jax.Array]


def _relu(maps: jax.Array, relu: bool) -> jax.Array:
  return jax.nn.relu(maps) if relu else maps


@register("grad_cam")
def _grad_cam(net, images, class_ids, key, extra, *, relu, eigen_smooth):
  logits, _, (acts,), (grads,) = layer_gradients(net, images, class_ids)
  weights = grads.mean(axis=(2, 3))  # (B, K, C)
  return _relu(combine_channels(weights, acts, eigen_smooth), relu), logits


def grad_cam(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None, relu: bool = True,
             upsample: bool = False, eigen_smooth: bool = False, aug_smooth: bool = False) -> Maps:
  """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean_ij(g_k) A_k)``.

  pytorch-grad-cam and torch-cam agree (ReLU on the map, not on the weights).
  With a GAP head at the pooled layer this is CAM divided by h*w.
  """
  return call("grad_cam", model, images, class_ids, layers=(layer,), upsample=upsample, aug_smooth=aug_smooth,
              relu=relu, eigen_smooth=eigen_smooth)


def _plus_plus_weights(g1, g2, g3, acts, eps, denominator):
  """Grad-CAM++ channel weights from the (averaged) first, second and third powers of the gradient."""
  if denominator == "paper":
    # Eq. 19 of Chattopadhay et al.: 2 g^2 + (sum_ab A_ab) g^3, with g at (i, j).
    denom = 2 * g2 + acts.sum(axis=(1, 2))[:, None, None, None, :] * g3
  else:
    # torch-cam's form: 2 g^2 + sum_ab A_ab g_ab^3 (one sum of products per channel).
    denom = 2 * g2 + (g3 * acts[:, None]).sum(axis=(2, 3), keepdims=True)
  alpha = jnp.where(g2 != 0, g2 / jnp.where(g2 != 0, denom + eps, 1.0), 0.0)
  return jnp.sum(alpha * jax.nn.relu(g1), axis=(2, 3))  # (B, K, C)


@register("grad_cam_plus_plus")
def _grad_cam_plus_plus(net, images, class_ids, key, extra, *, relu, eigen_smooth, eps, denominator):
  logits, _, (acts,), (grads,) = layer_gradients(net, images, class_ids)
  weights = _plus_plus_weights(grads, grads ** 2, grads ** 3, acts, eps, denominator)
  return _relu(combine_channels(weights, acts, eigen_smooth), relu), logits


def grad_cam_plus_plus(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None,
                       relu: bool = True, eps: float = 1e-6, denominator: str = "paper", upsample: bool = False,
                       eigen_smooth: bool = False, aug_smooth: bool = False) -> Maps:
  """Grad-CAM++ (Chattopadhay et al. 2018): ``w_k = sum_ij alpha_ij ReLU(g_ij)``, map ``ReLU(sum_k w_k A_k)``.

  ``alpha = g^2 / (2 g^2 + sum_ab(A_ab) g^3 + eps)`` (0 where g = 0) is the
  paper's Eq. 19 as pytorch-grad-cam writes it (eps 1e-6). The paper derives it
  for ``exp(y_c)``; its higher derivatives are powers of ``g`` times
  ``exp(y_c)``, and both libraries, like camjax, drop that per-image factor (it
  only scales the map). ``denominator="torchcam"`` uses torch-cam's
  ``2 g^2 + sum_ab A_ab g_ab^3`` instead; torch-cam 0.5 then divides a copy
  made by boolean indexing, so its own alpha stays ``g^2``: camjax does not
  reproduce that.
  """
  choice("denominator", denominator, ("paper", "torchcam"))
  return call("grad_cam_plus_plus", model, images, class_ids, layers=(layer,), upsample=upsample,
              aug_smooth=aug_smooth, relu=relu, eigen_smooth=eigen_smooth, eps=float(eps), denominator=denominator)


@register("smooth_grad_cam_plus_plus")
def _smooth_grad_cam_plus_plus(net, images, class_ids, key, extra, *, relu, eigen_smooth, eps, denominator,
                               num_samples, noise_std, definition):
  logits, (acts,) = net(images)
  acts = acts.astype(jnp.float32)
  ids = resolve_ids(class_ids, logits)

  def add(carry, s):
    sums, _ = carry
    if extra is None:
      noise = noise_std * jax.random.normal(jax.random.fold_in(key, s), images.shape, jnp.float32)
    else:
      noise = extra[s]
    _, _, (noisy_acts,), (g,) = layer_gradients(net, images + noise.astype(images.dtype), ids)
    return ((sums[0] + g, sums[1] + g ** 2, sums[2] + g ** 3), (g, noisy_acts.astype(jnp.float32))), None

  zeros = jnp.zeros(ids.shape + acts.shape[1:], jnp.float32)
  init = ((zeros, zeros, zeros), (zeros, acts))
  (sums, (last_g, last_acts)), _ = jax.lax.scan(add, init, jnp.arange(num_samples))
  g1, g2, g3 = (s / num_samples for s in sums)
  if definition == "paper":
    weights = _plus_plus_weights(g1, g2, g3, acts, eps, denominator)
    return _relu(combine_channels(weights, acts, eigen_smooth), relu), logits
  # torch-cam: alpha from the averaged powers and the clean activations, then the last noisy
  # sample's gradient in the weights and its activations in the map.
  weights = _plus_plus_weights(last_g, g2, g3, acts, eps, "torchcam")
  return _relu(combine_channels(weights, last_acts, eigen_smooth), relu), logits


def smooth_grad_cam_plus_plus(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None,
                              num_samples: int = 4, noise_std: float = 0.3, key: jax.Array | None = None,
                              noise: jax.Array | None = None, relu: bool = True, eps: float = 1e-6,
                              denominator: str = "paper", definition: str = "paper", upsample: bool = False,
                              eigen_smooth: bool = False, aug_smooth: bool = False) -> Maps:
  """Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ with ``g, g^2, g^3`` averaged over noisy inputs.

  ``definition="paper"`` (default): ``num_samples`` inputs ``x + N(0, noise_std^2)``
  (in model input units; torch-cam's defaults 4 and 0.3), the averaged powers go
  into Grad-CAM++'s alpha and weights, and the activations are the clean image's.
  ``definition="torchcam"``: torch-cam 0.5's form, alpha from the averaged
  ``g^2, g^3`` with its denominator and the clean activations, but the weights
  from the last noisy sample's gradient and the map from that sample's
  activations. camjax defaults to the paper: torch-cam's map depends on which
  draw came last. ``noise`` (num_samples, B, H, W, C) replaces the random draws
  (to reproduce another implementation's); pytorch-grad-cam has no Smooth Grad-CAM++.
  """
  choice("denominator", denominator, ("paper", "torchcam"))
  choice("definition", definition, ("paper", "torchcam"))
  extra = None
  if noise is not None:
    if aug_smooth:
      raise UserError("noise= and aug_smooth=True cannot be combined: the augmented views need their own draws")
    extra = jnp.asarray(noise, jnp.float32)
    shape = (extra.shape[0],) + tuple(jnp.shape(images))
    if extra.ndim != 5 or extra.shape != shape:
      raise UserError(f"noise must be (num_samples, B, H, W, C) = (n, *images.shape), got {extra.shape}")
    num_samples = extra.shape[0]
  return call("smooth_grad_cam_plus_plus", model, images, class_ids, layers=(layer,), upsample=upsample,
              aug_smooth=aug_smooth, key=key, extra=extra, relu=relu, eigen_smooth=eigen_smooth, eps=float(eps),
              denominator=denominator, definition=definition, num_samples=positive("num_samples", num_samples),
              noise_std=float(noise_std))


@register("xgrad_cam")
def _xgrad_cam(net, images, class_ids, key, extra, *, relu, eigen_smooth, eps):
  logits, _, (acts,), (grads,) = layer_gradients(net, images, class_ids)
  weights = (grads * acts[:, None]).sum(axis=(2, 3)) / (acts.sum(axis=(1, 2))[:, None] + eps)
  return _relu(combine_channels(weights, acts, eigen_smooth), relu), logits


def xgrad_cam(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None, relu: bool = True,
              eps: float = 1e-7, upsample: bool = False, eigen_smooth: bool = False,
              aug_smooth: bool = False) -> Maps:
  """XGrad-CAM (Fu et al. 2020): ``w_k = sum_ij g_ij A_ij / (sum_ij A_ij + eps)``, map ``ReLU(sum_k w_k A_k)``.

  Both libraries agree (eps 1e-7 in pytorch-grad-cam, 1e-8 in torch-cam). With
  channels constant over positions it equals Grad-CAM.
  """
  return call("xgrad_cam", model, images, class_ids, layers=(layer,), upsample=upsample, aug_smooth=aug_smooth,
              relu=relu, eigen_smooth=eigen_smooth, eps=float(eps))


@register("hires_cam")
def _hires_cam(net, images, class_ids, key, extra, *, relu, eigen_smooth):
  logits, _, (acts,), (grads,) = layer_gradients(net, images, class_ids)
  return _relu(combine_elementwise(grads * acts[:, None], eigen_smooth), relu), logits


def hires_cam(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None, relu: bool = True,
              upsample: bool = False, eigen_smooth: bool = False, aug_smooth: bool = False) -> Maps:
  """HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k g_k * A_k)`` element-wise, no pooling of the gradient.

  As pytorch-grad-cam (torch-cam has none). At the last map of a GAP network it
  is CAM / (h*w) exactly: there ``g`` is the class weight / (h*w) everywhere.
  """
  return call("hires_cam", model, images, class_ids, layers=(layer,), upsample=upsample, aug_smooth=aug_smooth,
              relu=relu, eigen_smooth=eigen_smooth)


@register("grad_cam_elementwise")
def _grad_cam_elementwise(net, images, class_ids, key, extra, *, relu, eigen_smooth):
  logits, _, (acts,), (grads,) = layer_gradients(net, images, class_ids)
  return _relu(combine_elementwise(jax.nn.relu(grads * acts[:, None]), eigen_smooth), relu), logits


def grad_cam_elementwise(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None,
                         relu: bool = True, upsample: bool = False, eigen_smooth: bool = False,
                         aug_smooth: bool = False) -> Maps:
  """Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): ``sum_k ReLU(g_k * A_k)``.

  Only pytorch-grad-cam defines it; the ReLU is per element, before the sum.
  """
  return call("grad_cam_elementwise", model, images, class_ids, layers=(layer,), upsample=upsample,
              aug_smooth=aug_smooth, relu=relu, eigen_smooth=eigen_smooth)


def _largest(maps: Sequence[jax.Array]) -> tuple[int, int]:
  return max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])


@register("layer_cam")
def _layer_cam(net, images, class_ids, key, extra, *, relu, eigen_smooth, fusion, gamma, fuse_size):
  logits, _, acts, grads = layer_gradients(net, images, class_ids)
  maps = [_relu(combine_elementwise(jax.nn.relu(g) * a[:, None], eigen_smooth), relu) for a, g in zip(acts, grads)]
  if len(maps) == 1:
    return maps[0], logits
  size = fuse_size or _largest(maps)
  if fusion == "max":
    scaled = [resize(jnp.tanh(gamma * normalize_maps(m, 1e-8)), size) for m in maps]
    return jnp.max(jnp.stack(scaled), axis=0), logits
  scaled = [resize(normalize_maps(m, 1e-7), size) for m in maps]
  return jnp.mean(jnp.stack(scaled), axis=0), logits


def layer_cam(model: nnx.Module, images: jax.Array, *, layer: str | Sequence[str], class_ids: Any = None,
              relu: bool = True, fusion: str = "max", gamma: float = 2.0, upsample: bool = False,
              eigen_smooth: bool = False, aug_smooth: bool = False) -> Maps:
  """LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(g_k) * A_k)``, positive gradients per position.

  Both libraries agree on one layer. ``layer`` may list several layers; their
  maps are min-max scaled, resized to the largest map (to the image with
  ``upsample``) and fused. ``fusion="max"`` is the paper's and torch-cam's
  (``tanh(gamma * map)``, gamma 2, then the element-wise maximum);
  ``fusion="mean"`` is pytorch-grad-cam's (the mean of the scaled maps).
  """
  choice("fusion", fusion, ("max", "mean"))
  names = (layer,) if isinstance(layer, str) else tuple(layer)
  fuse_size = tuple(jnp.shape(images)[1:3]) if upsample and len(names) > 1 else None
  return call("layer_cam", model, images, class_ids, layers=names, upsample=upsample, aug_smooth=aug_smooth,
              relu=relu, eigen_smooth=eigen_smooth, fusion=fusion, gamma=float(gamma), fuse_size=fuse_size)


@register("eigen_grad_cam")
def _eigen_grad_cam(net, images, class_ids, key, extra, *, relu, center):
  logits, _, (acts,), (grads,) = layer_gradients(net, images, class_ids)
  return _relu(first_component(grads * acts[:, None], center=center), relu), logits


def eigen_grad_cam(model: nnx.Module, images: jax.Array, *, layer: str, class_ids: Any = None,
                   relu: bool = True, center: bool = True, upsample: bool = False,
                   aug_smooth: bool = False) -> Maps:
  """EigenGrad-CAM (pytorch-grad-cam): the first principal component of ``g * A``, then ReLU.

  As pytorch-grad-cam: the (h*w, C) matrix is centred over positions before the
  SVD. Its sign is arbitrary in an SVD (pytorch-grad-cam keeps LAPACK's);
  camjax makes it agree with the class evidence ``sum_k g_k A_k``
  (``first_component``).
  """
  return call("eigen_grad_cam", model, images, class_ids, layers=(layer,), upsample=upsample,
              aug_smooth=aug_smooth, relu=relu, center=bool(center))


__all__ = ["eigen_grad_cam", "grad_cam", "grad_cam_elementwise", "grad_cam_plus_plus", "hires_cam",
           "layer_cam", "smooth_grad_cam_plus_plus", "xgrad_cam"]
