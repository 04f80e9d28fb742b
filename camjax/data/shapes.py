"""``camjax_shapes``: a procedural localization data set that ships with the code.

Each image holds one labelled object on a cluttered background. The class is the
pair (shape family, texture): 4 shapes x 3 textures = 12 classes. Everything
else is random per image and never tells the class: position, scale (25% to 70%
of the image side), aspect, rotation, the object's two colours, the background
(gradient + a random low-contrast texture + noise) and a few distractors whose
shape families (rings, bars, small blobs) never occur as objects and whose
textures are drawn from every texture, so only the object's shape *and* texture
together give the label. The box is the tight box of the object's mask.

Generation needs no download: every example is rendered from its own numpy
Generator seeded with (seed, split, index), so the bytes do not depend on the
order or the process that renders them. Configs set the image size and the split
sizes (``tiny`` for tests, ``px64`` the default, ``px96``, ``px128``); a config
with another seed is a different, equally valid data set.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from camjax.data import boxes, examples, records

SHAPES = ("ellipse", "triangle", "square", "star")
TEXTURES = ("solid", "stripes", "checker")
CLASS_NAMES = tuple(f"{s}_{t}" for s in SHAPES for t in TEXTURES)
DISTRACTOR_SHAPES = ("ring", "bar", "blob")
_SUPERSAMPLE = 4
_DEFAULT_CONFIG = "px64"  # the quickstart's data set; change here to switch the default size


@dataclasses.dataclass(frozen=True)
class Spec:
  """What to render: sizes and counts; the per-example draws come from the seed."""

  image_size: int = 64
  min_scale: float = 0.25
  max_scale: float = 0.70
  max_distractors: int = 3


# ---------------------------------------------------------------- geometry


def _unit_polygon(shape: str, rng: np.random.Generator) -> np.ndarray:
  """Vertices (N, 2) of a shape of radius about 1 centred at 0."""
  if shape == "ellipse":
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], -1)
  if shape == "triangle":
    t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
    return np.stack([np.cos(t), np.sin(t)], -1)
  if shape == "star":
    t = np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.4)
    return np.stack([r * np.cos(t), r * np.sin(t)], -1)
  if shape == "square":
    return np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float) / np.sqrt(2)
  if shape == "bar":
    w = rng.uniform(0.08, 0.18)
    return np.array([(-1, -w), (1, -w), (1, w), (-1, w)], float)
  if shape == "blob":
    n = int(rng.integers(7, 11))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.6, 1.0, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], -1)
  raise ValueError(f"unknown shape {shape!r}")


def _place(poly: np.ndarray, rng: np.random.Generator, size: int, extent: float, aspect: float,
           centre: tuple[float, float] | None = None) -> np.ndarray:
  """Stretch by ``aspect``, rotate at random, scale to a bounding extent of ``extent`` px, move inside the image."""
  p = poly * np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
  th = rng.uniform(0, 2 * np.pi)
  rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
  p = p @ rot.T
  span = (p.max(0) - p.min(0)).max()
  p = (p - (p.max(0) + p.min(0)) / 2) * (extent / span)
  half = (p.max(0) - p.min(0)) / 2
  if centre is None:
    lo, hi = half + 0.5, size - half - 0.5
    centre = rng.uniform(lo, np.maximum(lo, hi))
  return p + np.asarray(centre)


def _coverage(polys: list[np.ndarray], size: int, holes: list[np.ndarray] = ()) -> np.ndarray:
  """Anti-aliased coverage in [0, 1] (size, size) of filled polygons minus holes, by supersampling."""
  s = _SUPERSAMPLE
  canvas = Image.new("L", (size * s, size * s), 0)
  draw = ImageDraw.Draw(canvas)
  for p in polys:
    draw.polygon([tuple(v) for v in (p * s)], fill=255)
  for p in holes:
    draw.polygon([tuple(v) for v in (p * s)], fill=0)
  a = np.asarray(canvas, dtype=np.float32).reshape(size, s, size, s).mean(axis=(1, 3))
  return a / 255.0


# ---------------------------------------------------------------- textures and colours


def _texture(kind: str, rng: np.random.Generator, size: int, extent: float | None = None) -> np.ndarray:
  """Pattern in {0, 1} (size, size): which of two colours each pixel takes.

  The period follows ``extent`` (the painted shape's size) when given, so an
  object's texture shows the same number of stripes or checks at every scale.
  """
  if kind == "solid":
    return np.zeros((size, size), np.float32)
  y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  th = rng.uniform(0, np.pi)
  u = x * np.cos(th) + y * np.sin(th)
  v = -x * np.sin(th) + y * np.cos(th)
  period = max(4.0, rng.uniform(0.2, 0.3) * extent) if extent else max(3.0, rng.uniform(0.06, 0.11) * size)
  off = rng.uniform(0, period, 2)
  if kind == "stripes":
    return (np.mod(u + off[0], period) < period / 2).astype(np.float32)
  if kind == "checker":
    c = np.floor((u + off[0]) / (period / 2)) + np.floor((v + off[1]) / (period / 2))
    return np.mod(c, 2).astype(np.float32)
  if kind == "dots":
    du = np.mod(u + off[0], period) - period / 2
    dv = np.mod(v + off[1], period) - period / 2
    return (du * du + dv * dv < (0.3 * period) ** 2).astype(np.float32)
  raise ValueError(f"unknown texture {kind!r}")


def _colour_pair(rng: np.random.Generator, avoid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Two random RGB colours that differ visibly; the first also differs from ``avoid``."""
  for _ in range(20):
    a = rng.uniform(0, 255, 3)
    if avoid is None or np.abs(a - avoid).sum() > 120:
      break
  for _ in range(20):
    b = rng.uniform(0, 255, 3)
    if np.abs(a - b).sum() > 150:
      break
  return a.astype(np.float32), b.astype(np.float32)


def _paint(img: np.ndarray, alpha: np.ndarray, pattern: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> None:
  colour = c1 + pattern[..., None] * (c2 - c1)
  img += alpha[..., None] * (colour - img)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
  th = rng.uniform(0, 2 * np.pi)
  ramp = (x * np.cos(th) + y * np.sin(th))
  ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
  c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
  img = (c0 + ramp[..., None] * (c1 - c0)).astype(np.float32)
  kind = rng.choice(("stripes", "checker", "dots"))
  pattern = _texture(kind, rng, size)
  tint = rng.uniform(0, 255, 3).astype(np.float32)
  _paint(img, np.full((size, size), rng.uniform(0.15, 0.4), np.float32), pattern, img.mean((0, 1)), tint)
  return img


# ---------------------------------------------------------------- one example


def render(spec: Spec, rng: np.random.Generator, label: int) -> tuple[np.ndarray, np.ndarray]:
  """Render one image of class ``label``; return (uint8 image (S, S, 3), bool mask (S, S))."""
  size = spec.image_size
  shape, texture = SHAPES[label // len(TEXTURES)], TEXTURES[label % len(TEXTURES)]
  img = _background(rng, size)

  # The object's geometry first, so distractors can keep clear of it.
  extent = rng.uniform(spec.min_scale, spec.max_scale) * size
  obj = _place(_unit_polygon(shape, rng), rng, size, extent, rng.uniform(0.7, 1.4))
  ox0, oy0 = obj.min(0)
  ox1, oy1 = obj.max(0)

  for _ in range(int(rng.integers(1, spec.max_distractors + 1))):
    kind = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
    d_extent = rng.uniform(0.12, 0.35) * size if kind != "blob" else rng.uniform(0.06, 0.14) * size
    for _try in range(8):
      if kind == "ring":
        outer = _place(_unit_polygon("ellipse", rng), rng, size, d_extent, rng.uniform(0.8, 1.25))
        c = (outer.max(0) + outer.min(0)) / 2
        polys, holes = [outer], [c + (outer - c) * rng.uniform(0.45, 0.7)]
      else:
        polys, holes = [_place(_unit_polygon(kind, rng), rng, size, d_extent, 1.0)], []
      dx0, dy0 = polys[0].min(0)
      dx1, dy1 = polys[0].max(0)
      inter = max(0.0, min(ox1, dx1) - max(ox0, dx0)) * max(0.0, min(oy1, dy1) - max(oy0, dy0))
      if inter <= 0.15 * max((dx1 - dx0) * (dy1 - dy0), 1e-6):
        break
    else:
      continue
    d_tex = _texture(("solid", "stripes", "checker", "dots")[int(rng.integers(4))], rng, size)
    _paint(img, _coverage(polys, size, holes), d_tex, *_colour_pair(rng))

  alpha = _coverage([obj], size)
  c1, c2 = _colour_pair(rng, avoid=img[alpha > 0.5].mean(0) if (alpha > 0.5).any() else None)
  _paint(img, alpha, _texture(texture, rng, size, extent), c1, c2)
  img += rng.normal(0, rng.uniform(3, 10), img.shape).astype(np.float32)
  return np.clip(np.round(img), 0, 255).astype(np.uint8), alpha >= 0.5


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The Generator of one example: a function of (seed, split, index) only."""
  return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def make_example(spec: Spec, seed: int, split: str, index: int) -> dict[str, Any]:
  """The TFDS record of example ``index`` of ``split``."""
  rng = example_rng(seed, split, index)
  label = int(rng.integers(len(CLASS_NAMES)))
  image, mask = render(spec, rng, label)
  box = boxes.tight_box(mask)
  size = spec.image_size
  return examples.stored_record(records.encode_png(image), label, [box], size, size, f"{split}/{index:06d}",
                                mask=records.encode_png(mask.astype(np.uint8) * 255))


# ---------------------------------------------------------------- builder


class ShapesConfig(tfds.core.BuilderConfig):
  """Image size, split sizes and seed of a ``camjax_shapes`` variant (name it uniquely)."""

  def __init__(self, *, image_size: int, train: int, validation: int, test: int, seed: int = 0,
               min_scale: float = 0.25, max_scale: float = 0.70, max_distractors: int = 3, **kwargs):
    kwargs.setdefault("description", f"{image_size} px, {train}/{validation}/{test} examples, seed {seed}")
    super().__init__(**kwargs)
    if image_size < 16:
      raise ValueError(f"camjax_shapes image_size must be >= 16, got {image_size}")
    if not 0 < min_scale <= max_scale <= 1:
      raise ValueError(f"camjax_shapes needs 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
    self.spec = Spec(image_size=image_size, min_scale=min_scale, max_scale=max_scale, max_distractors=max_distractors)
    self.split_sizes = {"train": train, "validation": validation, "test": test}
    self.seed = seed


class CamjaxShapes(records.BuilderMixin, tfds.core.GeneratorBasedBuilder):
  """Procedural shapes-and-textures localization data set (12 classes, boxes and masks)."""

  VERSION = tfds.core.Version("3.0.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": "Object textures scale with the object (4 to 5 periods across it); objects 20% to 70% of the side.",
      "2.0.0": "Shapes ellipse, triangle, square, star (a sharper star; the cross, too close to the star at 64 px, "
               "is gone).",
      "3.0.0": "Objects 25% to 70% of the side (16 px at 64 px: smaller ones were guesses), one to three "
               "distractors, slightly less pixel noise.",
  }
  BUILDER_CONFIGS = [
      ShapesConfig(name="tiny", image_size=32, train=192, validation=64, test=64),
      ShapesConfig(name="px64_small", image_size=64, train=3_000, validation=300, test=500),
      ShapesConfig(name="px64", image_size=64, train=10_000, validation=2_000, test=2_000),
      ShapesConfig(name="px96", image_size=96, train=10_000, validation=2_000, test=2_000),
      ShapesConfig(name="px128", image_size=128, train=20_000, validation=2_000, test=2_000),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = _DEFAULT_CONFIG

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=examples.features(with_mask=True, names=list(CLASS_NAMES)),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split, n) for split, n in self.builder_config.split_sizes.items()}

  def _generate_examples(self, split: str, n: int):
    cfg = self.builder_config
    for index in range(n):
      yield f"{split}/{index:06d}", make_example(cfg.spec, cfg.seed, split, index)
