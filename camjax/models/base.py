"""Pieces shared by every network in the zoo: global pooling and the linear head.

Every model in camjax is called as ``logits, features = model(images)`` where
``images`` is NHWC float and ``features`` is the feature map that feeds global
pooling (NHWC), computed in the same forward pass. Models whose head is
"global pooling -> linear" also expose ``cam_weights()`` returning the
classifier kernel ``(K, C)`` and bias ``(C,)``, so that

    M_c(x, y) = sum_k w_k^c f_k(x, y)

can be formed from ``features`` alone (see ``camjax.cam``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

POOLINGS = ("gap", "gmp")


def check_pooling(pooling: str) -> str:
  """Fail at construction, with the allowed values, on an unknown pooling."""
  if pooling not in POOLINGS:
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
  return pooling


def global_pool(features: jax.Array, pooling: str) -> jax.Array:
  """(B, H, W, K) -> (B, K): mean (GAP) or max (GMP) over the spatial axes."""
  if pooling == "gap":
    return jnp.mean(features, axis=(1, 2))
  if pooling == "gmp":
    return jnp.max(features, axis=(1, 2))
  raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class PoolingHead(nnx.Module):
  """Global pooling followed by a linear classifier (bias off by default, as in the paper)."""

  def __init__(
      self,
      in_features: int,
      num_classes: int,
      *,
      pooling: str = "gap",
      use_bias: bool = False,
      dropout_rate: float = 0.0,
      dtype: Any = None,
      rngs: nnx.Rngs,
  ):
    self.pooling = check_pooling(pooling)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs) if dropout_rate > 0 else None
    self.classifier = nnx.Linear(
        in_features,
        num_classes,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=nnx.initializers.normal(0.01),
        rngs=rngs,
    )

  def __call__(self, features: jax.Array) -> jax.Array:
    pooled = global_pool(features, self.pooling)
    if self.dropout is not None:
      pooled = self.dropout(pooled)
    return self.classifier(pooled)

  def cam_weights(self) -> tuple[jax.Array, jax.Array]:
    """Classifier kernel (K, C) and bias (C,) (zeros when the head has no bias)."""
    kernel = self.classifier.kernel[...]
    if self.classifier.bias is not None:
      bias = self.classifier.bias[...]
    else:
      bias = jnp.zeros((kernel.shape[1],), kernel.dtype)
    return kernel, bias


class NotCamCompatible(TypeError):
  """Raised by models whose head is not global pooling -> linear (fully connected baselines)."""
