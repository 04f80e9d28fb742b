"""Class activation maps beside the logits, from one forward pass.

For a network ending in ``features -> global pooling -> linear``, the map of
class ``c`` is ``M_c(x, y) = sum_k w_k^c f_k(x, y)`` (Zhou et al. 2016, Eq. 2).
With global average pooling, ``logits_c = mean_xy M_c + b_c`` holds exactly, so
the maps cost one small contraction on top of the forward pass.
Everything here runs on the accelerator inside one ``jax.jit``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
from flax import nnx

from camjax.models.base import NotCamCompatible

ClassIds = Union[None, str, jax.Array]


class CamOutput(NamedTuple):
  """What ``class_activation_maps`` returns (all device arrays).

  logits: (B, C) float32.
  class_ids: (B, K) int32, the classes whose maps are given.
  probs: (B, K) float32 softmax probabilities of those classes.
  maps: (B, K, h, w) float32 maps at feature resolution.
  upsampled: (B, K, H, W) float32 maps bilinearly resized to the input, or None.
  """

  logits: jax.Array
  class_ids: jax.Array
  probs: jax.Array
  maps: jax.Array
  upsampled: jax.Array | None


def cam_weights(model: nnx.Module) -> tuple[jax.Array, jax.Array]:
  """The classifier kernel (K, C) and bias (C,) of a CAM-capable model."""
  getter = getattr(model, "cam_weights", None)
  if getter is None:
    raise NotCamCompatible(
        f"{type(model).__name__} has no global-pooling linear head, so CAM is undefined for it; "
        "use camjax.saliency.grad_cam instead")
  return getter()


def maps_from_features(features: jax.Array, kernel: jax.Array, class_ids: jax.Array) -> jax.Array:
  """``M[b, j] = sum_k kernel[k, class_ids[b, j]] * features[b, :, :, k]`` -> (B, K, h, w).

  Used for trained heads and for any linear classifier on pooled features
  (for example an SVM fitted on GAP features).
  """
  class_weights = jnp.take(kernel.T, class_ids, axis=0)  # (B, K, C_feat)
  return jnp.einsum("bhwc,bkc->bkhw", features.astype(jnp.float32), class_weights.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


def class_maps(model: nnx.Module, features: jax.Array, class_ids: jax.Array) -> jax.Array:
  """(B, K, h, w) float32 localization maps of ``class_ids`` (B, K) from the ``features`` the model returned.

  A model that defines its own ``class_maps(features, class_ids)`` gives its
  maps (an ACoL network fuses two branches' class maps); every other model's
  are CAM's, ``maps_from_features`` with its classifier kernel.
  """
  own = getattr(model, "class_maps", None)
  if own is not None:
    return own(features, class_ids)
  kernel, _ = cam_weights(model)
  return maps_from_features(features, kernel, class_ids)


def check_class_maps(model: nnx.Module) -> None:
  """Raise ``NotCamCompatible`` (outside jit, with the reason) when ``class_maps`` cannot serve ``model``."""
  if getattr(model, "class_maps", None) is None:
    cam_weights(model)


def upsample_maps(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize of (B, K, h, w) maps to (B, K, H, W), half-pixel centres."""
  batch, k = maps.shape[:2]
  return jax.image.resize(maps, (batch, k, *size), method="bilinear", antialias=False)


def _select_classes(logits: jax.Array, class_ids: ClassIds, top_k: int) -> jax.Array:
  batch, num_classes = logits.shape
  if class_ids is None:
    return jax.lax.top_k(logits, top_k)[1].astype(jnp.int32)
  if isinstance(class_ids, str):
    return jnp.broadcast_to(jnp.arange(num_classes, dtype=jnp.int32), (batch, num_classes))
  ids = jnp.asarray(class_ids, jnp.int32)
  return ids[:, None] if ids.ndim == 1 else ids


@functools.partial(jax.jit, static_argnames=("graphdef", "top_k", "upsample", "class_mode"))
def _cam_step(graphdef, state, images, class_ids, *, top_k: int, upsample: bool, class_mode: str):
  model = nnx.merge(graphdef, state)
  model.eval()
  logits, features = model(images)
  logits = logits.astype(jnp.float32)
  ids = _select_classes(logits, "all" if class_mode == "all" else (None if class_mode == "top_k" else class_ids), top_k)
  probs = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), ids, axis=1)
  maps = class_maps(model, features, ids)
  upsampled = upsample_maps(maps, images.shape[1:3]) if upsample else None
  return CamOutput(logits, ids, probs, maps, upsampled)


def class_activation_maps(
    model: nnx.Module,
    images: jax.Array,
    *,
    top_k: int = 5,
    class_ids: ClassIds = None,
    upsample: bool = True,
) -> CamOutput:
  """Logits and per-class CAMs of ``images`` (B, H, W, 3) in one jitted forward pass.

  Args:
    model: a camjax model with a global-pooling linear head (``cam_weights``)
      or its own ``class_maps`` (see ``class_maps``); it is run in eval mode
      (BatchNorm running statistics, no dropout).
    images: NHWC float array (float32, or bfloat16 if the model computes in it).
    top_k: with ``class_ids=None``, the maps of the ``top_k`` highest logits.
    class_ids: ``None`` (top-k), ``"all"`` (every class; memory grows with C),
      or int ids per image, shape (B,) (for example the true class, for
      GT-known scoring) or (B, K).
    upsample: also return the maps bilinearly resized to the input size.
  """
  check_class_maps(model)  # fail early, outside jit, with a clear message
  if images.ndim != 4:
    raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
  if isinstance(class_ids, str):
    if class_ids != "all":
      raise ValueError(f"class_ids must be None, 'all' or an int array, got {class_ids!r}")
    class_mode, ids = "all", None
  elif class_ids is None:
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and not 1 <= top_k <= num_classes:
      raise ValueError(f"top_k must be in [1, {num_classes}], got {top_k}")
    class_mode, ids = "top_k", None
  else:
    ids = jnp.asarray(class_ids, jnp.int32)
    if ids.ndim not in (1, 2) or ids.shape[0] != images.shape[0]:
      raise ValueError(f"class_ids must be (B,) or (B, K) with B={images.shape[0]}, got shape {ids.shape}")
    class_mode = "given"
  graphdef, state = nnx.split(model)
  return _cam_step(graphdef, state, images, ids, top_k=top_k, upsample=upsample, class_mode=class_mode)
