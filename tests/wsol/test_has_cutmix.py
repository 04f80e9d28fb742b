"""HaS and CutMix, the input-side WSOL methods: cells and boxes checked pixel by pixel, lam and the loss by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from camjax.wsol.cutmix import cutmix, mixed_cross_entropy
from camjax.wsol.has import hide_patches


def _images(n: int, height: int, width: int, channels: int = 3, seed: int = 0) -> jax.Array:
  """Values in [1, 2): no pixel is 0 before hiding, and every pixel of every image differs."""
  return jnp.asarray(1.0 + np.random.default_rng(seed).random((n, height, width, channels)), jnp.float32)


def _cells(height: int, width: int, grid: int) -> list[tuple[slice, slice]]:
  return [(slice(y, min(y + grid, height)), slice(x, min(x + grid, width)))
          for y in range(0, height, grid) for x in range(0, width, grid)]


@pytest.mark.parametrize("height, width, grid", [(16, 16, 4), (10, 13, 4)])
def test_hide_patches_hides_whole_cells_at_the_drop_rate(height, width, grid):
  images = _images(64, height, width)
  hidden = np.asarray(jax.jit(hide_patches, static_argnums=(2, 3))(jax.random.key(0), images, grid, 0.3))
  original = np.asarray(images)
  dropped = []
  for i in range(len(images)):
    for rows, cols in _cells(height, width, grid):
      cell = hidden[i, rows, cols]
      if np.all(cell == 0):
        dropped.append(True)
      else:  # untouched, whole: a cell is never partly hidden
        np.testing.assert_array_equal(cell, original[i, rows, cols])
        dropped.append(False)
  # 64 x (16 or 12) cells: the fraction hidden is 0.3 within five standard deviations.
  assert abs(np.mean(dropped) - 0.3) < 5 * np.sqrt(0.3 * 0.7 / len(dropped))
  per_image = np.asarray(dropped).reshape(len(images), -1).mean(1)
  assert len(set(per_image.tolist())) > 1  # drawn per image, not one pattern for the batch


def test_hide_patches_grid_larger_than_the_image_is_one_cell_and_grid_zero_changes_nothing():
  images = _images(200, 6, 5)
  hidden = np.asarray(hide_patches(jax.random.key(1), images, 8, 0.5))
  whole = np.all(hidden == 0, axis=(1, 2, 3))
  kept = np.all(hidden == np.asarray(images), axis=(1, 2, 3))
  assert np.all(whole ^ kept) and 60 < whole.sum() < 140
  assert hide_patches(jax.random.key(1), images, 0, 0.5) is images
  np.testing.assert_array_equal(hide_patches(jax.random.key(2), images, 2, 0.0), images)
  np.testing.assert_array_equal(hide_patches(jax.random.key(2), images, 2, 1.0), 0.0)


# One batch for the CutMix tests, 16 x 64 so that rows and columns differ, labels = row numbers.
HEIGHT, WIDTH = 16, 64
IMAGES = _images(6, HEIGHT, WIDTH, seed=1)
LABELS = jnp.arange(6, dtype=jnp.int32)


@jax.jit
def _cutmix_draws(prob: jax.Array) -> tuple[jax.Array, ...]:
  """CutMix of IMAGES with keys 0..99 and beta 1 (one program for every test: ``prob`` is traced)."""
  keys = jax.vmap(jax.random.key)(jnp.arange(100))
  return jax.vmap(lambda k: cutmix(k, IMAGES, LABELS, 1.0, prob))(keys)


def _draws(prob: float) -> list[tuple[np.ndarray, ...]]:
  return list(zip(*map(np.asarray, _cutmix_draws(jnp.float32(prob)))))


def _box(mixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Rows and columns where a batch differs from IMAGES (every pixel differs between images)."""
  changed = np.any(mixed != np.asarray(IMAGES), axis=(0, 3))
  return np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))


def test_cutmix_pastes_one_box_from_the_permuted_images_and_lam_is_its_complement():
  images = np.asarray(IMAGES)
  areas = set()
  for mixed, labels_a, labels_b, lam in _draws(1.0):
    np.testing.assert_array_equal(labels_a, LABELS)
    perm = labels_b  # labels are the row numbers: labels_b is the permutation
    assert sorted(perm.tolist()) == list(range(len(images)))
    rows, cols = _box(mixed)
    area = len(rows) * len(cols)
    areas.add(area)
    if area:
      # One rectangle, the same for every image, holding the partner's pixels exactly; the rest untouched.
      assert rows.tolist() == list(range(rows[0], rows[-1] + 1)) and cols.tolist() == list(range(cols[0], cols[-1] + 1))
      box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
      np.testing.assert_array_equal(mixed[box], images[perm][box])
      outside = np.ones((HEIGHT, WIDTH), bool)
      outside[box[1:]] = False
      np.testing.assert_array_equal(mixed[:, outside], images[:, outside])
    # A partner that is the image itself pastes its own pixels: the box shows in the images that moved.
    if np.all(perm == np.arange(len(images))):
      continue
    np.testing.assert_allclose(lam, 1 - area / (HEIGHT * WIDTH), rtol=1e-6)
  assert len(areas) > 20  # lam ~ Beta(1, 1): boxes of many sizes


def test_cutmix_box_sides_follow_height_and_width():
  """On a 16 x 64 input a box clear of the border has about 4 times as many columns as rows, as floor(H r) and
  floor(W r) of one ratio r give (a box cut with H and W swapped would be taller than a quarter of its width)."""
  interior = 0
  for mixed, _, _, _ in _draws(1.0):
    rows, cols = _box(mixed)
    if len(rows) and rows[0] > 0 and cols[0] > 0 and rows[-1] < HEIGHT - 1 and cols[-1] < WIDTH - 1:
      interior += 1  # not clipped: rows = 2 (floor(16 r) // 2), columns = 2 (floor(64 r) // 2)
      assert 4 * len(rows) - 2 <= len(cols) <= 4 * len(rows) + 12, (len(rows), len(cols))
  assert interior >= 5


def test_cutmix_that_does_not_mix_returns_the_batch_and_lam_one():
  for mixed, labels_a, labels_b, lam in _draws(0.0):
    np.testing.assert_array_equal(mixed, IMAGES)
    np.testing.assert_array_equal(labels_a, LABELS)
    np.testing.assert_array_equal(labels_b, LABELS)
    assert float(lam) == 1.0
  mixed, labels_a, labels_b, lam = cutmix(jax.random.key(0), IMAGES, LABELS, 0.0, 1.0)  # beta 0: never mixed
  assert mixed is IMAGES and float(lam) == 1.0 and np.array_equal(labels_b, LABELS)
  # prob 0.5: about half the batches mixed; the others unchanged, with lam 1 and labels_b = labels.
  unmixed = 0
  for mixed, _, labels_b, lam in _draws(0.5):
    if float(lam) == 1.0 and np.array_equal(labels_b, LABELS):
      np.testing.assert_array_equal(mixed, IMAGES)
      unmixed += 1
  assert 30 < unmixed < 70


def test_mixed_cross_entropy_by_hand():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
  labels_a, labels_b, lam = jnp.array([0, 2]), jnp.array([1, 0]), 0.3

  def ce(row, k):
    row = np.asarray(logits[row], np.float64)
    return np.log(np.exp(row).sum()) - row[k]

  expected = lam * (ce(0, 0) + ce(1, 2)) / 2 + (1 - lam) * (ce(0, 1) + ce(1, 0)) / 2
  np.testing.assert_allclose(mixed_cross_entropy(logits, labels_a, labels_b, lam), expected, rtol=1e-6)
  # lam 1 with labels_b = labels_a is plain cross-entropy.
  plain = optax.softmax_cross_entropy_with_integer_labels(logits, labels_a).mean()
  assert float(mixed_cross_entropy(logits, labels_a, labels_a, 1.0)) == float(plain)
