"""What the training loop reads: host-local batches from the config's data set.

Real data sets go through ``camjax.data`` (TFDS builders) and
``camjax.data.pipeline`` (grain). ``data.name = "synthetic"`` gives a tiny
procedural data set computed on the fly (a coloured square per class on noise,
with its box), used by tests and benchmarks; it needs no preparation.

Batches are dicts of host-local numpy arrays: "image" float32 (b, S, S, 3),
"label" int32 (b,), "boxes" float32 (b, max_boxes, 4) inclusive pixel
(x0, y0, x1, y1) padded with -1, "num_boxes" int32, "valid" bool, "index" int64.
Process ``p`` of ``n`` reads rows ``[p * b, (p + 1) * b)`` of every global batch.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

SYNTHETIC = "synthetic"


def _palette(num_classes: int) -> np.ndarray:
  """Distinct colours per class, evenly spaced in hue."""
  hues = np.arange(num_classes) / max(num_classes, 1)
  k = np.stack([(5 + hues * 6) % 6, (3 + hues * 6) % 6, (1 + hues * 6) % 6], axis=-1)
  return (1.0 - np.clip(np.minimum(k, 4 - k), 0, 1)).astype(np.float32)


def synthetic_example(seed: int, index: int, *, image_size: int, num_classes: int, max_boxes: int) -> dict[str, np.ndarray]:
  """Example ``index`` of the synthetic set: the same value on every host and every run."""
  rng = np.random.default_rng([seed, index])
  label = int(rng.integers(num_classes))
  size = image_size
  image = rng.uniform(0.0, 0.3, (size, size, 3)).astype(np.float32)
  side = int(rng.integers(max(2, size // 4), max(3, size // 2) + 1))
  x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
  image[y0:y0 + side, x0:x0 + side] = _palette(num_classes)[label]
  boxes = np.full((max_boxes, 4), -1.0, np.float32)
  boxes[0] = (x0, y0, x0 + side - 1, y0 + side - 1)
  return {"image": image, "label": np.int32(label), "boxes": boxes, "num_boxes": np.int32(1),
          "valid": np.bool_(True), "index": np.int64(index)}


def _stack(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class SyntheticTrainIterator:
  """Endless batches; the state is the number of global batches already read."""

  def __init__(self, *, seed: int, global_batch_size: int, image_size: int, num_classes: int,
               process_index: int, process_count: int, max_boxes: int = 4):
    if global_batch_size % process_count:
      raise ValueError(f"global batch {global_batch_size} does not split over {process_count} processes")
    self._seed = seed
    self._global = global_batch_size
    self._local = global_batch_size // process_count
    self._offset = process_index * self._local
    self._kw = dict(image_size=image_size, num_classes=num_classes, max_boxes=max_boxes)
    self._next = 0

  def __iter__(self) -> "SyntheticTrainIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    start = self._next * self._global + self._offset
    batch = _stack([synthetic_example(self._seed, i, **self._kw) for i in range(start, start + self._local)])
    self._next += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"next_batch": self._next}

  def set_state(self, state: dict[str, Any]) -> None:
    self._next = int(state["next_batch"])


def synthetic_eval_batches(*, seed: int, num_examples: int, global_batch_size: int, image_size: int,
                           num_classes: int, process_index: int, process_count: int,
                           max_boxes: int = 4) -> Iterator[dict[str, np.ndarray]]:
  """Eval batches over a held-out index range, padded to full batches with valid=False."""
  local = global_batch_size // process_count
  kw = dict(image_size=image_size, num_classes=num_classes, max_boxes=max_boxes)
  offset = 1 << 40  # eval indices never collide with training indices
  for start in range(0, num_examples, global_batch_size):
    rows = []
    for i in range(start + process_index * local, start + (process_index + 1) * local):
      ex = synthetic_example(seed, offset + min(i, num_examples - 1), **kw)
      ex["valid"] = np.bool_(i < num_examples)
      rows.append(ex)
    yield _stack(rows)


def _source(config: Any, split: str):
  """Random-access records of ``split`` from the TFDS builder named by the config."""
  from camjax import data

  builder = data.prepare(config.data.name, config.data.data_dir or None, config.data.builder_config or None,
                         manual_dir=config.data.manual_dir or None, on_bad_data=config.data.on_bad_data)
  return builder.as_data_source(split)


def num_train_examples(config: Any) -> int:
  """Examples per epoch of the training split (0 when the data set is endless)."""
  if config.data.name == SYNTHETIC:
    return int(config.data.num_train_examples)
  return len(_source(config, config.data.train_split))


def augment_settings(config: Any) -> dict:
  """The pipeline's augmentation settings; ``data.augment.enabled=False`` turns them all off."""
  a = config.data.augment
  if not a.enabled:
    return {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "flip": False}
  return {"scale": tuple(a.scale), "ratio": tuple(a.ratio), "flip": bool(a.flip)}


def train_iterator(config: Any, *, process_index: int, process_count: int):
  """Host-local training batches with ``get_state()`` / ``set_state()`` for checkpoints."""
  if config.data.name == SYNTHETIC:
    return SyntheticTrainIterator(
        seed=config.training.seed, global_batch_size=config.training.global_batch_size,
        image_size=config.data.image_size, num_classes=config.model.num_classes,
        process_index=process_index, process_count=process_count, max_boxes=config.data.max_boxes)
  from camjax.data import pipeline

  return pipeline.train_iterator(
      _source(config, config.data.train_split),
      global_batch_size=config.training.global_batch_size, image_size=config.data.image_size,
      seed=config.training.seed, process_index=process_index, process_count=process_count,
      augment=augment_settings(config), mean=tuple(config.data.mean), std=tuple(config.data.std),
      max_boxes=config.data.max_boxes, on_bad_data=config.data.on_bad_data,
      worker_count=config.data.worker_count)


def eval_batches(config: Any, *, process_index: int, process_count: int) -> Iterator[dict[str, np.ndarray]]:
  """Host-local eval batches padded to ``eval.batch_size`` with a ``valid`` mask."""
  if config.data.name == SYNTHETIC:
    n = config.eval.max_examples or 4 * config.eval.batch_size
    return synthetic_eval_batches(
        seed=config.training.seed, num_examples=n, global_batch_size=config.eval.batch_size,
        image_size=config.data.image_size, num_classes=config.model.num_classes,
        process_index=process_index, process_count=process_count, max_boxes=config.data.max_boxes)
  from camjax.data import pipeline

  source = _source(config, config.data.eval_split)
  if config.eval.max_examples:
    source = pipeline.HeadSource(source, config.eval.max_examples)
  return pipeline.eval_batches(
      source, global_batch_size=config.eval.batch_size, image_size=config.data.image_size,
      mode=config.data.eval_mode, process_index=process_index, process_count=process_count,
      mean=tuple(config.data.mean), std=tuple(config.data.std), max_boxes=config.data.max_boxes,
      box_rounding=config.eval.box_rounding if config.data.eval_mode == "resize" else "pixel")


def mean_box_fraction(config: Any, *, max_records: int = 2000) -> tuple[float, float]:
  """Mean (width, height) of the first ground-truth box of training records, as fractions of the image.

  Gives the centre-box baseline its box size from training data, never from the split it scores.
  """
  if config.data.name == SYNTHETIC:
    size = config.data.image_size
    boxes = [synthetic_example(config.training.seed, i, image_size=size, num_classes=config.model.num_classes,
                               max_boxes=1)["boxes"][0] for i in range(min(max_records, 256))]
    sides = np.array([(b[2] - b[0] + 1, b[3] - b[1] + 1) for b in boxes], np.float64) / size
    return float(sides[:, 0].mean()), float(sides[:, 1].mean())
  source = _source(config, config.data.train_split)
  sides = []
  for i in range(min(max_records, len(source))):
    bboxes = np.asarray(source[i]["bboxes"], np.float64).reshape(-1, 4)
    if len(bboxes):
      ymin, xmin, ymax, xmax = bboxes[0]
      sides.append((xmax - xmin, ymax - ymin))
  if not sides:
    raise ValueError(f"no ground-truth box in the first {max_records} records of {config.data.train_split!r}; "
                     "set --config.eval.baseline=False")
  width, height = np.mean(sides, axis=0)
  return float(width), float(height)


def steps_for(config: Any) -> int:
  """Total training steps: ``training.num_steps`` if > 0, else epochs over the training split."""
  if config.training.num_steps > 0:
    return int(config.training.num_steps)
  if config.training.num_epochs <= 0:
    raise ValueError("set --config.training.num_steps or --config.training.num_epochs to a positive value")
  n = num_train_examples(config)
  if n <= 0:
    raise ValueError(f"data set {config.data.name!r} has no epoch length; set --config.training.num_steps")
  return max(1, math.ceil(config.training.num_epochs * n / config.training.global_batch_size))
