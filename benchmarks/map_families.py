"""Score-map families for the WSOL sweep: smooth CAMs and the noisy, fragmented maps that gradient
saliency, SmoothGrad, Integrated Gradients and input-resolution Score-CAM give.

Each family is ``f(rng, size) -> (map, boxes)``: a float64 map min-max normalised to [0, 1] (as
the WSOL standard normalises) and an int64 (1, 4) inclusive ground-truth box. Used by
``bench_localization`` and by the sweep's exactness tests.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

Family = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def _normalise(s: np.ndarray) -> np.ndarray:
  span = s.max() - s.min()
  return (s - s.min()) / span if span > 0 else np.zeros_like(s)


def _random_box(rng: np.random.Generator, size: int) -> np.ndarray:
  x0, y0 = rng.integers(0, max(1, size // 2), 2)
  w, h = rng.integers(max(1, size // 8), max(2, size // 2), 2)
  return np.array([[x0, y0, min(size - 1, x0 + w), min(size - 1, y0 + h)]], np.int64)


def blobs(rng: np.random.Generator, size: int, count: tuple[int, int] = (1, 3)) -> tuple[np.ndarray, np.ndarray]:
  """Sums of ``count`` Gaussians of random size and weight (unnormalised); the first one's 2-sigma box."""
  yy, xx = np.mgrid[:size, :size]
  s = np.zeros((size, size))
  box = None
  for k in range(int(rng.integers(count[0], count[1] + 1))):
    cy, cx = rng.uniform(0, size, 2)
    sy, sx = rng.uniform(size / 28, size / 4.5, 2)
    weight = 1.0 if k == 0 else rng.uniform(0.2, 0.9)
    s += weight * np.exp(-((yy - cy) ** 2 / (2 * sy ** 2) + (xx - cx) ** 2 / (2 * sx ** 2)))
    if box is None:
      box = [max(0, cx - 2 * sx), max(0, cy - 2 * sy), min(size - 1, cx + 2 * sx), min(size - 1, cy + 2 * sy)]
  return s, np.array([box], np.int64)


def smooth(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """1 to 3 Gaussian blobs."""
  s, box = blobs(rng, size)
  return _normalise(s), box


def many_blobs(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """1 to 8 Gaussian blobs, no noise."""
  s, box = blobs(rng, size, (1, 8))
  return _normalise(s), box


def blobs_noise(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """1 to 3 blobs + 3% uniform noise (``0.03 * U(0, 1)`` added before normalising)."""
  s, box = blobs(rng, size)
  return _normalise(s + 0.03 * rng.uniform(size=s.shape)), box


def _ring(rng: np.random.Generator, size: int) -> np.ndarray:
  yy, xx = np.mgrid[:size, :size]
  cy, cx = rng.uniform(size / 4, 3 * size / 4, 2)
  radius = rng.uniform(size / 10, size / 3)
  width = rng.uniform(1.5, max(2.0, size / 20))
  return rng.uniform(0.4, 0.9) * np.exp(-((np.hypot(yy - cy, xx - cx) - radius) ** 2) / (2 * width ** 2))


def blobs_noise_ring(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """The noisy blobs + a ring (hole borders at many levels)."""
  s, box = blobs(rng, size)
  return _normalise(s + _ring(rng, size) + 0.03 * rng.uniform(size=s.shape)), box


def blobs_noise_lines(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """The noisy blobs + one full-width and one full-height line, one pixel thin (components spanning the map)."""
  s, box = blobs(rng, size)
  s[int(rng.integers(0, size)), :] += rng.uniform(0.3, 0.9)
  s[:, int(rng.integers(0, size))] += rng.uniform(0.3, 0.9)
  return _normalise(s + 0.03 * rng.uniform(size=s.shape)), box


def blobs_speckle(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Blobs with 25% of the pixels replaced by uniform values over the map's range (speckle)."""
  s, box = blobs(rng, size)
  s = _normalise(s)
  hit = rng.uniform(size=s.shape) < 0.25
  s[hit] = rng.uniform(size=int(hit.sum()))
  return _normalise(s), box


def coarse_noise(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """14 x 14 Gaussian noise upsampled bilinearly (a random feature map's CAM)."""
  small = rng.normal(size=(14, 14)).astype(np.float32)
  return _normalise(cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float64)), \
      _random_box(rng, size)


def checkerboard(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """A 0/1 checkerboard with random square size (1 pixel: every pixel touches its diagonal neighbours)."""
  cell = int(rng.choice([1, 2, 3, 5, 8, 16]))
  yy, xx = np.mgrid[:size, :size]
  return ((yy // cell + xx // cell) % 2).astype(np.float64), _random_box(rng, size)


def single_pixel(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """One pixel at 1, the rest 0."""
  s = np.zeros((size, size))
  s[tuple(rng.integers(0, size, 2))] = 1.0
  return s, _random_box(rng, size)


def constant(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """A constant map at a random value (what min-max normalisation cannot spread)."""
  return np.full((size, size), float(rng.uniform())), _random_box(rng, size)


FAMILIES: dict[str, Family] = {
    "smooth_1-3_blobs": smooth,
    "blobs_1-8": many_blobs,
    "blobs_noise3": blobs_noise,
    "blobs_noise3_ring": blobs_noise_ring,
    "blobs_noise3_lines": blobs_noise_lines,
    "blobs_speckle25": blobs_speckle,
    "noise_14x14_bilinear": coarse_noise,
    "checkerboard": checkerboard,
    "single_pixel": single_pixel,
    "constant": constant,
}


def sample(name: str, n: int, size: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
  """``n`` maps of a family, stacked, with their boxes."""
  rng = np.random.default_rng(seed)
  pairs = [FAMILIES[name](rng, size) for _ in range(n)]
  return np.stack([m for m, _ in pairs]), [b for _, b in pairs]
