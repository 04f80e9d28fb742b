"""Hide-and-Seek (Singh and Lee, ICCV 2017), as the WSOL evaluation standard trains it.

Each training image is cut into square cells of ``grid_size`` pixels and every
cell is hidden (set to 0 in the normalised input, i.e. to the data set's mean
colour) with probability ``drop_rate``, independently per image and cell. A
network that cannot rely on the most discriminative part learns the others too,
which widens its class maps. Evaluation sees whole images.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def hide_patches(key: jax.Array, images: jax.Array, grid_size: int, drop_rate: float) -> jax.Array:
  """``images`` (N, H, W, C) with random ``grid_size`` x ``grid_size`` cells set to 0.

  Cells start at pixel 0 of each axis, so the last row and column of cells are
  smaller when ``grid_size`` does not divide the side; a grid larger than the
  image is one cell. ``grid_size`` 0 returns the images unchanged. One draw per
  (image, cell), static shapes: jit-able, no loop over the batch.
  """
  if grid_size == 0:
    return images
  n, height, width = images.shape[:3]
  rows, cols = math.ceil(height / grid_size), math.ceil(width / grid_size)
  hidden = jax.random.uniform(key, (n, rows, cols)) < drop_rate
  # Cell index of every pixel: a gather along each axis, cheaper than repeating the cell grid.
  hidden = jnp.take(hidden, jnp.arange(height) // grid_size, axis=1)
  hidden = jnp.take(hidden, jnp.arange(width) // grid_size, axis=2)
  return jnp.where(hidden[..., None], jnp.zeros((), images.dtype), images)
