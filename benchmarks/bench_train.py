"""Training throughput of the sharded train step, and its achieved FLOP/s against a matmul peak.

``python -m benchmarks.bench_train``. The step is the one ``camjax.train`` runs
(forward, backward, SGD with per-group learning rates and weight decay) for
googlenet_gap and vgg16_gap at 224 px on all local devices. FLOPs per step come
from XLA's cost analysis of the compiled step; the peak is a float32 matrix
multiply measured in the same run, so the ratio is meaningful on any machine.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp

from benchmarks.common import median_seconds
from benchmarks.train_step import SyntheticTrainStep, synthetic_config

MODELS = ("googlenet_gap", "vgg16_gap")


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of a jitted float32 (n x n) @ (n x n)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  seconds = median_seconds(lambda: f(a, b).block_until_ready(), repeats=repeats)
  return 2.0 * n ** 3 / seconds


def build_step(name: str, *, batch: int, size: int = 224, steps: int = 3) -> dict:
  """The compiled train step of ``name`` as ``camjax.train`` jits it, on a random batch.

  Returns ``step`` (one blocking call, the state carried over), ``flops`` per step and
  ``forward`` (one blocking jitted forward pass of the current parameters in eval mode).
  """
  step = SyntheticTrainStep(synthetic_config(name, batch=batch, size=size, num_steps=steps + 1,
                                              new_layer_patterns=("cam_conv/.*", "head/.*")))

  @jax.jit
  def forward_fn(params, batch_stats, other, images):
    return step.model_def.merge(params, batch_stats, other, train=False)(images)[0]

  def forward() -> None:
    s = step.state
    jax.block_until_ready(forward_fn(s["params"], s["batch_stats"], s["other"], step.data["image"]))

  return {"step": step, "forward": forward, "flops": step.flops}


def step_throughput(name: str, *, batch: int, size: int = 224, steps: int = 3) -> dict:
  """Images per second and FLOP/s of the train step of ``name``."""
  built = build_step(name, batch=batch, size=size, steps=steps)
  flops = built["flops"]
  seconds = median_seconds(built["step"], repeats=steps, warmup=1)
  return {"benchmark": f"train_throughput/{name}", "value": batch / seconds, "unit": "images/s",
          "batch": batch, "size": size, "devices": jax.device_count(), "step_s": round(seconds, 3),
          "flops_per_step": flops, "achieved_flops": flops / seconds}


def run(batch: int = 4) -> list[dict]:
  peak = matmul_peak()
  rows = []
  for name in MODELS:
    try:
      row = step_throughput(name, batch=batch)
    except Exception as e:  # noqa: BLE001 - one broken model must not hide the other's number
      rows.append({"benchmark": f"train_throughput/{name}", "value": float("nan"), "unit": "images/s",
                   "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
      continue
    row["matmul_peak_flops"] = peak
    row["fraction_of_peak"] = row["achieved_flops"] / peak
    rows.append(row)
  rows.append({"benchmark": "train_throughput/matmul_peak", "value": peak / 1e9, "unit": "GFLOP/s",
               "n": 2048, "dtype": "float32"})
  return rows


if __name__ == "__main__":
  from benchmarks.run import markdown

  print(markdown(run()))
  sys.exit(0)
