"""CutMix (Yun et al., ICCV 2019), as the WSOL evaluation standard trains it.

With probability ``prob`` a batch is mixed: one ratio ``lam ~ Beta(beta, beta)``,
one permutation of the batch and one box for the whole batch. With
``cut = floor(H * sqrt(1 - lam))`` the box spans rows ``[r - cut // 2, r + cut // 2)``
around a centre row ``r`` drawn uniformly from ``[0, H)`` (columns the same with
``W``), clipped to the image; inside it every image takes the pixels of its
partner in the permutation. ``lam`` is then recomputed as the part of the image
the box left untouched (``1 - box area / image area``), and the loss weighs the
two labels by it (``mixed_cross_entropy``).

Rows follow the image height and columns its width. The standard's ``rand_bbox``
calls NCHW's height "w" and its width "h" but sizes, centres and slices each
axis with its own extent, so its boxes are these boxes for any aspect ratio.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cutmix(key: jax.Array, images: jax.Array, labels: jax.Array, beta: float, prob: float
           ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """``(mixed images, labels_a, labels_b, lam)`` for ``images`` (N, H, W, C) and integer ``labels`` (N,).

  ``labels_a`` are ``labels``; ``labels_b`` are the labels of the pasted images.
  A batch that is not mixed (probability ``1 - prob``, or ``beta <= 0`` as in
  the standard) comes back unchanged with ``lam = 1`` and ``labels_b = labels``.
  ``lam`` is a float32 scalar. The box is a mask from index comparisons, so the
  shapes are static under jit.
  """
  labels = jnp.asarray(labels)
  if beta <= 0:  # Beta(0, 0) has no samples; prob 0 needs no branch (a uniform draw is never below 0)
    return images, labels, labels, jnp.ones((), jnp.float32)
  n, height, width = images.shape[:3]
  k_mix, k_lam, k_perm, k_row, k_col = jax.random.split(key, 5)
  mixed = jax.random.uniform(k_mix) < prob
  ratio = jnp.sqrt(1.0 - jax.random.beta(k_lam, beta, beta))
  half_rows = jnp.floor(height * ratio).astype(jnp.int32) // 2
  half_cols = jnp.floor(width * ratio).astype(jnp.int32) // 2
  row = jax.random.randint(k_row, (), 0, height)
  col = jax.random.randint(k_col, (), 0, width)
  top, bottom = jnp.clip(row - half_rows, 0, height), jnp.clip(row + half_rows, 0, height)
  left, right = jnp.clip(col - half_cols, 0, width), jnp.clip(col + half_cols, 0, width)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right) & mixed
  perm = jax.random.permutation(k_perm, n)
  images = jnp.where(box[None, :, :, None], images[perm], images)
  area = ((bottom - top) * (right - left)).astype(jnp.float32)
  lam = jnp.where(mixed, 1.0 - area / (height * width), 1.0).astype(jnp.float32)
  return images, labels, jnp.where(mixed, labels[perm], labels), lam


def mixed_cross_entropy(logits: jax.Array, labels_a: jax.Array, labels_b: jax.Array, lam: jax.Array) -> jax.Array:
  """``lam * CE(labels_a) + (1 - lam) * CE(labels_b)``, each the mean softmax cross-entropy over the batch."""
  ce_a = optax.softmax_cross_entropy_with_integer_labels(logits, labels_a).mean()
  ce_b = optax.softmax_cross_entropy_with_integer_labels(logits, labels_b).mean()
  return lam * ce_a + (1.0 - lam) * ce_b
