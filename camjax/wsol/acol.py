"""Adversarial Complementary Learning (ACoL; Zhang et al., CVPR 2018), as the WSOL evaluation standard trains it.

Two classifier branches read the same backbone features; each is a stack of
convs ending in a 1x1 conv to one map per class, and its logits are the global
pooling of those maps. Branch B sees the features with the region erased
where branch A's map of the label class, min-max normalised per image, is at
least ``threshold``: B has to find the parts of the object A did not use. The
loss is the sum of both branches' cross-entropies; the logits that classify
are A's. The localization map of a class is the maximum of the two branches'
normalised maps of that class, B's computed with that class's region erased
(the standard's ``return_cam`` with the class as label).

This module also holds the architecture switch the WSOL backbones share
(``ARCHITECTURES``, ``check_architecture``, ``ArchitectureSwitch``) and the
per-map min-max normalisation that ACoL's erasing and SPG's attention both use.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from camjax.models.base import NotCamCompatible, check_pooling, global_pool
from camjax.models.conv import Conv
from camjax.models.layers import CONV_INIT
from camjax.wsol import adl

THRESHOLD = 0.7  # the standard's --acol_threshold
# The WSOL backbones' ``architecture`` values: plain CAM and the three architecture-side methods.
ARCHITECTURES = ("cam", "acol", "spg", "adl")


def check_threshold(threshold: float) -> None:
  """Fail with one line on an erasing threshold outside [0, 1]."""
  if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
    raise ValueError(f"acol_threshold must be a number in [0, 1], got {threshold!r}")


def check_architecture(architecture: str, *, acol_threshold: float, adl_drop_rate: float,
                       adl_threshold: float) -> str:
  """Fail at construction, with one line, on an unknown architecture or a method value out of range.

  Every hyperparameter is checked whichever architecture is built, so a bad
  value never waits silently for the run that uses it.
  """
  if architecture not in ARCHITECTURES:
    raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
  check_threshold(acol_threshold)
  adl.check_params(adl_drop_rate, adl_threshold)
  return architecture


class ArchitectureSwitch:
  """Mixin of the WSOL backbones: ``architecture`` decides which of ``wsol_outputs`` and ``class_maps`` exist.

  ``wsol_outputs(images, labels)`` (ACoL and SPG: what their losses need) is
  the subclass's ``_wsol_outputs``; ``class_maps(features, class_ids)`` (ACoL:
  the fused maps) is the head's. Elsewhere they raise ``AttributeError``, so
  ``hasattr`` tells a caller whether the built network has them.
  """

  architecture = "cam"

  @property
  def wsol_outputs(self) -> Callable[[jax.Array, jax.Array], dict[str, jax.Array]]:
    if self.architecture not in ("acol", "spg"):
      raise AttributeError(f"wsol_outputs exists for architecture 'acol' or 'spg', not {self.architecture!r}: "
                           "train this network on model(images)[0]")
    return self._wsol_outputs

  @property
  def class_maps(self) -> Callable[[jax.Array, jax.Array], jax.Array]:
    if self.architecture != "acol":
      raise AttributeError(f"architecture {self.architecture!r} has no class_maps of its own: its maps are CAM's "
                           "(camjax.cam.class_maps)")
    return self.head.class_maps


def normalize_maps(maps: jax.Array) -> jax.Array:
  """Min-max normalise each map over its last two (spatial) axes to [0, 1], in float32.

  A constant map becomes 0 (the standard divides by zero there, giving NaN,
  which erases nothing and never counts as foreground: the same outcome).
  """
  maps = maps.astype(jnp.float32)
  low = jnp.min(maps, axis=(-2, -1), keepdims=True)
  span = jnp.max(maps, axis=(-2, -1), keepdims=True) - low
  return jnp.where(span > 0, (maps - low) / jnp.where(span > 0, span, 1.0), 0.0)


def select_maps(class_maps: jax.Array, class_ids: jax.Array) -> jax.Array:
  """NHWC per-class maps (B, h, w, C) and class ids (B,) or (B, K) -> the chosen maps (B, K, h, w)."""
  ids = class_ids[:, None] if class_ids.ndim == 1 else class_ids
  return jax.vmap(lambda maps, i: jnp.moveaxis(maps[..., i], -1, 0))(class_maps, ids)


def erase(features: jax.Array, attention: jax.Array, threshold: float) -> jax.Array:
  """NHWC ``features`` set to 0 where the normalised ``attention`` (B, h, w) is at least ``threshold``."""
  keep = jax.lax.stop_gradient(attention) < threshold
  return features * keep[..., None].astype(features.dtype)


class AcolBranch(nnx.Module):
  """3x3 pad 1 convs with ReLU (one per ``hidden`` width), then a 1x1 conv to one map per class (all with bias)."""

  def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, *, dtype: Any = None,
               rngs: nnx.Rngs):
    convs = []
    for width in hidden:
      convs.append(Conv(in_features, width, (3, 3), padding=1, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs))
      in_features = width
    self.hidden = nnx.List(convs)
    self.classifier = Conv(in_features, num_classes, (1, 1), dtype=dtype, kernel_init=CONV_INIT, rngs=rngs)

  def __call__(self, features: jax.Array) -> jax.Array:
    for conv in self.hidden:
      features = nnx.relu(conv(features))
    return self.classifier(features)


class AcolHead(nnx.Module):
  """ACoL's two branches (``classifier_A``, ``classifier_B``, the standard's names) as a network's ``head``.

  ``head(features)`` gives branch A's logits (evaluation and accuracy);
  ``outputs(features, labels)`` runs both branches for the loss;
  ``class_maps(features, class_ids)`` gives the fused localization maps.
  """

  def __init__(self, in_features: int, num_classes: int, *, hidden: Sequence[int] = (1024, 1024),
               threshold: float = THRESHOLD, pooling: str = "gap", dtype: Any = None, rngs: nnx.Rngs):
    check_threshold(threshold)
    self.threshold = float(threshold)
    self.pooling = check_pooling(pooling)
    self.classifier_A = AcolBranch(in_features, hidden, num_classes, dtype=dtype, rngs=rngs)
    self.classifier_B = AcolBranch(in_features, hidden, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, features: jax.Array) -> jax.Array:
    return global_pool(self.classifier_A(features), self.pooling)

  def outputs(self, features: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Both branches with ``labels`` (B,) erased for B: logits (A's), logits_b, and each branch's class maps."""
    maps_a = self.classifier_A(features)
    attention = normalize_maps(select_maps(maps_a, labels)[:, 0])
    maps_b = self.classifier_B(erase(features, attention, self.threshold))
    return {"logits": global_pool(maps_a, self.pooling), "logits_b": global_pool(maps_b, self.pooling),
            "maps_a": maps_a, "maps_b": maps_b}

  def class_maps(self, features: jax.Array, class_ids: jax.Array) -> jax.Array:
    """(B, K, h, w) float32: per class, the maximum of A's and B's normalised maps, B's with that class erased.

    Branch B runs once per requested class (a ``lax.map`` over K, so memory
    stays that of one pass).
    """
    ids = class_ids[:, None] if class_ids.ndim == 1 else class_ids
    maps_a = normalize_maps(select_maps(self.classifier_A(features), ids))

    def branch_b(args: tuple[jax.Array, jax.Array]) -> jax.Array:
      attention, class_id = args
      maps_b = self.classifier_B(erase(features, attention, self.threshold))
      return normalize_maps(select_maps(maps_b, class_id)[:, 0])

    maps_b = jax.lax.map(branch_b, (jnp.moveaxis(maps_a, 1, 0), ids.T))
    return jnp.maximum(maps_a, jnp.moveaxis(maps_b, 0, 1))

  def cam_weights(self) -> tuple[jax.Array, jax.Array]:
    raise NotCamCompatible("an ACoL network's map fuses two branches' class maps, not a kernel product; "
                           "use camjax.cam.class_maps or the model's class_maps")


def acol_loss(outputs: dict[str, jax.Array], labels: jax.Array) -> jax.Array:
  """Mean cross-entropy of branch A plus that of branch B, as the standard's loss."""
  def cross_entropy(logits: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()

  return cross_entropy(outputs["logits"]) + cross_entropy(outputs["logits_b"])
