"""Self-Produced Guidance (SPG; Zhang et al., ECCV 2018), as the WSOL evaluation standard trains it.

Besides the classifier (a 1x1 conv to the classes, then global average
pooling: here the network's ``head``, global pooling -> linear, which gives the
same logits), SPG adds three one-channel score maps trained pixel by pixel:

- ``SPG_B_1a`` and ``SPG_B_2a`` read two earlier taps of the backbone and share
  ``SPG_B_shared`` (3x3 conv + ReLU, 1x1 conv to one map): logits_b1, logits_b2;
- ``SPG_C`` reads the classifier's input: logits_c.

Each is trained with binary cross-entropy against a pseudo-label mask made
from a map with no gradient, at the input image's size (bilinear upsampling):
logits_b2 against the label class's map (min-max normalised), logits_b1
against ``sigmoid(logits_b2)``, logits_c against the mean of
``sigmoid(logits_b1)`` and ``sigmoid(logits_b2)``. A mask is 1 above its high
threshold (or, when fewer than 30 pixels of an image pass it, above 0.7 times
that image's maximum), 0 below its low threshold, and ignored in between.
The localization map is the classifier's map of the class, as for CAM.

The standard fixes the upsampled size at 224 px; here it is the input's.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from camjax.models.base import PoolingHead
from camjax.models.conv import Conv
from camjax.models.layers import CONV_INIT
from camjax.wsol import acol

# (high, low) for logits_b2 against the class map, logits_b1 against sigmoid(logits_b2) and logits_c
# against the fused map: the standard's --spg_threshold_{1,2,3}{h,l}.
THRESHOLDS = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
MIN_FOREGROUND = 30  # pixels above the high threshold an image needs before the fallback threshold applies
FALLBACK_RATIO = 0.7  # the fallback threshold, times the image's maximum


def upsample(maps: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear resize of (B, h, w) maps to (B, H, W), half-pixel centres (torch's ``align_corners=False``)."""
  return jax.image.resize(maps, (maps.shape[0], *size), method="bilinear", antialias=False)


def pseudo_labels(attention: jax.Array, high: float, low: float) -> tuple[jax.Array, jax.Array]:
  """``(target, valid)`` (B, H, W) of a guidance map: target 1 on foreground, valid where it is fore- or background.

  Foreground is above ``high``, or above ``FALLBACK_RATIO`` times the image's
  maximum when fewer than ``MIN_FOREGROUND`` pixels of that image pass
  ``high``; background (below ``low``) wins where both hold.
  """
  attention = jax.lax.stop_gradient(attention).astype(jnp.float32)
  fg = attention > high
  few = jnp.sum(fg, axis=(1, 2), keepdims=True) < MIN_FOREGROUND
  fallback = attention > FALLBACK_RATIO * jnp.max(attention, axis=(1, 2), keepdims=True)
  fg = jnp.where(few, fallback, fg)
  bg = attention < low
  return (fg & ~bg).astype(jnp.float32), fg | bg


def masked_bce(logits: jax.Array, target: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean binary cross-entropy (from logits) over the valid pixels of the whole batch; 0 when none is valid."""
  loss = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), target)
  count = jnp.sum(valid)
  return jnp.sum(jnp.where(valid, loss, 0.0)) / jnp.maximum(count, 1)


def check_thresholds(thresholds: Sequence[Sequence[float]]) -> tuple[tuple[float, float], ...]:
  """Three ``(high, low)`` pairs as floats; fail with one line otherwise."""
  try:
    pairs = tuple((float(high), float(low)) for high, low in thresholds)
  except (TypeError, ValueError):
    pairs = ()
  if len(pairs) != 3:
    raise ValueError(f"SPG thresholds must be three (high, low) pairs, got {thresholds!r}")
  return pairs


def spg_loss(outputs: dict[str, jax.Array], labels: jax.Array,
             thresholds: Sequence[Sequence[float]] = THRESHOLDS) -> jax.Array:
  """Cross-entropy of the logits plus the three pixel-level terms (``thresholds`` as ``THRESHOLDS``).

  ``outputs`` is a model's ``wsol_outputs``: its ``attention`` has the input's
  size, to which the score maps are upsampled.
  """
  (h1, l1), (h2, l2), (h3, l3) = check_thresholds(thresholds)
  size = outputs["attention"].shape[1:3]
  b1, b2, c = (upsample(outputs[k].astype(jnp.float32), size) for k in ("logits_b1", "logits_b2", "logits_c"))
  cls = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"].astype(jnp.float32), labels).mean()
  loss_b2 = masked_bce(b2, *pseudo_labels(outputs["attention"], h1, l1))
  loss_b1 = masked_bce(b1, *pseudo_labels(jax.nn.sigmoid(b2), h2, l2))
  loss_c = masked_bce(c, *pseudo_labels(outputs["fused_attention"], h3, l3))
  return cls + loss_b2 + loss_b1 + loss_c


class ScoreMap(nnx.Module):
  """3x3 pad 1 conv + ReLU, then (with ``score``) a 1x1 conv to one map; returns (B, h, w) or the NHWC map."""

  def __init__(self, in_features: int, width: int, *, score: bool = True, dtype: Any = None, rngs: nnx.Rngs):
    self.conv = Conv(in_features, width, (3, 3), padding=1, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs)
    self.score = Conv(width, 1, (1, 1), dtype=dtype, kernel_init=CONV_INIT, rngs=rngs) if score else None

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.conv(x))
    return x if self.score is None else self.score(x)[..., 0]


class SpgHead(PoolingHead):
  """The classifier (``PoolingHead``: global pooling -> linear, the standard's ``SPG_A4``) and SPG's score maps.

  ``taps`` are the channels of the two backbone maps ``SPG_B_1a`` and
  ``SPG_B_2a`` read, ``width`` the channels of their convs and the shared one,
  ``c_width`` those of ``SPG_C``'s conv.
  """

  def __init__(self, in_features: int, num_classes: int, *, taps: tuple[int, int], width: int, c_width: int,
               pooling: str = "gap", use_bias: bool = True, dtype: Any = None, rngs: nnx.Rngs):
    super().__init__(in_features, num_classes, pooling=pooling, use_bias=use_bias, dtype=dtype, rngs=rngs)
    self.SPG_B_1a = ScoreMap(taps[0], width, score=False, dtype=dtype, rngs=rngs)
    self.SPG_B_2a = ScoreMap(taps[1], width, score=False, dtype=dtype, rngs=rngs)
    self.SPG_B_shared = ScoreMap(width, width, dtype=dtype, rngs=rngs)
    self.SPG_C = ScoreMap(in_features, c_width, dtype=dtype, rngs=rngs)

  def outputs(self, tap1: jax.Array, tap2: jax.Array, features: jax.Array, labels: jax.Array,
              size: Sequence[int]) -> dict[str, jax.Array]:
    """What ``spg_loss`` needs, from the two taps, the classifier's input and the labels (B,).

    ``attention`` is the label class's map upsampled to ``size`` and min-max
    normalised; ``fused_attention`` the mean of the two upsampled sigmoid
    score maps; both carry no gradient. The score maps stay at their own size.
    """
    logits_b1 = self.SPG_B_shared(self.SPG_B_1a(tap1))
    logits_b2 = self.SPG_B_shared(self.SPG_B_2a(tap2))
    kernel = self.classifier.kernel[...]
    cam = jnp.einsum("bhwk,bk->bhw", features.astype(jnp.float32), jnp.take(kernel.T, labels, axis=0).astype(
        jnp.float32), precision=jax.lax.Precision.HIGHEST)
    attention = acol.normalize_maps(upsample(jax.lax.stop_gradient(cam), size))
    fused = (jax.nn.sigmoid(upsample(logits_b1.astype(jnp.float32), size))
             + jax.nn.sigmoid(upsample(logits_b2.astype(jnp.float32), size))) / 2
    return {"logits": self(features), "logits_b1": logits_b1, "logits_b2": logits_b2,
            "logits_c": self.SPG_C(features), "attention": attention,
            "fused_attention": jax.lax.stop_gradient(fused)}
