"""camjax's BatchNorm against nnx.BatchNorm on the CPU: per layer and in two train steps, interleaved.

``python -m benchmarks.bench_batch_norm [--no-steps]``. Per layer: forward and
backward of training-mode BatchNorm followed by a ReLU, on activations of
EfficientNet-Lite0 (batch 8 at 224) and of the quickstart's ``small_gap`` (batch
64 at 64 px). Per step: the step ``camjax.train`` jits, compiled twice in one
process (camjax's BatchNorm, then the same network with ``nnx.BatchNorm``'s own
call) and timed in alternation, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.common import alternating_medians
from benchmarks.train_step import SyntheticTrainStep, synthetic_config
from camjax import train
from camjax.models import norm
from camjax.train import sharding
from configs import quickstart

LAYERS = ((8, 112, 112, 96), (8, 56, 56, 144), (8, 14, 14, 672), (64, 64, 64, 16), (64, 32, 32, 32))


def _layer_step(layer: nnx.Module, x: jax.Array, weights: jax.Array) -> Callable[[], None]:
  graphdef, state = nnx.split(layer)
  options = train.compiler_options(sharding.make_mesh(-1, 1))

  def loss(state, x):
    return jnp.sum(jnp.maximum(nnx.merge(graphdef, state)(x, use_running_average=False), 0) * weights)

  step = jax.jit(jax.grad(loss, argnums=(0, 1)), compiler_options=options)
  return lambda: jax.block_until_ready(step(state, x))


def layer_rows(repeats: int = 15) -> list[dict]:
  rows = []
  for shape in LAYERS:
    x = jax.random.normal(jax.random.key(0), shape) * 2 + 1
    weights = jax.random.normal(jax.random.key(1), shape)
    fns = {"camjax": _layer_step(norm.BatchNorm(shape[-1], rngs=nnx.Rngs(0)), x, weights),
           "nnx": _layer_step(nnx.BatchNorm(shape[-1], rngs=nnx.Rngs(0)), x, weights)}
    seconds = alternating_medians(fns, repeats=repeats)
    name = "x".join(map(str, shape))
    rows.append({"benchmark": f"batch_norm/layer/{name}", "value": round(seconds["nnx"] / seconds["camjax"], 2),
                 "unit": "x", "camjax_ms": round(seconds["camjax"] * 1e3, 2),
                 "nnx_ms": round(seconds["nnx"] * 1e3, 2), "what": "forward + backward, training mode, then ReLU"})
  return rows


def _configs() -> dict:
  efficientnet = synthetic_config("efficientnet_lite0", batch=8, size=224, num_steps=100)
  small = quickstart.get_config()
  small.data.name = "synthetic"
  small.training.num_steps = 100
  return {"efficientnet_lite0": efficientnet, "small_gap_quickstart": small}


def step_rows(repeats: int = 8) -> list[dict]:
  rows = []
  for name, config in _configs().items():
    ours = SyntheticTrainStep(config)
    own_call = norm.BatchNorm.__call__
    norm.BatchNorm.__call__ = nnx.BatchNorm.__call__
    try:
      theirs = SyntheticTrainStep(config)
    finally:
      norm.BatchNorm.__call__ = own_call
    seconds = alternating_medians({"camjax": ours, "nnx": theirs}, repeats=repeats)
    rows.append({"benchmark": f"batch_norm/train_step/{name}",
                 "value": round(seconds["nnx"] / seconds["camjax"], 3), "unit": "x",
                 "camjax_ms": round(seconds["camjax"] * 1e3, 1), "nnx_ms": round(seconds["nnx"] * 1e3, 1),
                 "batch": config.training.global_batch_size, "size": config.data.image_size})
  return rows


def run(*, steps: bool = True) -> list[dict]:
  return layer_rows() + (step_rows() if steps else [])


if __name__ == "__main__":
  from benchmarks.run import markdown

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--no-steps", dest="steps", action="store_false", help="per-layer rows only")
  print(markdown(run(steps=parser.parse_args().steps)))
  sys.exit(0)
