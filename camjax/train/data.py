"""What the training loop reads: host-local batches from the config's data set.

Every data set, the synthetic one included, is a random-access source from
``camjax.data.prepare_from_config`` (records in the schema of
``camjax.data.examples``). Real data sets are batched by the grain pipeline
(``camjax.data.pipeline``); the synthetic set (``data.name = "synthetic"``, a
coloured square per class on noise, used by tests and benchmarks) is batched in
order, as it is (``camjax.data.synthetic``).

Batches are dicts of host-local numpy arrays: "image" float32 (b, S, S, 3),
"label" int32 (b,), "boxes" float32 (b, max_boxes, 4) inclusive pixel
(x0, y0, x1, y1) padded with -1, "num_boxes" int32, "valid" bool, "index" int64.
Process ``p`` of ``n`` reads rows ``[p * b, (p + 1) * b)`` of every global batch.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from camjax.data import synthetic
from camjax.data.examples import ENDLESS
from camjax.data.synthetic import SYNTHETIC  # noqa: F401  (camjax.main lists it among the data sets)


def _source(config: Any, split: str):
  """Random-access records of ``split`` of the data set the config names."""
  from camjax import data

  return data.prepare_from_config(config).as_data_source(split)


def num_train_examples(config: Any) -> int:
  """Examples per epoch of the training split (0 when the data set is endless)."""
  n = len(_source(config, config.data.train_split))
  return 0 if n >= ENDLESS else n


def augment_settings(config: Any) -> dict:
  """The pipeline's augmentation settings; ``data.augment.enabled=False`` turns them all off."""
  a = config.data.augment
  if not a.enabled:
    return {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "flip": False}
  return {"scale": tuple(a.scale), "ratio": tuple(a.ratio), "flip": bool(a.flip)}


def train_iterator(config: Any, *, process_index: int, process_count: int):
  """Host-local training batches with ``get_state()`` / ``set_state()`` for checkpoints.

  Training reads no mask: a data set's masks (and ignore regions) stay undecoded.
  """
  from camjax import data
  from camjax.data import subsample

  source = subsample.partly_decoded(data.prepare_from_config(config), config.data.train_split, decode=("image",))
  if isinstance(source, synthetic.SyntheticSource):  # records already at the input size: in order, as they are
    return synthetic.SyntheticTrainIterator(
        source, global_batch_size=config.training.global_batch_size, process_index=process_index,
        process_count=process_count, max_boxes=config.data.max_boxes)
  from camjax.data import pipeline

  return pipeline.train_iterator(
      source, masks=False, global_batch_size=config.training.global_batch_size, image_size=config.data.image_size,
      seed=config.training.seed, process_index=process_index, process_count=process_count,
      augment=augment_settings(config), mean=tuple(config.data.mean), std=tuple(config.data.std),
      max_boxes=config.data.max_boxes, on_bad_data=config.data.on_bad_data,
      worker_count=config.data.worker_count)


def eval_batches(config: Any, *, process_index: int, process_count: int) -> Iterator[dict[str, np.ndarray]]:
  """Host-local eval batches padded to ``eval.batch_size`` with a ``valid`` mask; ``len()`` is the batch count."""
  from camjax import data

  dataset = data.prepare_from_config(config)
  source = dataset.as_data_source(config.data.eval_split)
  if isinstance(source, synthetic.SyntheticSource):  # sized by eval.max_examples already
    return synthetic.SyntheticEvalBatches(
        source, global_batch_size=config.eval.batch_size, process_index=process_index,
        process_count=process_count, max_boxes=config.data.max_boxes)
  from camjax.data import pipeline

  if config.eval.max_examples:
    source = pipeline.HeadSource(source, config.eval.max_examples)
  records = eval_records(config, dataset, source) if config.eval.samples_per_class else None
  return pipeline.eval_batches(
      source, records=records, global_batch_size=config.eval.batch_size, image_size=config.data.image_size,
      mode=config.data.eval_mode, process_index=process_index, process_count=process_count,
      mean=tuple(config.data.mean), std=tuple(config.data.std), max_boxes=config.data.max_boxes,
      box_rounding=config.eval.box_rounding if config.data.eval_mode == "resize" else "pixel")


def eval_records(config: Any, dataset: Any, source: Any) -> list[int]:
  """The records of ``source`` (the eval split of ``dataset``) scored: ``eval.samples_per_class`` per class.

  Chosen by ``eval.samples_seed``; labels are read without decoding images. A class
  the split holds fewer images of gets all it has, with a warning (the standard
  refuses such a count).
  """
  import logging

  from camjax.data import pipeline, subsample

  n, split = int(config.eval.samples_per_class), config.data.eval_split
  labels = subsample.partly_decoded(dataset, split)
  if isinstance(source, pipeline.HeadSource):
    labels = pipeline.HeadSource(labels, len(source))
  choice = subsample.per_class(labels, n, int(config.model.num_classes), int(config.eval.samples_seed))
  short = choice.short_classes(n)
  log = logging.getLogger("camjax.eval")
  if short:
    log.warning("eval.samples_per_class=%d: %d of %d classes have fewer images in %r (e.g. class %d: %d); "
                "they are scored on all they have", n, len(short), len(choice.per_class), split, short[0],
                choice.per_class[short[0]])
  log.info("scoring %d images of %r: up to %d per class (eval.samples_seed=%d)", len(choice.indices), split, n,
           config.eval.samples_seed)
  return choice.indices


def mean_box_fraction(config: Any, *, max_records: int = 2000) -> tuple[float, float]:
  """Mean (width, height) of the first ground-truth box of training records, as fractions of the image.

  Gives the centre-box baseline its box size from training data, never from the split it scores.
  """
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
