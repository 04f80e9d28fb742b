"""CAM on any image with EfficientNet-Lite0 at 224 px: images per second, batch 1 and 8.

``python -m benchmarks.bench_cam_images``. Two rows per batch size:

* ``cam_images/forward_cam``: the jitted forward pass with top-5 CAMs alone
  (preprocessed images already on the host);
* ``cam_images/end_to_end``: ``camjax.cam_images.process`` on JPEG files --
  decode, resize, forward with CAM, five paper boxes per image on maps
  upsampled to the original size, the figure and its PNG, and cams.json --
  with the time split by stage in the details.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import jax
import numpy as np
from PIL import Image

from benchmarks.common import median_seconds
from camjax import cam
from camjax.report import figures as viz
from camjax.tools import cam_images
from camjax.data.imagenet_classes import class_names
from camjax.weights import efficientnet_lite

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
NUM_IMAGES = 16


def _photos() -> list[np.ndarray]:
  try:
    import skimage.data as data

    return [getattr(data, name)() for name in PHOTOS]
  except ImportError:  # no scikit-image: random photos of the same sizes
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((300, 451, 3), (400, 600, 3), (512, 512, 3))]


def forward_cam(runner: cam_images.CamRunner, batch: int, repeats: int = 5) -> dict:
  images = jax.numpy.asarray(np.random.default_rng(0).normal(size=(batch, 224, 224, 3)).astype(np.float32))
  seconds = median_seconds(
      lambda: jax.block_until_ready(cam.class_activation_maps(runner.model, images, top_k=5, upsample=False)),
      repeats=repeats)
  return {"benchmark": f"cam_images/forward_cam/batch{batch}", "value": batch / seconds, "unit": "images/s",
          "batch": batch, "size": 224, "seconds_per_batch": round(seconds, 4)}


def end_to_end(runner: cam_images.CamRunner, paths: list[str], out_dir: str) -> dict:
  names = class_names()
  cam_images.process(runner, paths[:runner.batch_size], out_dir, class_names=names)  # warm-up: compile
  start = time.perf_counter()
  cam_images.process(runner, paths, out_dir, class_names=names)
  total = time.perf_counter() - start

  # The same work by stage, to show where the time goes.
  t0 = time.perf_counter()
  decoded = [cam_images.load_image(p) for p in paths]
  t1 = time.perf_counter()
  batches = [decoded[i:i + runner.batch_size] for i in range(0, len(decoded), runner.batch_size)]
  forward = boxes = 0.0
  results = []
  for chunk in batches:
    a = time.perf_counter()
    shape = cam_images.resized_shape(*chunk[0].shape[:2], runner.image_size, runner.resize)
    x = np.stack([cam_images.preprocess(im, shape, runner.mean, runner.std) for im in chunk])
    if len(chunk) < runner.batch_size:
      x = np.concatenate([x, np.zeros((runner.batch_size - len(chunk), *x.shape[1:]), x.dtype)])
    ids, probs, maps = runner.forward(x)
    b = time.perf_counter()
    for j, im in enumerate(chunk):
      bx = [runner.box(cam_images.upsample_map(m, im.shape[:2])) for m in maps[j]]
      results.append(cam_images.ImageResult("x", im, ids[j], probs[j], maps[j], bx))
    forward += b - a
    boxes += time.perf_counter() - b
  t2 = time.perf_counter()
  for i, r in enumerate(results):
    viz.save_png(cam_images.figure(r, names), os.path.join(out_dir, f"stage_{i}.png"))
  t3 = time.perf_counter()
  n = len(paths)
  return {"benchmark": f"cam_images/end_to_end/batch{runner.batch_size}", "value": n / total, "unit": "images/s",
          "images": n, "decode_ms": round(1e3 * (t1 - t0) / n, 1), "preprocess_forward_ms": round(1e3 * forward / n, 1),
          "boxes_ms": round(1e3 * boxes / n, 1), "figure_ms": round(1e3 * (t3 - t2) / n, 1)}


def run() -> list[dict]:
  model = efficientnet_lite.pretrained("efficientnet_lite0")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    photos = _photos()
    paths = []
    for i in range(NUM_IMAGES):
      path = os.path.join(tmp, f"img{i:02d}.jpg")
      Image.fromarray(photos[i % len(photos)]).save(path, quality=90)
      paths.append(path)
    for batch in (1, 8):
      runner = cam_images.CamRunner(model, batch_size=batch)
      rows.append(forward_cam(runner, batch))
      rows.append(end_to_end(runner, paths, os.path.join(tmp, f"out{batch}")))
  return rows


if __name__ == "__main__":
  from benchmarks.run import markdown

  print(markdown(run()))
  sys.exit(0)
