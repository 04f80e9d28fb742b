"""The few-shot localization baseline of the WSOL standard (Choe et al., CVPR 2020, Sec. 5).

The standard allows every WSOL method a small fully supervised split,
``train_fullsup``, for choosing hyperparameters. Its few-shot baseline spends
those images on training instead, and beats most WSOL methods with them: a zoo
backbone's feature map (``logits, features = model(images)``) feeds a 1x1
convolution to one foreground logit per position, trained with per-pixel binary
cross-entropy against the foreground (the pixels inside any ground-truth box, or
the segmentation mask where the data set has one) on ``n`` images per class. The
sigmoid of its logits, upsampled to the image, is one class-agnostic score map per
image; the evaluator scores it as it scores the CAM of the true class.

The few images come from ``camjax.data.subsample.per_class`` (n per class, fixed
by a seed). The pieces: ``box_targets`` and ``batch_targets`` (the foreground at
the image's pixels), ``pixel_bce`` (the loss),
``FewShotLocalizer`` and ``build_localizer`` (backbone + head), ``train`` (jitted
steps over batches of the few images) and ``make_map_fn`` (score maps).
``camjax.tools.few_shot`` is the command that joins them to the data and the
evaluator.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from camjax import cam
from camjax.errors import UserError
from camjax.models.conv import Conv
from camjax.train import sharding
from camjax.train.optim import decay_mask, matches_any
from camjax.train.state import COMPUTE_DTYPES, ModelDef, build_model

log = logging.getLogger("camjax.wsol")

TARGETS = ("auto", "boxes", "masks")
BACKBONE = "backbone/"  # parameter paths of the zoo model inside the localizer


# ----------------------------------------------------------------------------- targets and loss


def box_targets(boxes: jax.Array, num_boxes: jax.Array, size: tuple[int, int]) -> jax.Array:
  """(B, H, W) float32: 1 at pixels inside any of an image's first ``num_boxes`` boxes, else 0.

  ``boxes`` (B, M, 4) are inclusive pixel (x0, y0, x1, y1), padded past ``num_boxes``:
  pixel (y, x) is foreground when x0 <= x <= x1 and y0 <= y <= y1.
  """
  height, width = size
  boxes = jnp.asarray(boxes, jnp.float32)
  x = jnp.arange(width, dtype=jnp.float32)[None, None, None, :]
  y = jnp.arange(height, dtype=jnp.float32)[None, None, :, None]
  x0, y0, x1, y1 = (boxes[..., k][..., None, None] for k in range(4))
  inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)  # (B, M, H, W)
  real = jnp.arange(boxes.shape[1])[None, :] < jnp.asarray(num_boxes)[:, None]
  return jnp.any(inside & real[..., None, None], axis=1).astype(jnp.float32)


def batch_targets(batch: dict, target: str) -> jax.Array:
  """The foreground of a batch at its image size: its masks (``target="masks"``) or its boxes."""
  if target == "masks":
    return (jnp.asarray(batch["mask"]) > 0).astype(jnp.float32)
  return box_targets(batch["boxes"], batch["num_boxes"], batch["image"].shape[1:3])


def pixel_bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Binary cross-entropy of per-pixel foreground logits, averaged over every pixel of the batch."""
  return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets).mean()


# ----------------------------------------------------------------------------- the model


class FewShotLocalizer(nnx.Module):
  """A zoo model's feature map through a 1x1 convolution to one foreground logit per position.

  The zoo model's own classifier is built but unused (its parameters get no
  gradient), so its checkpoints and pretrained weights load as they are.
  """

  def __init__(self, backbone: nnx.Module, channels: int, *, dtype: Any = None, rngs: nnx.Rngs):
    self.backbone = backbone
    self.foreground = Conv(channels, 1, (1, 1), use_bias=True, dtype=dtype, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    """(B, h, w) foreground logits at the feature map's resolution."""
    _, features = self.backbone(images)
    return self.foreground(features)[..., 0]

  def image_logits(self, images: jax.Array) -> jax.Array:
    """(B, H, W) logits upsampled (bilinear, as CAMs are) to the image size."""
    return cam.upsample_maps(self(images)[:, None], images.shape[1:3])[:, 0]


def feature_channels(model: nnx.Module, image_size: int) -> int:
  """Channels of the map a zoo model returns as its features (traced, nothing computed)."""
  graphdef, state = nnx.split(model)

  def features(state, images):
    return nnx.merge(graphdef, state)(images)[1]

  shape = jax.eval_shape(features, state, jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)).shape
  if len(shape) != 4:
    raise UserError(f"{type(model).__name__} returns features of shape {shape}, not a (B, h, w, C) map; "
                    "choose a convolutional model with --config.model.name")
  return int(shape[-1])


def build_localizer(config: Any, seed: int) -> FewShotLocalizer:
  """The config's zoo model (with ``config.pretrained`` loaded, as training loads it) under a new 1x1 head."""
  from camjax.train.checkpoint import load_pretrained, pretrained_format

  backbone = build_model(config, seed=seed)
  fmt = pretrained_format(config)
  if fmt == "torchvision":
    from camjax import weights

    weights.load_pretrained(backbone, config.pretrained.path)
  elif fmt == "camjax":
    definition = ModelDef(backbone)
    params, stats, other = definition.split(backbone)
    params, stats, loaded = load_pretrained(config, params, stats)
    log.info("loaded %d arrays from %s", len(loaded), config.pretrained.path)
    backbone = definition.merge(params, stats, other, train=True)
  channels = feature_channels(backbone, int(config.data.image_size))
  dtype = COMPUTE_DTYPES[config.model.dtype]
  return FewShotLocalizer(backbone, channels, dtype=None if dtype == jnp.float32 else dtype,
                          rngs=nnx.Rngs(seed + 1))


# ----------------------------------------------------------------------------- training


def make_optimizer(params: dict, *, steps: int, lr: float, weight_decay: float,
                   freeze: Sequence[str] = ()) -> optax.GradientTransformation:
  """AdamW with a cosine decay to 0 over ``steps``, decay on kernels only; ``freeze`` regexes on backbone paths."""
  adamw = optax.adamw(optax.cosine_decay_schedule(lr, max(1, steps)), weight_decay=weight_decay, mask=decay_mask)
  if not freeze:
    return adamw

  def label(path, _):
    name = sharding.path_str(path)
    return "frozen" if name.startswith(BACKBONE) and matches_any(freeze, name[len(BACKBONE):]) else "train"

  labels = jax.tree_util.tree_map_with_path(label, params)
  if "frozen" not in jax.tree.leaves(labels):
    raise UserError(f"pretrained.freeze={tuple(freeze)} matches no parameter of {BACKBONE.rstrip('/')}; "
                    "fix --config.pretrained.freeze")
  return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)


def make_train_step(model_def: ModelDef, tx: optax.GradientTransformation, target: str,
                    dtype: Any = jnp.float32) -> Callable:
  """The pure step ``(state, batch) -> (state, loss)``: BCE of the upsampled logits against the batch's foreground."""

  def loss_fn(params, batch_stats, other, batch):
    model = model_def.merge(params, batch_stats, other, train=True)
    logits = model.image_logits(jnp.asarray(batch["image"]).astype(dtype))
    loss = pixel_bce(logits, batch_targets(batch, target))
    _, new_stats, new_other = model_def.split(model)
    return loss, (new_stats, new_other)

  def step(state, batch):
    (loss, (stats, other)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["batch_stats"], state["other"], batch)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {"params": params, "batch_stats": stats, "other": other, "opt_state": opt_state}, loss

  return step


@dataclasses.dataclass
class Trained:
  """A trained localizer as pure arrays (replicated on ``mesh``), and the loss of every step."""

  model_def: ModelDef
  state: dict
  losses: np.ndarray
  mesh: Any

  def map_fn(self, dtype: Any = jnp.float32) -> Callable[[np.ndarray], jax.Array]:
    """``images -> (B, H, W)`` score maps, the batch split over the devices it trained on."""
    maps = make_map_fn(self.model_def, dtype)
    return lambda images: maps(self.state, sharding.global_batch(self.mesh, {"image": images})["image"])


def batch_keys(target: str) -> tuple[str, ...]:
  """What the train step reads of a pipeline batch."""
  return ("image", "mask") if target == "masks" else ("image", "boxes", "num_boxes")


def train(localizer: FewShotLocalizer, batches: Iterator[dict], *, steps: int, lr: float, weight_decay: float,
          target: str, dtype: Any = jnp.float32, freeze: Sequence[str] = (), log_every: int = 10,
          progress: bool = True, devices: Sequence[Any] | None = None) -> Trained:
  """``steps`` jitted AdamW steps on batches of the few images; a progress bar with the loss on stderr.

  Data-parallel over ``devices`` (default: this process's): each batch is split
  over them, the state replicated, so the steps are those of one device holding
  the whole batch. A loss that turns NaN or Inf stops the run with one line saying
  what to change.
  """
  from tqdm import tqdm

  from camjax.train.step import compiler_options

  if target not in ("boxes", "masks"):
    raise ValueError(f"target must be 'boxes' or 'masks', got {target!r}")
  model_def = ModelDef(localizer)
  params, stats, other = model_def.split(localizer)
  tx = make_optimizer(params, steps=steps, lr=lr, weight_decay=weight_decay, freeze=freeze)
  devices = list(devices or jax.local_devices())
  mesh = sharding.make_mesh(len(devices), 1, devices)
  state = jax.device_put({"params": params, "batch_stats": stats, "other": other, "opt_state": tx.init(params)},
                         sharding.replicated(mesh))
  step_fn = jax.jit(make_train_step(model_def, tx, target, dtype), donate_argnums=(0,),
                    compiler_options=compiler_options(mesh))
  keys = batch_keys(target)
  losses: list[jax.Array] = []
  with tqdm(total=steps, desc="few-shot train", unit="step", disable=not progress, file=sys.stderr,
            dynamic_ncols=True) as bar:
    for done in range(1, steps + 1):
      batch = next(batches)
      state, loss = step_fn(state, sharding.global_batch(mesh, {k: batch[k] for k in keys}))
      losses.append(loss)
      bar.update(1)
      if done % log_every == 0 or done == steps:
        recent = float(np.mean(jax.device_get(losses[-log_every:])))
        if not math.isfinite(recent):
          raise UserError(f"the few-shot loss became {recent} by step {done}; lower --lr")
        bar.set_postfix(loss=f"{recent:.4f}")
  return Trained(model_def, state, np.asarray(jax.device_get(losses), np.float64), mesh)


def make_map_fn(model_def: ModelDef, dtype: Any = jnp.float32) -> Callable:
  """Jitted ``(state, images) -> (B, H, W)`` score maps: the sigmoid of the logits upsampled to the image."""

  def maps(state, images):
    model = model_def.merge(state["params"], state["batch_stats"], state["other"], train=False)
    return jax.nn.sigmoid(model.image_logits(images.astype(dtype)).astype(jnp.float32))

  return jax.jit(maps)
