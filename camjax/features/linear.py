"""Linear classifiers on pooled deep features, and a head that gives them CAMs.

Zhou et al. (2016, Sec. 4) train linear SVMs on the GAP features of a CAM
network and form class activation maps from the SVM weights. Here both a
one-vs-rest linear SVM (squared hinge) and softmax regression are fitted
full-batch with L-BFGS (optax), so a fit is deterministic and reaches the
optimum of a strongly convex objective. The regularisation follows the usual
``C`` convention (liblinear / scikit-learn):

    0.5 ||W||^2 + C * sum_i loss_i      (the bias is not regularised)

which is minimised in the equivalent form ``mean_i loss_i + ||W||^2 / (2 C N)``.
Features are standardised inside the fit and the scaling is folded back into
``(kernel, bias)``, so the returned weights act on raw pooled features and the
CAM identity ``mean(CAM) + bias == logits`` holds for them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from camjax.errors import UserError
from camjax.models.base import check_pooling, global_pool

LOSSES = ("svm", "softmax")
DEFAULT_GRID = (0.01, 0.1, 1.0, 10.0)


@dataclasses.dataclass(frozen=True)
class LinearClassifier:
  """Weights acting on raw pooled features: ``scores = features @ kernel + bias``."""

  kernel: np.ndarray  # (K, C) float32
  bias: np.ndarray  # (C,) float32
  loss: str = "svm"
  C: float = 1.0
  iterations: int = 0
  converged: bool = True

  def decision_function(self, features: np.ndarray) -> np.ndarray:
    return np.asarray(features, np.float32) @ self.kernel + self.bias

  def predict(self, features: np.ndarray) -> np.ndarray:
    return np.argmax(self.decision_function(features), axis=1)

  def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1]."""
    labels = np.asarray(labels)
    if labels.size == 0:
      raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(self.predict(features) == labels))

  @property
  def num_classes(self) -> int:
    return int(self.kernel.shape[1])


def _check_inputs(features, labels, num_classes):
  features = np.asarray(features, np.float32)
  labels = np.asarray(labels).astype(np.int64)
  if features.ndim != 2:
    raise ValueError(f"features must be (N, K), got shape {features.shape}")
  if labels.shape != (features.shape[0],):
    raise ValueError(f"labels must be (N,) with N={features.shape[0]}, got shape {labels.shape}")
  if features.shape[0] == 0:
    raise UserError("cannot fit a classifier on zero examples; is the training split empty?")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must be in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
  if not np.all(np.isfinite(features)):
    raise UserError("features contain NaN or inf; check the backbone or its checkpoint")
  return features, labels


@functools.partial(jax.jit, static_argnames=("loss", "num_classes", "max_iter"))
def _lbfgs_fit(x, y, reg_c, tol, *, loss: str, num_classes: int, max_iter: int):
  n, k = x.shape
  onehot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
  signs = 2.0 * onehot - 1.0

  def objective(params):
    w, b = params
    scores = jnp.dot(x, w, precision=jax.lax.Precision.HIGHEST) + b
    if loss == "svm":
      data = jnp.sum(jnp.square(jnp.maximum(0.0, 1.0 - signs * scores)), axis=1)
    else:
      data = jax.nn.logsumexp(scores, axis=1) - jnp.sum(onehot * scores, axis=1)
    return jnp.mean(data) + jnp.sum(w * w) / (2.0 * reg_c * n)

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)
  params = (jnp.zeros((k, num_classes), jnp.float32), jnp.zeros((num_classes,), jnp.float32))

  def cond(carry):
    _, _, i, gnorm = carry
    return (i < max_iter) & (gnorm > tol)

  def body(carry):
    params, state, i, _ = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=objective)
    params = optax.apply_updates(params, updates)
    return params, state, i + 1, optax.tree.norm(grad)

  init = (params, opt.init(params), jnp.asarray(0), jnp.asarray(jnp.inf, jnp.float32))
  params, _, iters, gnorm = jax.lax.while_loop(cond, body, init)
  return params, iters, gnorm


def fit_linear(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    loss: str = "svm",
    C: float = 1.0,
    standardize: bool = True,
    max_iter: int = 500,
    tol: float = 1e-5,
) -> LinearClassifier:
  """Fit a one-vs-rest squared-hinge SVM or an L2 softmax regression on (N, K) features.

  Deterministic: full-batch L-BFGS from zero weights.
  """
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
  if not C > 0:
    raise ValueError(f"C must be > 0, got {C}")
  features, labels = _check_inputs(features, labels, num_classes)
  if standardize:
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    std = np.where(std > 1e-6 * max(float(std.max()), 1e-12), std, 1.0).astype(np.float32)
  else:
    mean = np.zeros(features.shape[1], np.float32)
    std = np.ones(features.shape[1], np.float32)
  x = (features - mean) / std
  (w, b), iters, gnorm = _lbfgs_fit(jnp.asarray(x), jnp.asarray(labels), jnp.float32(C), jnp.float32(tol),
                                    loss=loss, num_classes=num_classes, max_iter=max_iter)
  w = np.asarray(w, np.float64)
  b = np.asarray(b, np.float64)
  # Fold the standardisation into the weights: ((x - m) / s) @ w + b == x @ (w / s) + (b - (m / s) @ w).
  kernel = w / std[:, None]
  bias = b - (mean / std) @ w
  return LinearClassifier(kernel.astype(np.float32), bias.astype(np.float32), loss=loss, C=float(C),
                          iterations=int(iters), converged=bool(float(gnorm) <= tol))


@dataclasses.dataclass(frozen=True)
class Selection:
  """The result of choosing C: the refitted classifier and the validation accuracy of every C."""

  classifier: LinearClassifier
  best_C: float
  val_accuracy: dict[float, float]
  val_source: str  # "validation split" or "held-out part of train"


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Seeded per-class hold-out: (train_rows, val_rows); every class keeps >= 1 training row."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  train_rows, val_rows = [], []
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)
    rows = rows[rng.permutation(rows.size)]
    n_val = min(int(round(fraction * rows.size)), rows.size - 1)
    val_rows.append(rows[:n_val])
    train_rows.append(rows[n_val:])
  return np.sort(np.concatenate(train_rows)), np.sort(np.concatenate(val_rows))


def select_and_fit(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    *,
    num_classes: int,
    loss: str = "svm",
    grid: Sequence[float] = DEFAULT_GRID,
    val_features: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    **fit_kwargs,
) -> Selection:
  """Choose C on a validation split (or a seeded hold-out of train) and refit.

  With a separate validation split the final classifier is fitted on train
  alone; with a hold-out it is refitted on all of train. Ties go to the
  smallest C (the strongest regularisation).
  """
  grid = sorted(float(c) for c in grid)
  if not grid:
    raise ValueError("the C grid is empty; give at least one value")
  train_features, train_labels = _check_inputs(train_features, train_labels, num_classes)
  if val_features is None:
    if len(grid) == 1:
      clf = fit_linear(train_features, train_labels, num_classes=num_classes, loss=loss, C=grid[0], **fit_kwargs)
      return Selection(clf, grid[0], {}, "none (single C)")
    tr, va = holdout_split(train_labels, holdout_fraction, seed)
    if va.size == 0:
      raise UserError("too few training examples to hold out a validation part; set --config.features.val_split "
                      "or a single C in features.C_grid")
    fx, fy, vx, vy = train_features[tr], train_labels[tr], train_features[va], train_labels[va]
    source = "held-out part of train"
  else:
    fx, fy = train_features, train_labels
    vx, vy = _check_inputs(val_features, val_labels, num_classes)
    source = "validation split"
  scores = {}
  fitted = {}
  for c in grid:
    fitted[c] = fit_linear(fx, fy, num_classes=num_classes, loss=loss, C=c, **fit_kwargs)
    scores[c] = fitted[c].accuracy(vx, vy)
  best = max(grid, key=lambda c: (scores[c], -c))
  if val_features is None:
    clf = fit_linear(train_features, train_labels, num_classes=num_classes, loss=loss, C=best, **fit_kwargs)
  else:
    clf = fitted[best]
  return Selection(clf, best, scores, source)


class LinearHeadModel(nnx.Module):
  """A backbone with a new linear classifier on its pooled features, CAM-ready.

  ``logits, features = model(images)`` with ``logits = pool(features) @ kernel + bias``
  and ``cam_weights() -> (kernel, bias)``, so ``camjax.cam.class_activation_maps``
  works on it exactly as on a trained head.
  """

  def __init__(self, backbone: nnx.Module, kernel, bias, *, pooling: str = "gap"):
    kernel = jnp.asarray(kernel, jnp.float32)
    bias = jnp.asarray(bias, jnp.float32)
    if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
      raise ValueError(f"kernel must be (K, C) and bias (C,), got {kernel.shape} and {bias.shape}")
    self.backbone = backbone
    self.pooling = check_pooling(pooling)
    self.kernel = nnx.Param(kernel)
    self.bias = nnx.Param(bias)
    self.num_classes = int(kernel.shape[1])

  @classmethod
  def from_classifier(cls, backbone: nnx.Module, classifier: LinearClassifier, *, pooling: str = "gap"):
    return cls(backbone, classifier.kernel, classifier.bias, pooling=pooling)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    _, features = self.backbone(images)
    pooled = global_pool(features.astype(jnp.float32), self.pooling)
    logits = jnp.dot(pooled, self.kernel[...], precision=jax.lax.Precision.HIGHEST) + self.bias[...]
    return logits, features

  def cam_weights(self) -> tuple[jax.Array, jax.Array]:
    return self.kernel[...], self.bias[...]
