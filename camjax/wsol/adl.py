"""Attention-based Dropout Layer (ADL; Choe and Shim, CVPR 2019), as the WSOL evaluation standard trains it.

In training, ADL takes the channel mean of a feature map as its self-attention
and multiplies the map by one of two spatial maps: the drop mask, 0 where the
attention reaches ``threshold`` times the image's maximum (the most
discriminative part is hidden, so the network learns the rest of the object),
or the importance map, ``sigmoid(attention)`` (the discriminative part is
emphasised, so classification does not suffer). One Bernoulli(``drop_rate``)
draw per call picks the drop mask for the whole batch, as the standard does.
In evaluation ADL is the identity, and it has no parameters: a network with
ADL layers has the parameters and the evaluation outputs of the one without.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

DROP_RATE = 0.75  # the standard's --adl_drop_rate
THRESHOLD = 0.9  # the standard's --adl_threshold (gamma)


def check_params(drop_rate: float, threshold: float) -> None:
  """Fail with one line on a drop rate or threshold outside [0, 1]."""
  for name, value in (("adl_drop_rate", drop_rate), ("adl_threshold", threshold)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
      raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def adl_maps(x: jax.Array, threshold: float) -> tuple[jax.Array, jax.Array]:
  """``(importance map, drop mask)`` of NHWC ``x``, each (B, H, W, 1).

  The drop mask is 1 where the channel mean is below ``threshold`` times that
  image's maximum of it and 0 elsewhere; the importance map is its sigmoid.
  """
  attention = jnp.mean(x, axis=-1, keepdims=True)
  peak = jnp.max(attention, axis=(1, 2, 3), keepdims=True)
  drop = (attention < threshold * peak).astype(x.dtype)
  return jax.nn.sigmoid(attention), drop


def adl(x: jax.Array, key: jax.Array, drop_rate: float, threshold: float) -> jax.Array:
  """Train-mode ADL: ``x`` times the drop mask (probability ``drop_rate``, one draw per batch) or the importance map.

  The importance map carries gradient into ``x``, as in the standard; the drop
  mask is a comparison and carries none.
  """
  importance, drop = adl_maps(x, threshold)
  return x * jnp.where(jax.random.bernoulli(key, drop_rate), drop, importance)


class ADL(nnx.Module):
  """ADL as a layer: ``adl`` in train mode, the identity in eval mode (``model.train()`` / ``model.eval()``).

  Its key is an ``nnx.Rngs`` stream forked at construction (``rng_collection``,
  ``dropout`` by default), held in the module's state as ``nnx.Dropout`` holds
  its own: a split model carries it, a checkpoint saves it, and a resumed run
  draws the masks the uninterrupted run would have drawn.
  """

  def __init__(self, drop_rate: float = DROP_RATE, threshold: float = THRESHOLD, *, deterministic: bool = False,
               rng_collection: str = "dropout", rngs: nnx.Rngs):
    check_params(drop_rate, threshold)
    self.drop_rate, self.threshold = float(drop_rate), float(threshold)
    self.deterministic = deterministic
    self.rngs = rngs[rng_collection].fork()

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.deterministic:
      return x
    return adl(x, self.rngs(), self.drop_rate, self.threshold)

  def set_view(self, deterministic: bool | None = None):
    """Used by ``nnx.view``: ``deterministic=True`` makes the layer the identity."""
    if deterministic is not None:
      self.deterministic = deterministic
