"""What each WSOL method changes in training: the one place the train step and the model builder ask.

``config.method.name`` is one of ``METHODS``:

  cam     plain cross-entropy on the model's logits
  has     Hide-and-Seek: random cells of the input hidden, then cross-entropy
  cutmix  CutMix: a box pasted from a permuted batch, cross-entropy of both labels weighed by the area
  acol    ACoL architecture, its loss from ``model.wsol_outputs(images, labels)``
  spg     SPG architecture, its loss from ``model.wsol_outputs(images, labels)``
  adl     ADL architecture (its drop happens inside the model in train mode), cross-entropy

Input-side methods draw from ``method_key(seed, step)``: a function of the run's
seed and step counter, so it needs no state of its own, every process of a
multi-host run draws the same cells and boxes, and a resumed run draws what the
uninterrupted run drew. Architecture-side methods reach the model through
``model_overrides``; ADL's random key lives in the model's own state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from camjax.errors import ConfigError
from camjax.wsol.cutmix import cutmix, mixed_cross_entropy
from camjax.wsol.has import hide_patches

METHODS = ("cam", "has", "acol", "spg", "adl", "cutmix")
# Methods that need a model built with ``architecture=<method>`` (with their papers' names), and the models that
# take that argument.
ARCHITECTURE_METHODS = {"acol": "ACoL", "spg": "SPG", "adl": "ADL"}
ARCHITECTURE_MODELS = ("inceptionv3_wsol", "resnet50_wsol", "small_gap", "vgg16_wsol")
# Constructor arguments that belong to the method block, never to model.overrides (one way to set each).
METHOD_MODEL_ARGUMENTS = ("architecture", "acol_threshold", "adl_drop_rate", "adl_threshold")

# The input-side methods' stream: folded into key(seed) far from the counts 0, 1, 2, ... that nnx.Rngs
# folds into key(seed) for the parameters (dropout and ADL use key(seed + 1)).
_METHOD_STREAM = 0x57534F4C


def method_key(seed: int, step: jax.Array | int) -> jax.Array:
  """The random key of training step ``step`` (0-based) of a run with ``seed``, for HaS and CutMix."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _METHOD_STREAM), step)


def model_overrides(method: Any) -> dict:
  """Model constructor arguments the method needs: its architecture and that architecture's hyperparameters."""
  name = method.name
  if name not in METHODS:
    raise ConfigError(f"method.name={name!r} is unknown; set --config.method.name to one of: {', '.join(METHODS)}")
  if name == "acol":
    return {"architecture": "acol", "acol_threshold": float(method.acol_threshold)}
  if name == "spg":
    return {"architecture": "spg"}
  if name == "adl":
    return {"architecture": "adl", "adl_drop_rate": float(method.adl_drop_rate),
            "adl_threshold": float(method.adl_threshold)}
  return {}


def _check_fraction(method: Any, field: str) -> None:
  value = getattr(method, field)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
    raise ConfigError(f"method.{field}={value!r}; set --config.method.{field} to a number in [0, 1]")


def check_method(config: Any) -> None:
  """Fail at start, with one line saying what to change, on a method the config cannot train.

  Checks the name, that the model takes the method's architecture, and the
  ranges of the chosen method's hyperparameters (the other methods' fields are
  not read).
  """
  method = config.method
  model_overrides(method)  # the name
  name = method.name
  if name in ARCHITECTURE_METHODS and config.model.name not in ARCHITECTURE_MODELS:
    raise ConfigError(f"method.name={name!r} needs a model with the {ARCHITECTURE_METHODS[name]} architecture and "
                      f"model.name={config.model.name!r} has none; set --config.model.name to one of: "
                      f"{', '.join(ARCHITECTURE_MODELS)}")
  given = set(config.model.overrides.keys()) & set(METHOD_MODEL_ARGUMENTS)
  if given:
    field = sorted(given)[0]
    raise ConfigError(f"model.overrides.{field} is set by the method; drop it and use --config.method.name "
                      "and the --config.method.* hyperparameters instead")
  if name == "has":
    size = method.has_grid_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
      raise ConfigError(f"method.has_grid_size={size!r}; set --config.method.has_grid_size to a cell side in "
                        "pixels (an integer >= 1; 0 hides nothing)")
    _check_fraction(method, "has_drop_rate")
  elif name == "acol":
    _check_fraction(method, "acol_threshold")
  elif name == "spg":
    pairs = method.spg_thresholds
    ok = len(pairs) == 3 and all(
        len(pair) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
        and 0.0 <= pair[1] <= pair[0] <= 1.0 for pair in pairs)
    if not ok:
      raise ConfigError(f"method.spg_thresholds={tuple(tuple(p) for p in pairs)!r}; set "
                        "--config.method.spg_thresholds to three (high, low) pairs with 0 <= low <= high <= 1")
  elif name == "adl":
    _check_fraction(method, "adl_drop_rate")
    _check_fraction(method, "adl_threshold")
  elif name == "cutmix":
    beta = method.cutmix_beta
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
      raise ConfigError(f"method.cutmix_beta={beta!r}; set --config.method.cutmix_beta to a number >= 0 "
                        "(0 never mixes)")
    _check_fraction(method, "cutmix_prob")


def _float32(tree: Any) -> Any:
  """Floating arrays of ``tree`` in float32: losses stay float32 when the model computes in bfloat16."""
  return jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def method_loss(method: Any, model: Any, images: jax.Array, labels: jax.Array, key: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  """``(loss, logits)`` of one (micro-)batch under ``method`` (``config.method``), inside the jitted step.

  ``images`` are the normalised inputs in the compute dtype, ``labels`` integer
  classes, ``key`` this batch's draw (used by HaS and CutMix only). The logits
  (float32) are those of the images the model saw, for the step's accuracy.
  """
  name = method.name
  if name == "cutmix":
    images, labels_a, labels_b, lam = cutmix(key, images, labels, float(method.cutmix_beta),
                                             float(method.cutmix_prob))
    logits = _float32(model(images)[0])
    return mixed_cross_entropy(logits, labels_a, labels_b, lam), logits
  if name in ("acol", "spg"):
    outputs = _float32(model.wsol_outputs(images, labels))
    if name == "acol":
      from camjax.wsol.acol import acol_loss

      return acol_loss(outputs, labels), outputs["logits"]
    from camjax.wsol.spg import spg_loss

    thresholds = tuple((float(high), float(low)) for high, low in method.spg_thresholds)
    return spg_loss(outputs, labels, thresholds), outputs["logits"]
  if name == "has":
    images = hide_patches(key, images, int(method.has_grid_size), float(method.has_drop_rate))
  elif name not in ("cam", "adl"):
    model_overrides(method)  # raises the one-line error for an unknown name
  logits = _float32(model(images)[0])
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits
