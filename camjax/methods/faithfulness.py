"""Faithfulness of saliency maps: does the model's confidence follow the pixels a map calls relevant?

    scores = score(model, images, maps, class_ids=None)   # {metric: (B, K) float32}

``images`` (B, H, W, C) in model-input space (what the model is called on),
``maps`` (B, K, H, W) at the image's resolution (``upsample=True`` of the
methods), ``class_ids`` None (top-1 of the model on ``images``), (B,) or
(B, K) as for the methods. Every metric is per image and target; the number a
paper or library reports for a data set is the mean over images. The model is
any ``nnx.Module`` whose ``__call__(images)`` returns ``(logits, aux)``; it runs
in eval mode.

The "confidence" is the softmax probability of the class
(``confidence="probability"``, the papers' choice) or its logit
(``confidence="logit"``, pytorch-grad-cam's ``ClassifierOutputTarget`` and
torch-cam's default ``logits_fn=None``).

* ``confidence_change``: Average Drop and Increase in Confidence (Grad-CAM++).
* ``deletion_insertion``: deletion and insertion AUC (RISE).
* ``road``: ROAD with noisy linear imputation, MoRF, LeRF and combined.
* ``score``: any of ``METRICS``, calling the three above.

Every perturbed image of every image, target and step runs through the model
as batched forward passes, ``chunk_size`` inputs at a time (``lax.map``), inside
one ``jax.jit`` per family, shape and option set; results do not depend on
``chunk_size`` beyond float rounding (and ROAD's solver tolerance).
``linear_imputation`` (ROAD's infilling), ``blur`` and ``blur_kernel`` (RISE's
insertion start) are public too.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from camjax.errors import UserError
from camjax.methods._core import (
    HIGHEST, Net, check_ids, check_images, choice, chunked, normalize_maps, positive, resolve_ids, take_scores)

METRICS = ("average_drop", "average_increase", "deletion_auc", "insertion_auc", "road_morf", "road_lerf",
           "road_combined")
CONFIDENCES = ("probability", "logit")
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
# ROAD's noisy linear imputation (Rong et al. 2022, and pytorch-grad-cam's copy of the authors' code): an
# imputed pixel is the weighted mean of its 8 neighbours inside the image, 1/6 for the 4 direct ones, 1/12
# for the 4 diagonal ones; (row, column) offsets.
NEIGHBOUR_WEIGHTS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
                     ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
FAMILY_OF = {"average_drop": "confidence_change", "average_increase": "confidence_change",
             "deletion_auc": "deletion_insertion", "insertion_auc": "deletion_insertion",
             "road_morf": "road", "road_lerf": "road", "road_combined": "road"}


# ---------------------------------------------------------------------------------------------- shared parts


def _both(logits: jax.Array, ids: jax.Array) -> jax.Array:
  """logits (n, N), ids (n, K) -> (n, K, 2) float32: each class's probability and logit (``CONFIDENCES``).

  The jitted cores return both, so switching ``confidence`` does not compile again.
  """
  logits = logits.astype(jnp.float32)
  return jnp.stack([take_scores(jax.nn.softmax(logits, axis=-1), ids), take_scores(logits, ids)], axis=-1)


def _pick(logits: jax.Array, ids: jax.Array) -> jax.Array:
  """logits (n, N), ids (n,) -> (n, 2): the confidences of each row's class."""
  return _both(logits, ids[:, None])[:, 0]


def _reference(net: Net, images: jax.Array, class_ids: jax.Array | None):
  """One forward pass on the unperturbed images -> targets (B, K) and their confidences (B, K, 2)."""
  logits = net(images)[0]
  ids = resolve_ids(class_ids, logits)
  return ids, _both(logits, ids)


def _decode(idx: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
  """Flat job indices -> one index per axis of ``sizes`` (row-major, the last axis fastest)."""
  out = []
  for size in reversed(sizes):
    out.append(idx % size)
    idx = idx // size
  return out[::-1]


def _chunks(fn, total: int, chunk_size: int) -> jax.Array:
  """``chunked`` with chunks of equal size at most ``chunk_size``: the padding of the last one is under one per chunk.

  (36 jobs at ``chunk_size=32`` run as 2 x 18, not 2 x 32.)
  """
  groups = math.ceil(total / max(1, min(chunk_size, total)))
  return chunked(fn, total, math.ceil(total / groups))


_FAMILIES: dict[str, Any] = {}


@functools.partial(jax.jit, static_argnames=("graphdef", "family", "options"))
def _run(graphdef, state, images, maps, class_ids, key, extra, *, family: str, options: tuple):
  return _FAMILIES[family](Net(graphdef, state, ()), images, maps, class_ids, key, extra, **dict(options))


def _static(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_static(v) for v in value)
  if isinstance(value, (np.generic,)):
    return value.item()
  return value


def _call(family: str, model: nnx.Module, images: Any, maps: Any, class_ids: Any, *, key: jax.Array | None = None,
          extra: Any = None, **options) -> Any:
  """Check the inputs outside jit (one-line ``UserError``s, no wasted compile) and run the family's jitted core."""
  images, maps, ids = check_inputs(images, maps, class_ids)
  graphdef, state = nnx.split(model)
  if key is None:
    key = jax.random.key(0)
  return _run(graphdef, state, images, maps, ids, key, extra, family=family,
              options=tuple(sorted((k, _static(v)) for k, v in options.items())))


def check_inputs(images: Any, maps: Any, class_ids: Any) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """images (B, H, W, C), maps (B, K, H, W) float32, class ids None or (B, K) int32; else one-line ``UserError``."""
  images = check_images(images)
  ids = check_ids(images, class_ids)
  maps = jnp.asarray(maps)
  batch, height, width = images.shape[:3]
  targets = 1 if ids is None else ids.shape[1]
  if maps.ndim != 4 or maps.shape[0] != batch or maps.shape[2:] != (height, width):
    raise UserError(f"maps must be (B, K, H, W) = ({batch}, K, {height}, {width}) for images of shape "
                    f"{tuple(images.shape)} (resize maps to the image first, e.g. upsample=True), "
                    f"got shape {tuple(maps.shape)}")
  if maps.shape[1] != targets:
    what = "class_ids is None (top-1: one target)" if ids is None else f"class_ids has K={targets}"
    raise UserError(f"maps have K={maps.shape[1]} targets but {what}; give one map per target")
  if not jnp.issubdtype(maps.dtype, jnp.floating) and not jnp.issubdtype(maps.dtype, jnp.integer):
    raise UserError(f"maps must be real numbers, got dtype {maps.dtype}")
  return images, maps.astype(jnp.float32), ids


def _confidence_index(confidence: str) -> int:
  return CONFIDENCES.index(choice("confidence", confidence, CONFIDENCES))


def _number(name: str, value: Any, low: float = -math.inf, *, open_low: bool = False) -> float:
  try:
    out = float(value)
  except (TypeError, ValueError):
    raise UserError(f"{name} must be a number, got {value!r}") from None
  if not math.isfinite(out) or out < low or (open_low and out == low):
    bound = f"> {low:g}" if open_low else f">= {low:g}"
    raise UserError(f"{name} must be a finite number {bound}, got {value!r}")
  return out


def _subset(name: str, value: str | Sequence[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
  """One name or several, each in ``allowed``, without repeats, in the given order."""
  names = tuple(dict.fromkeys([value] if isinstance(value, str) else value))
  if not names:
    raise UserError(f"{name} must name {' or '.join(map(repr, allowed))} or both")
  for item in names:
    choice(name, item, allowed)
  return names


# ------------------------------------------------------------------------------------- confidence change


def _confidence_change(net, images, maps, class_ids, key, normalize, *, chunk_size):
  ids, y = _reference(net, images, class_ids)
  batch, targets = ids.shape
  masks = jnp.where(normalize, normalize_maps(maps), maps)

  def scores(idx):
    b, k = _decode(idx, (batch, targets))
    masked = images[b] * masks[b, k][..., None].astype(images.dtype)
    return _pick(net(masked)[0], ids[b, k])

  return y, _chunks(scores, batch * targets, chunk_size).reshape(batch, targets, 2)


_FAMILIES["confidence_change"] = _confidence_change


def confidence_change(model: nnx.Module, images: Any, maps: Any, class_ids: Any = None, *, chunk_size: int = 32,
                      confidence: str = "probability", relative: bool = True, normalize: bool = True,
                      eps: float = 1e-7) -> dict[str, jax.Array]:
  """Average Drop and Increase in Confidence (Chattopadhay et al., "Grad-CAM++", WACV 2018, Sec. 4.1).

  ``Y`` = confidence of the class on the image, ``O`` = on ``image * map``, the
  map min-max scaled to [0, 1] (``normalize``; a constant map scales to zeros)
  and multiplied in model-input space, as both libraries do. Per image and
  target (B, K) float32:

  * ``average_drop`` = ``max(0, Y - O) / (Y + eps)``, in [0, 1] for probabilities;
  * ``average_increase`` = 1.0 if ``O > Y`` (strictly) else 0.0.

  The paper reports both as percentages: 100 x the mean over images. The
  defaults follow the paper and torch-cam 0.5.0 (``ClassificationMetric`` with
  ``logits_fn=softmax``, which divides by ``Y + 1e-7``). pytorch-grad-cam 1.5.7
  (``DropInConfidence``) reports the absolute drop ``max(0, Y - O)``, not
  divided by ``Y``: ``relative=False``. Its ``IncreaseInConfidence`` is
  ``O - Y > 0``, the same as here. The libraries report fractions (no x100)
  and score the logit unless given a softmax (``confidence="logit"``).
  """
  settings = _confidence_change_settings(chunk_size=chunk_size, confidence=confidence, relative=relative,
                                         normalize=normalize, eps=eps)
  return _confidence_change_run(model, images, maps, class_ids, **settings)


def _confidence_change_settings(*, chunk_size=32, confidence="probability", relative=True, normalize=True, eps=1e-7):
  return dict(chunk_size=positive("chunk_size", chunk_size), which=_confidence_index(confidence),
              relative=bool(relative), normalize=bool(normalize), eps=_number("eps", eps, 0.0))


def _confidence_change_run(model, images, maps, class_ids, *, chunk_size, which, relative, normalize, eps):
  y, o = _call("confidence_change", model, images, maps, class_ids, extra=jnp.asarray(normalize),
               chunk_size=chunk_size)
  y, o = y[..., which], o[..., which]
  drop = jnp.maximum(y - o, 0.0)
  return {"average_drop": drop / (y + eps) if relative else drop, "average_increase": (o > y).astype(jnp.float32)}


# ------------------------------------------------------------------------------------ deletion / insertion


def blur_kernel(size: int = 11, sigma: float = 5.0) -> np.ndarray:
  """RISE's blur (``gkern(klen=11, nsig=5)`` of the authors' ``evaluation.py``): (size, size) float32.

  ``scipy.ndimage.gaussian_filter(delta, sigma)`` of a centred delta in a
  size x size array, so the Gaussian (truncated at 4 sigma) is folded back at
  the array's border ("reflect"), exactly as the authors build it.
  """
  from scipy import ndimage

  delta = np.zeros((size, size))
  delta[size // 2, size // 2] = 1.0
  return ndimage.gaussian_filter(delta, sigma).astype(np.float32)


def blur(images: jax.Array, size: int = 11, sigma: float = 5.0) -> jax.Array:
  """Each channel of (B, H, W, C) ``images`` convolved with ``blur_kernel``, zero padding: RISE's insertion start."""
  channels = images.shape[-1]
  kernel = jnp.asarray(np.tile(blur_kernel(size, sigma)[:, :, None, None], (1, 1, 1, channels)))
  pad = size // 2
  out = jax.lax.conv_general_dilated(images.astype(jnp.float32), kernel, (1, 1), [(pad, pad), (pad, pad)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels,
                                     precision=HIGHEST)
  return out.astype(images.dtype)


_blur = jax.jit(blur, static_argnums=(1, 2))


def step_counts(pixels: int, steps: int) -> np.ndarray:
  """Pixels perturbed after each of ``steps`` equal increments: ``floor(i * pixels / steps)``, i = 0..steps."""
  return (np.arange(steps + 1, dtype=np.int64) * pixels) // steps


def _deletion_insertion(net, images, maps, class_ids, key, extra, *, steps, chunk_size, curves):
  baseline, start = extra
  ids, y = _reference(net, images, class_ids)
  batch, targets = ids.shape
  height, width = images.shape[1:3]
  pixels = height * width
  counts = step_counts(pixels, steps)
  fractions = jnp.asarray(counts / pixels, jnp.float32)
  # Rank of every pixel, most relevant first; ties in pixel order (torch-cam's stable descending sort).
  # Adding 0.0 turns -0.0 into 0.0, which a sort would otherwise put apart.
  order = jnp.argsort(-(maps.reshape(batch, targets, pixels) + 0.0), axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1).astype(jnp.int32).reshape(batch, targets, height, width)
  inserting = jnp.asarray([c == "insertion" for c in curves])
  count_table = jnp.asarray(counts, jnp.int32)

  def scores(idx):
    b, k, c, s = _decode(idx, (batch, targets, len(curves), steps))
    ins = inserting[c]
    # Deletion's points 1..steps (point 0 is the image), insertion's 0..steps-1 (point `steps` is the image).
    count = count_table[s + jnp.where(ins, 0, 1)]
    moved = (ranks[b, k] < count[:, None, None])[..., None]
    deleted = jnp.where(moved, baseline[b], images[b])
    inserted = jnp.where(moved, images[b], start[b])
    x = jnp.where(ins[:, None, None, None], inserted, deleted)
    return _pick(net(x)[0], ids[b, k])

  total = batch * targets * len(curves) * steps
  points = jnp.moveaxis(_chunks(scores, total, chunk_size).reshape(batch, targets, len(curves), steps, 2), -1, 2)
  y = y[..., None]  # (B, K, 2, 1): each curve along the last axis
  out = {}
  for c, curve in enumerate(curves):
    if curve == "deletion":
      values = jnp.concatenate([y, points[..., c, :]], axis=-1)
    else:
      values = jnp.concatenate([points[..., c, :], y], axis=-1)
    widths = fractions[1:] - fractions[:-1]
    out[f"{curve}_auc"] = jnp.sum(widths * (values[..., 1:] + values[..., :-1]) / 2, axis=-1)
  return out


_FAMILIES["deletion_insertion"] = _deletion_insertion


def deletion_insertion(model: nnx.Module, images: Any, maps: Any, class_ids: Any = None, *, steps: int = 20,
                       chunk_size: int = 32, confidence: str = "probability", baseline: Any = 0.0,
                       insertion_from: str = "blur", blur_size: int = 11, blur_sigma: float = 5.0,
                       curves: Sequence[str] = ("deletion", "insertion")) -> dict[str, jax.Array]:
  """Deletion and insertion AUC (Petsiuk et al., "RISE", BMVC 2018, Sec. 4.1): (B, K) float32 each.

  Pixels are ranked by map value, most relevant first (ties in pixel order, as
  torch-cam's stable sort); the map's scale does not matter. After step i of
  ``steps`` equal increments, the ``n_i = floor(i H W / steps)`` first pixels
  are (all channels)

  * ``deletion_auc``: replaced by ``baseline`` (default 0 in model-input space,
    as RISE and torch-cam; a number or an array broadcastable to ``images``);
  * ``insertion_auc``: copied from the image into a blurred copy of it
    (``insertion_from="blur"``: RISE's 11 x 11, sigma 5 Gaussian with zero
    padding, see ``blur_kernel``) or into ``baseline``
    (``insertion_from="baseline"``, torch-cam 0.5.0's ``DeletionInsertionMetric``).

  The class's confidence at each of the ``steps + 1`` points (the end that is
  the unperturbed image reuses its forward pass) is integrated by the
  trapezoidal rule over the perturbed fraction ``n_i / (H W)`` in [0, 1].
  Deletion is better low, insertion high; papers report the mean over images
  (RISE as a fraction). RISE perturbs a fixed 224 pixels per step (224 steps
  at 224 px); torch-cam takes ``ceil(H W / steps)`` pixels per step with a
  shorter last one: the same points as here when ``steps`` divides H x W.
  ``curves`` picks which of the two to compute.
  """
  settings = _deletion_insertion_settings(steps=steps, chunk_size=chunk_size, confidence=confidence,
                                          baseline=baseline, insertion_from=insertion_from, blur_size=blur_size,
                                          blur_sigma=blur_sigma, curves=curves)
  return _deletion_insertion_run(model, images, maps, class_ids, **settings)


def _deletion_insertion_settings(*, steps=20, chunk_size=32, confidence="probability", baseline=0.0,
                                 insertion_from="blur", blur_size=11, blur_sigma=5.0,
                                 curves=("deletion", "insertion")):
  curves = _subset("curves", curves, ("deletion", "insertion"))
  blur_size = positive("blur_size", blur_size)
  if blur_size % 2 == 0:
    raise UserError(f"blur_size must be odd (the blur keeps the image's size), got {blur_size}")
  if not isinstance(baseline, (int, float, np.ndarray, jax.Array)) or isinstance(baseline, bool):
    raise UserError(f"baseline must be a number or an array broadcastable to the images, got {baseline!r}")
  return dict(steps=positive("steps", steps), chunk_size=positive("chunk_size", chunk_size),
              which=_confidence_index(confidence), baseline=baseline,
              insertion_from=choice("insertion_from", insertion_from, ("blur", "baseline")), blur_size=blur_size,
              blur_sigma=_number("blur_sigma", blur_sigma, 0.0, open_low=True), curves=curves)


def _deletion_insertion_run(model, images, maps, class_ids, *, steps, chunk_size, which, baseline, insertion_from,
                            blur_size, blur_sigma, curves):
  images, _, _ = check_inputs(images, maps, class_ids)
  try:
    base = jnp.broadcast_to(jnp.asarray(baseline, images.dtype), images.shape)
  except (TypeError, ValueError):
    raise UserError(f"baseline must be a number or an array broadcastable to the images' shape "
                    f"{tuple(images.shape)}, got shape {np.shape(baseline)}") from None
  start = _blur(images, blur_size, blur_sigma) if "insertion" in curves and insertion_from == "blur" else base
  out = _call("deletion_insertion", model, images, maps, class_ids, extra=(base, start), steps=steps,
              chunk_size=chunk_size, curves=curves)
  return {name: value[..., which] for name, value in out.items()}


# ----------------------------------------------------------------------------------------------------- ROAD


def _neighbour_sum(x: jax.Array) -> jax.Array:
  """(..., H, W) -> sum of ``NEIGHBOUR_WEIGHTS`` x the neighbours inside the image (outside ones count 0)."""
  height, width = x.shape[-2:]
  pad = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])
  out = jnp.zeros_like(x)
  for (dr, dc), weight in NEIGHBOUR_WEIGHTS:
    out = out + weight * pad[..., 1 + dr:1 + dr + height, 1 + dc:1 + dc + width]
  return out


def _impute(images: jax.Array, keep: jax.Array, draws: jax.Array, tol: float, maxiter: int) -> jax.Array:
  """(n, H, W, C) images, (n, H, W) keep, (n, H, W, C) noise -> imputed images, every image and channel alike.

  The removed pixels (``keep`` False) solve ``d_i x_i - sum_j w_ij x_j = 0``:
  ``d_i`` is the sum of the weights of the neighbours inside the image, the sum
  runs over them, kept neighbours are known. On the whole grid the operator
  ``r (d x - W(r x)) + (1 - r) x`` (``r`` = removed) is symmetric positive
  definite (weakly diagonally dominant, strictly next to kept pixels), so
  conjugate gradients (Jacobi-preconditioned) solve it matrix-free.
  """
  x = jnp.moveaxis(images.astype(jnp.float32), -1, 1)  # (n, C, H, W)
  kept = keep.astype(jnp.float32)[:, None]  # (n, 1, H, W)
  removed = 1.0 - kept
  degree = _neighbour_sum(jnp.ones(keep.shape[-2:], jnp.float32))

  def operator(v):
    return removed * (degree * v - _neighbour_sum(removed * v)) + kept * v

  rhs = removed * _neighbour_sum(kept * x)
  diagonal = removed * degree + kept
  inverse_diagonal = 1.0 / jnp.where(diagonal > 0, diagonal, 1.0)  # 0 only for a removed pixel of a 1 x 1 image
  solution = _conjugate_gradients(operator, rhs, inverse_diagonal, tol, maxiter)
  out = kept * x + removed * (solution + jnp.moveaxis(draws, -1, 1))
  return jnp.moveaxis(out, 1, -1).astype(images.dtype)


def _conjugate_gradients(operator, rhs: jax.Array, inverse_diagonal: jax.Array, tol: float, maxiter: int):
  """Independent SPD systems over the leading axes of (..., H, W) ``rhs``, by Jacobi-preconditioned CG from 0.

  A system stops changing once ``|r| <= tol |rhs|`` (scipy's ``cg`` test); all
  stop after ``maxiter`` steps. Written out for batches rather than a vmapped
  ``jax.scipy.sparse.linalg.cg``, whose ``custom_linear_solve`` traces the
  solve twice and whose vmapped loop selects every state array per system.
  """

  def dot(a, b):
    return jnp.sum(a * b, axis=(-2, -1), keepdims=True)

  limit = tol * tol * dot(rhs, rhs)

  def step(state):
    x, r, p, rz, rr, k = state
    active = rr > limit
    ap = operator(p)
    alpha = rz / jnp.where(active, dot(p, ap), 1.0)
    x = jnp.where(active, x + alpha * p, x)
    r = jnp.where(active, r - alpha * ap, r)
    z = inverse_diagonal * r
    rz_next = jnp.where(active, dot(r, z), rz)
    p = jnp.where(active, z + (rz_next / jnp.where(active, rz, 1.0)) * p, p)
    return x, r, p, rz_next, dot(r, r), k + 1

  z = inverse_diagonal * rhs
  start = (jnp.zeros_like(rhs), rhs, z, dot(rhs, z), dot(rhs, rhs), 0)
  return jax.lax.while_loop(lambda s: jnp.any(s[4] > limit) & (s[5] < maxiter), step, start)[0]


def _draws(keys: jax.Array, shape: tuple[int, ...], noise: Any, noisy: bool) -> jax.Array:
  """noise x N(0, 1) of ``shape`` (H, W, C) per key -> (n, H, W, C); zeros without drawing unless ``noisy``."""
  if not noisy:  # the random bits take longer to compile than the solve
    return jnp.zeros((keys.shape[0],) + tuple(shape), jnp.float32)
  return noise * jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


@functools.partial(jax.jit, static_argnames=("noisy", "tol", "maxiter"))
def _imputation(images, keep, key, noise, *, noisy, tol, maxiter):
  draws = _draws(jax.random.split(key, images.shape[0]), images.shape[1:], noise, noisy)
  return _impute(images, keep, draws, tol, maxiter)


def linear_imputation(images: Any, keep: Any, *, noise: float = 0.0, key: jax.Array | None = None,
                      tol: float = 1e-6, maxiter: int = 2000) -> jax.Array:
  """ROAD's noisy linear imputation of (B, H, W, C) ``images`` where (B, H, W) ``keep`` is False.

  Every removed pixel becomes the weighted mean of its 8 neighbours inside the
  image (``NEIGHBOUR_WEIGHTS``: 1/6 direct, 1/12 diagonal, renormalised at the
  border), removed neighbours being unknowns too: one sparse linear system per
  image and channel, the same as pytorch-grad-cam 1.5.7's ``NoisyLinearImputer``
  (which solves it exactly with ``scipy.sparse.linalg.spsolve``). Here it is
  solved on the device by preconditioned conjugate gradients, batched, to a
  relative residual ``tol`` or ``maxiter`` iterations. Then ``noise`` x N(0, 1)
  is added to every removed pixel (pytorch-grad-cam's default 0.01). With
  every pixel removed (e.g. ROAD on a constant map) the system is singular:
  the image becomes 0 (plus noise) where pytorch-grad-cam's solve fails.
  At 224 px with 90% removed, ``tol=1e-6`` takes a few hundred iterations and
  agrees with ``spsolve`` to about 1e-4 (float32).
  """
  images = check_images(images)
  keep = jnp.asarray(keep)
  if keep.shape != images.shape[:3]:
    raise UserError(f"keep must be (B, H, W) = {tuple(images.shape[:3])}, got shape {tuple(keep.shape)}")
  noise = _number("noise", noise, 0.0)
  return _imputation(images, keep.astype(bool), jax.random.key(0) if key is None else key, jnp.float32(noise),
                     noisy=noise != 0, tol=_number("tol", tol, 0.0, open_low=True),
                     maxiter=positive("maxiter", maxiter))


def _percentile_table(percentiles: Sequence[float], n: int) -> tuple[np.ndarray, ...]:
  """numpy's ``percentile(x, p)`` ("linear", p a Python number) of n float32 values, as arithmetic on sorted x.

  Returns per percentile the lower and upper index, the weight t in float32,
  ``1 - t`` in float32 and whether numpy takes the upper form (t >= 0.5).
  """
  lo, hi, t, one_minus_t, upper = [], [], [], [], []
  for p in percentiles:
    q = p / 100
    virtual = n * q + (1 + q * (1 - 1 - 1)) - 1  # numpy's _compute_virtual_index with alpha = beta = 1
    below = math.floor(virtual)
    frac = virtual - below
    if virtual >= n - 1:
      below, frac = n - 1, 0.0
    elif virtual < 0:
      below, frac = 0, 0.0
    lo.append(below)
    hi.append(min(below + 1, n - 1))
    t.append(frac)
    one_minus_t.append(1 - frac)
    upper.append(frac >= 0.5)
  return (np.asarray(lo, np.int32), np.asarray(hi, np.int32), np.asarray(t, np.float32),
          np.asarray(one_minus_t, np.float32), np.asarray(upper, bool))


def _threshold(values: jax.Array, pi: jax.Array, table: tuple[jax.Array, ...]) -> jax.Array:
  """(n,) values -> numpy's percentile ``table[pi]`` of them.

  Same float32 formula as numpy; XLA may fuse its multiply-add, which can move
  the threshold by one ulp, so the pixels kept (``value < threshold``) can differ
  only where two map values are a few ulps apart.
  """
  lo, hi, t, one_minus_t, upper = table
  ordered = jnp.sort(values)
  a, b = ordered[lo[pi]], ordered[hi[pi]]
  diff = b - a
  return jnp.where(upper[pi], b - diff * one_minus_t[pi], a + diff * t[pi])


def _road(net, images, maps, class_ids, key, extra, *, percentiles, orders, noise, chunk_size, tol, maxiter,
          solve_batch):
  ids, y = _reference(net, images, class_ids)
  batch, targets = ids.shape
  height, width = images.shape[1:3]
  scaled = normalize_maps(maps)
  table = tuple(jnp.asarray(a) for a in _percentile_table(percentiles, height * width))
  least = jnp.asarray([o == "lerf" for o in orders])
  codes = jnp.asarray([("morf", "lerf").index(o) for o in orders], jnp.int32)

  def keep_mask(b, k, o, pi):
    # pytorch-grad-cam's RemoveMostRelevantFirst: keep the pixels strictly below the map's percentile;
    # RemoveLeastRelevantFirst does the same on 1 - map.
    v = jnp.where(least[o], 1.0 - scaled[b, k], scaled[b, k])
    return v < _threshold(v.reshape(-1), pi, table)

  def impute(jobs):
    b, k, o, pi = jobs
    keep = jax.vmap(keep_mask)(b, k, o, pi)
    job = ((b * targets + k) * 2 + codes[o]) * len(percentiles) + pi  # the same draw whatever is computed
    draws = _draws(jax.vmap(lambda j: jax.random.fold_in(key, j))(job), images.shape[1:], noise, noise != 0)
    return _impute(images[b], keep, draws, tol, maxiter)

  def scores(idx):
    jobs = _decode(idx, (batch, targets, len(orders), len(percentiles)))
    # The imputations run solve_batch at a time: a batched solve runs until its slowest member converges.
    group = min(solve_batch, idx.shape[0])
    groups = -(-idx.shape[0] // group)
    padded = [jnp.pad(j, (0, groups * group - idx.shape[0])).reshape(groups, group) for j in jobs]
    x = jax.lax.map(impute, tuple(padded)).reshape((groups * group,) + images.shape[1:])[:idx.shape[0]]
    return _pick(net(x)[0], ids[jobs[0], jobs[1]])

  total = batch * targets * len(orders) * len(percentiles)
  imputed = _chunks(scores, total, chunk_size).reshape(batch, targets, len(orders), len(percentiles), 2)
  return (imputed - y[:, :, None, None]).mean(axis=3)  # (B, K, orders, 2): mean change over the percentiles


_FAMILIES["road"] = _road


def road(model: nnx.Module, images: Any, maps: Any, class_ids: Any = None, *,
         percentiles: Sequence[float] = ROAD_PERCENTILES, orders: Sequence[str] = ("morf", "lerf"),
         noise: float = 0.01, key: jax.Array | None = None, chunk_size: int = 32, confidence: str = "probability",
         tol: float = 1e-6, maxiter: int = 2000, solve_batch: int | None = None) -> dict[str, jax.Array]:
  """ROAD, RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
  Methods", ICML 2022), as pytorch-grad-cam 1.5.7 (``pytorch_grad_cam.metrics.road``) defines it.

  For each percentile p of ``percentiles`` the pixels to remove are chosen by
  a threshold ``t = numpy.percentile(map, p)`` (linear interpolation) on the
  min-max scaled map:

  * MoRF (``ROADMostRelevantFirst``): the pixels with ``map >= t`` are removed,
    i.e. the (100 - p)% most relevant ones;
  * LeRF (``ROADLeastRelevantFirst``): the same on ``1 - map``, removing the
    (100 - p)% least relevant ones.

  So p is the share kept, as in pytorch-grad-cam; the paper's "remove p%" is
  percentile 100 - p. The default p = 10, 20, ..., 90 (``ROADCombined``'s)
  is symmetric, so the averages below do not depend on the convention. The
  removed pixels are filled by ``linear_imputation`` plus ``noise`` x N(0, 1)
  (default 0.01, the reference's, drawn from ``key``), and the score is the
  class's confidence change, imputed minus original (pytorch-grad-cam's
  ``PerturbationConfidenceMetric``), averaged over the percentiles
  (``ROAD*Average``). Per image and target (B, K) float32:

  * ``road_morf``: mean change when removing the most relevant (better low);
  * ``road_lerf``: mean change when removing the least relevant (better high);
  * ``road_combined``: ``(road_lerf - road_morf) / 2`` (``ROADCombined``, better high).

  The reported number is the mean over images (a fraction, as pytorch-grad-cam;
  the paper plots accuracy after removal against p instead). pytorch-grad-cam
  scores whatever its targets return: use its ``ClassifierOutputSoftmaxTarget``
  to compare with the default ``confidence="probability"``. ``orders`` picks
  MoRF, LeRF or both (combined needs both); a single percentile,
  e.g. ``percentiles=(80,)``, is ``ROADMostRelevantFirst(percentile=80)``.
  The solve stops at relative residual ``tol`` or ``maxiter`` iterations.

  Each chunk of ``chunk_size`` imputed images goes through the model as one
  batch; the imputations are solved ``solve_batch`` at a time (default 1 on
  CPU, where a batched solve waits for its slowest member, else
  ``chunk_size``). ROAD is the costly family: at 224 px, removing 90% of an
  image takes several hundred CG iterations; on a CPU the 18 default
  imputations of an image take seconds, as the reference's ``spsolve`` does.
  """
  settings = _road_settings(percentiles=percentiles, orders=orders, noise=noise, chunk_size=chunk_size,
                            confidence=confidence, tol=tol, maxiter=maxiter, solve_batch=solve_batch)
  return _road_run(model, images, maps, class_ids, key=key, **settings)


def _road_settings(*, percentiles=ROAD_PERCENTILES, orders=("morf", "lerf"), noise=0.01, chunk_size=32,
                   confidence="probability", tol=1e-6, maxiter=2000, solve_batch=None):
  if isinstance(percentiles, (int, float)):
    percentiles = (percentiles,)
  try:
    percentiles = tuple(float(p) for p in percentiles)
  except (TypeError, ValueError):
    percentiles = ()
  if not percentiles or any(not 0 <= p <= 100 for p in percentiles):
    raise UserError(f"percentiles must be numbers in [0, 100], e.g. (10, 20, ..., 90), got {percentiles!r}")
  orders = _subset("orders", orders, ("morf", "lerf"))
  chunk_size = positive("chunk_size", chunk_size)
  if solve_batch is None:
    solve_batch = 1 if jax.default_backend() == "cpu" else chunk_size
  return dict(percentiles=percentiles, orders=tuple(o for o in ("morf", "lerf") if o in orders),
              noise=_number("noise", noise, 0.0), chunk_size=chunk_size, which=_confidence_index(confidence),
              tol=_number("tol", tol, 0.0, open_low=True), maxiter=positive("maxiter", maxiter),
              solve_batch=positive("solve_batch", solve_batch))


def _road_run(model, images, maps, class_ids, *, key, which, orders, **options):
  change = _call("road", model, images, maps, class_ids, key=key, orders=orders, **options)[..., which]
  out = {f"road_{order}": change[:, :, i] for i, order in enumerate(orders)}
  if len(orders) == 2:
    out["road_combined"] = (out["road_lerf"] - out["road_morf"]) / 2
  return out


# ---------------------------------------------------------------------------------------------------- score

_OPTIONS = {"confidence_change": ("confidence", "relative", "normalize", "eps"),
            "deletion_insertion": ("confidence", "baseline", "insertion_from", "blur_size", "blur_sigma"),
            "road": ("confidence", "percentiles", "noise", "tol", "maxiter", "solve_batch")}


def score(model: nnx.Module, images: Any, maps: Any, class_ids: Any = None, *, metrics: Sequence[str] = METRICS,
          steps: int = 20, chunk_size: int = 32, key: jax.Array | None = None, **options) -> dict[str, jax.Array]:
  """Every metric of ``metrics`` (default all of ``METRICS``): {name: (B, K) float32}, in ``metrics``' order.

  * ``average_drop``, ``average_increase`` (0/1 per image): ``confidence_change``;
    the Grad-CAM++ paper reports 100 x the mean over images (percent).
  * ``deletion_auc``, ``insertion_auc``: ``deletion_insertion`` with ``steps``.
  * ``road_morf``, ``road_lerf``, ``road_combined``: ``road`` with ``key`` for its noise.

  The data set's number is the mean over images. Each family runs once
  (sharing nothing but the inputs), only if one of its metrics is asked for.
  ``options`` go to the families that take them: ``confidence`` (all),
  ``relative``, ``normalize``, ``eps`` (confidence change), ``baseline``,
  ``insertion_from``, ``blur_size``, ``blur_sigma`` (deletion/insertion),
  ``percentiles``, ``noise``, ``tol``, ``maxiter``, ``solve_batch`` (ROAD).
  """
  names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
  for name in names:
    if name not in METRICS:
      raise UserError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
  if not names:
    raise UserError(f"metrics must name at least one of {', '.join(METRICS)}")
  steps = positive("steps", steps)
  chunk_size = positive("chunk_size", chunk_size)
  known = {o for family in _OPTIONS.values() for o in family}
  for option in options:
    if option not in known:
      raise UserError(f"score has no option {option!r}; it takes metrics, steps, chunk_size, key and "
                      f"{', '.join(sorted(known))}")
  check_inputs(images, maps, class_ids)
  wanted = {FAMILY_OF[n] for n in names}

  def given(family):
    return {k: v for k, v in options.items() if k in _OPTIONS[family]}

  # Every setting is checked before anything runs: a bad ROAD option fails before the other families compile.
  runs = []
  if "confidence_change" in wanted:
    runs.append((_confidence_change_run, _confidence_change_settings(chunk_size=chunk_size,
                                                                     **given("confidence_change"))))
  if "deletion_insertion" in wanted:
    curves = tuple(c for c in ("deletion", "insertion") if f"{c}_auc" in names)
    runs.append((_deletion_insertion_run, _deletion_insertion_settings(
        steps=steps, chunk_size=chunk_size, curves=curves, **given("deletion_insertion"))))
  if "road" in wanted:
    orders = ("morf", "lerf") if "road_combined" in names else tuple(
        o for o in ("morf", "lerf") if f"road_{o}" in names)
    runs.append((functools.partial(_road_run, key=key),
                 _road_settings(chunk_size=chunk_size, orders=orders, **given("road"))))
  out: dict[str, jax.Array] = {}
  for run, settings in runs:
    out.update(run(model, images, maps, class_ids, **settings))
  return {name: out[name] for name in names}


__all__ = ["METRICS", "NEIGHBOUR_WEIGHTS", "ROAD_PERCENTILES", "blur", "blur_kernel", "check_inputs",
           "confidence_change", "deletion_insertion", "linear_imputation", "road", "score", "step_counts"]
