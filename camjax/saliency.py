"""Gradient-based localization baselines: backprop saliency and Grad-CAM.

These need a backward pass, unlike CAM; they serve as the comparison methods
of the paper (Simonyan et al. 2014) and as the way to localize with networks
whose head is not global pooling -> linear (the fully connected baselines).
Both are the one-target forms of ``camjax.methods``, which holds the whole CAM family.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from camjax import methods


def _check_ids(images: jax.Array, class_ids: Any) -> jax.Array | None:
  if images.ndim != 4:
    raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
  if class_ids is None:
    return None
  ids = jnp.asarray(class_ids, jnp.int32)
  if ids.shape != (images.shape[0],):
    raise ValueError(f"class_ids must have shape ({images.shape[0]},), got {ids.shape}")
  return ids


def _first_target(maps: jax.Array, logits: jax.Array, ids: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  return maps[:, 0], (jnp.argmax(logits, axis=-1).astype(jnp.int32) if ids is None else ids)


def backprop_saliency(model: nnx.Module, images: jax.Array, class_ids: Any = None) -> tuple[jax.Array, jax.Array]:
  """``max_channels |d score_c / d image|`` per pixel -> ((B, H, W), class ids (B,)).

  ``class_ids`` (B,) picks the class per image; default: the top-1 prediction.
  The one-target form of ``camjax.methods.backprop_saliency``.
  """
  ids = _check_ids(images, class_ids)
  maps, logits = methods.backprop_saliency(model, images, class_ids=ids)
  return _first_target(maps, logits, ids)


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
  ``layer`` is an attribute path such as ``"blocks/3"`` or ``"features/28"``
  (``camjax.methods.layer_names`` lists them). Returns ((B, H, W) maps, or
  (B, h, w) without ``upsample``, and class ids (B,)). The one-target form of
  ``camjax.methods.grad_cam``, which also takes (B, K) targets and more options.
  """
  ids = _check_ids(images, class_ids)
  maps, logits = methods.grad_cam(model, images, layer=layer, class_ids=ids, relu=relu, upsample=upsample)
  return _first_target(maps, logits, ids)
