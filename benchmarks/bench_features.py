"""Linear classifiers on GAP features: fit time, and feature-extraction throughput.

``python -m benchmarks.bench_features``. Sizes of the built-in data set's
quickstart: 10,000 training rows of 256 GAP features, 12 classes; extraction
with small_gap at 64 px, batch 64.
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

from camjax import models
from camjax.features import array_batches, extract_features, fit_linear


def _features(n=10_000, k=256, classes=12, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, 1, (classes, k)).astype(np.float32)
  labels = rng.integers(0, classes, n)
  x = np.maximum(centres[labels] + rng.normal(0, 6.0, (n, k)).astype(np.float32), 0)  # ReLU-like
  return x, labels


def fit_time(loss: str) -> dict:
  x, y = _features()
  fit_linear(x[:512], y[:512], num_classes=12, loss=loss, C=1.0)  # compile for another shape: warm the caches
  start = time.perf_counter()
  clf = fit_linear(x, y, num_classes=12, loss=loss, C=1.0)
  seconds = time.perf_counter() - start
  return {"benchmark": f"features/fit_{loss}", "value": round(seconds, 3), "unit": "s per fit (incl. compile)",
          "rows": x.shape[0], "features": x.shape[1], "classes": 12, "iterations": clf.iterations,
          "train_accuracy": round(clf.accuracy(x, y), 4)}


def extraction_throughput(batch: int = 64, size: int = 64, batches: int = 8) -> dict:
  model = models.create("small_gap", num_classes=12)
  images = np.asarray(jax.random.normal(jax.random.key(0), (batch * batches, size, size, 3)))
  labels = np.zeros(images.shape[0], np.int64)
  extract_features(model, array_batches(images[:batch], labels[:batch], batch))  # compile
  start = time.perf_counter()
  fs = extract_features(model, array_batches(images, labels, batch))
  seconds = time.perf_counter() - start
  return {"benchmark": "features/extract_small_gap_64px", "value": round(len(fs) / seconds, 1),
          "unit": "images/s", "batch": batch, "size": size}


def run() -> list[dict]:
  return [fit_time("svm"), fit_time("softmax"), extraction_throughput()]


if __name__ == "__main__":
  from benchmarks.run import markdown
  print(markdown(run()))
  sys.exit(0)
