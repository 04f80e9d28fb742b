"""The train step ``camjax.train`` compiles, on one fixed random batch: what the step benchmarks time."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from camjax import train
from camjax.train import sharding
from configs import default


def synthetic_config(model: str, *, batch: int, size: int, num_steps: int,
                     new_layer_patterns: Sequence[str] = ("head/.*",)) -> ml_collections.ConfigDict:
  """The default config training ``model`` on synthetic data: what the train-step benchmarks compile."""
  c = default.get_config()
  c.model.name = model
  c.data.name = "synthetic"
  c.data.image_size = size
  c.optimizer.new_layer_patterns = tuple(new_layer_patterns)
  c.training.global_batch_size = batch
  c.training.num_steps = num_steps
  return c


class SyntheticTrainStep:
  """``camjax.train``'s jitted step (forward, backward, optimizer) for ``config`` on one random batch.

  Each call runs one blocking step; the state is donated and carried over, as in
  training. ``flops`` is XLA's count for one step; ``model_def`` and ``state`` let a
  benchmark run other programs on the current parameters.
  """

  def __init__(self, config: Any, *, images: np.ndarray | None = None) -> None:
    batch, size = config.training.global_batch_size, config.data.image_size
    rng = np.random.default_rng(0)
    if images is None:
      images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    mesh = sharding.make_mesh(-1, 1)
    self.state, shardings, self.model_def, tx, schedule = train.init_state(
        config, mesh, config.training.num_steps, pretrained=False)
    step_fn = train.make_train_step(self.model_def, tx, schedule, config, mesh)
    self.data = sharding.global_batch(mesh, {
        "image": images, "label": rng.integers(0, config.model.num_classes, batch).astype(np.int32)})
    batch_shardings = {"image": sharding.batch_sharding(mesh), "label": sharding.batch_sharding(mesh)}
    self.compiled = jax.jit(step_fn, in_shardings=(shardings, batch_shardings),
                            out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=(0,),
                            compiler_options=train.compiler_options(mesh)).lower(self.state, self.data).compile()

  @property
  def flops(self) -> float:
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", float("nan")))

  def __call__(self) -> None:
    self.state, metrics = self.compiled(self.state, self.data)
    jax.block_until_ready(metrics)
