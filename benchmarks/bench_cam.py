"""CAM overhead: (forward + top-5 CAM + upsampling to 224) over forward alone.

``python -m benchmarks.bench_cam``. Goal: at most 1.10 for googlenet_gap and vgg16_gap
at 224, batch 16, median of repeated runs after warm-up.
"""

from __future__ import annotations

import functools
import sys

import jax
from flax import nnx

from benchmarks.common import median_seconds
from camjax import cam, models


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _forward(graphdef, state, images):
  model = nnx.merge(graphdef, state)
  model.eval()
  return model(images)[0]


def overhead(name: str, *, batch: int = 16, size: int = 224, repeats: int = 5) -> dict:
  model = models.create(name, num_classes=1000)
  images = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
  graphdef, state = nnx.split(model)
  forward = median_seconds(lambda: _forward(graphdef, state, images).block_until_ready(), repeats=repeats)
  with_cam = median_seconds(
      lambda: jax.block_until_ready(cam.class_activation_maps(model, images, top_k=5, upsample=True)),
      repeats=repeats)
  return {"benchmark": f"cam_overhead/{name}", "value": with_cam / forward, "unit": "x forward",
          "forward_s": round(forward, 4), "forward_cam_s": round(with_cam, 4), "batch": batch, "size": size}


def run() -> list[dict]:
  return [overhead(name) for name in ("googlenet_gap", "vgg16_gap")]


if __name__ == "__main__":
  from benchmarks.run import markdown
  print(markdown(run()))
  sys.exit(0)
