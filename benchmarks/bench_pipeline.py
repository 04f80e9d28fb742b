"""Training input throughput: JPEG decode + random-resized crop + flip + normalize at 224.

``python -m benchmarks.bench_pipeline``. The source holds JPEG bytes of
photographs (scikit-image's sample images, or synthetic ones without it)
resized to ILSVRC-like sizes around 500 x 375, and decodes them with PIL on
access, as a TFDS data source does. Measured at worker_count 0, 1 and 2;
images per second over whole batches after a warm-up.
"""

from __future__ import annotations

import io
import os
import sys
import time

import numpy as np
from PIL import Image

from camjax.data import pipeline, transforms

SIZES = [(375, 500), (500, 375), (333, 500), (400, 400), (375, 500), (281, 500)]


def _photos() -> list[np.ndarray]:
  try:
    from skimage import data  # pylint: disable=g-import-not-at-top
    names = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field")
    return [np.asarray(getattr(data, n)())[..., :3] for n in names if hasattr(data, n)]
  except ImportError:
    rng = np.random.default_rng(0)
    smooth = [np.kron(rng.integers(0, 255, (24, 32, 3)), np.ones((16, 16, 1))) for _ in range(6)]
    return [s.astype(np.uint8) for s in smooth]


class JpegSource:
  """Random-access source of JPEG-encoded records, decoded with PIL on each access."""

  def __init__(self, num_records: int = 64, quality: int = 90):
    photos = _photos()
    self.records = []
    for i in range(num_records):
      height, width = SIZES[i % len(SIZES)]
      image = Image.fromarray(photos[i % len(photos)]).resize((width, height), Image.BILINEAR)
      buf = io.BytesIO()
      image.save(buf, format="JPEG", quality=quality)
      box = transforms.pixel_to_normalized_boxes([[width // 4, height // 4, 3 * width // 4, 3 * height // 4]],
                                                 height, width)
      self.records.append({"jpeg": buf.getvalue(), "bboxes": box, "label": i % 1000, "id": f"bench_{i}"})

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict:
    record = self.records[index]
    image = np.asarray(Image.open(io.BytesIO(record["jpeg"])).convert("RGB"))
    return {"image": image, "bboxes": record["bboxes"], "label": record["label"], "id": record["id"]}


def throughput(source, worker_count: int, *, batch: int = 32, batches: int = 30, warmup: int = 2,
               image_size: int = 224) -> dict:
  with pipeline.train_iterator(source, global_batch_size=batch, image_size=image_size, seed=0,
                               process_index=0, process_count=1, worker_count=worker_count) as it:
    for _ in range(warmup):
      next(it)
    start = time.perf_counter()
    for _ in range(batches):
      next(it)
    seconds = time.perf_counter() - start
  return {"benchmark": f"input_pipeline/train_{image_size}/workers_{worker_count}",
          "value": round(batches * batch / seconds, 1), "unit": "images/s",
          "worker_count": worker_count, "batch": batch, "images": batches * batch}


def run() -> list[dict]:
  source = JpegSource()
  rows = [throughput(source, w) for w in (0, 1, 2)]
  best = max(rows, key=lambda r: r["value"])
  rows.append({"benchmark": "input_pipeline/train_224/best", "value": best["value"], "unit": "images/s",
               "worker_count": best["worker_count"], "cores": os.cpu_count()})
  return rows


if __name__ == "__main__":
  from benchmarks.run import markdown
  print(markdown(run()))
  sys.exit(0)
