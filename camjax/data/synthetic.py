"""The synthetic data set: a coloured square per class on noise, computed on the fly.

Used by tests and benchmarks; it needs no preparation and no files. Record
``index`` depends on (seed, index) only, so every host and every run sees the
same records. ``SyntheticSource`` gives random access to them in the record
schema of ``camjax.data.examples``, with one difference: the image is float32 in
[0, 1], already at the model's input size. Its batches are therefore made here,
in order and without augmentation or normalization (``SyntheticTrainIterator``,
``SyntheticEvalBatches``), not by the grain pipeline; a training iterator's
state is the number of global batches read, the same on every process.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from camjax.data import boxes as box_lib
from camjax.data.examples import ENDLESS, local_batch_size

SYNTHETIC = "synthetic"
EVAL_OFFSET = 1 << 40  # the first record of the evaluation split: never a training record


def _palette(num_classes: int) -> np.ndarray:
  """Distinct colours per class, evenly spaced in hue."""
  hues = np.arange(num_classes) / max(num_classes, 1)
  k = np.stack([(5 + hues * 6) % 6, (3 + hues * 6) % 6, (1 + hues * 6) % 6], axis=-1)
  return (1.0 - np.clip(np.minimum(k, 4 - k), 0, 1)).astype(np.float32)


def synthetic_record(seed: int, index: int, *, image_size: int, num_classes: int) -> dict[str, Any]:
  """Record ``index`` of the synthetic set: the same value on every host and every run."""
  rng = np.random.default_rng([seed, index])
  label = int(rng.integers(num_classes))
  size = image_size
  image = rng.uniform(0.0, 0.3, (size, size, 3)).astype(np.float32)
  side = int(rng.integers(max(2, size // 4), max(3, size // 2) + 1))
  x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
  image[y0:y0 + side, x0:x0 + side] = _palette(num_classes)[label]
  bboxes = box_lib.pixel_to_normalized([[x0, y0, x0 + side - 1, y0 + side - 1]], size, size)
  return {"image": image, "label": np.int64(label), "bboxes": bboxes, "id": f"{SYNTHETIC}/{index}"}


class SyntheticSource:
  """Random access to ``length`` synthetic records starting at record ``first``."""

  def __init__(self, seed: int, length: int, *, image_size: int, num_classes: int, first: int = 0):
    self.seed, self.length, self.first = int(seed), int(length), int(first)
    self.image_size, self.num_classes = int(image_size), int(num_classes)

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < self.length:
      raise IndexError(index)
    return synthetic_record(self.seed, self.first + int(index), image_size=self.image_size,
                            num_classes=self.num_classes)


class SyntheticData:
  """The synthetic data set a config names, with the surface of a prepared builder that camjax uses."""

  name = SYNTHETIC
  label_names: tuple[str, ...] = ()  # classes have no names

  def __init__(self, *, seed: int, image_size: int, num_classes: int, train_split: str = "train",
               num_train_examples: int = 0, num_eval_examples: int = 0):
    self.seed, self.image_size, self.num_classes = seed, image_size, num_classes
    self.train_split = train_split
    self.num_train_examples, self.num_eval_examples = num_train_examples, num_eval_examples

  @classmethod
  def from_config(cls, config: Any) -> "SyntheticData":
    """Training split: ``data.num_train_examples`` records (0 = endless); every other split is the
    evaluation range, ``eval.max_examples`` records (0 = four evaluation batches)."""
    return cls(seed=int(config.training.seed), image_size=int(config.data.image_size),
               num_classes=int(config.model.num_classes), train_split=config.data.train_split,
               num_train_examples=int(config.data.num_train_examples),
               num_eval_examples=int(config.eval.max_examples or 4 * config.eval.batch_size))

  def as_data_source(self, split: str) -> SyntheticSource:
    kw = dict(image_size=self.image_size, num_classes=self.num_classes)
    if split == self.train_split:
      return SyntheticSource(self.seed, self.num_train_examples or ENDLESS, **kw)
    return SyntheticSource(self.seed, self.num_eval_examples, first=EVAL_OFFSET, **kw)


def _row(source: SyntheticSource, i: int, max_boxes: int, valid: bool = True) -> dict[str, np.ndarray]:
  """Batch row of record ``i``: the record's image as it is, its box in inclusive pixels."""
  record = source[i]
  size = record["image"].shape[0]
  found = box_lib.normalized_to_pixel(record["bboxes"], size, size)[:max_boxes]
  boxes = np.full((max_boxes, 4), -1.0, np.float32)
  boxes[:len(found)] = found
  return {"image": record["image"], "label": np.int32(record["label"]), "boxes": boxes,
          "num_boxes": np.int32(len(found)), "valid": np.bool_(valid), "index": np.int64(source.first + i)}


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class _Batches:
  """This process's rows of global batches: ``_local`` rows starting ``_offset`` into each batch."""

  def __init__(self, source: SyntheticSource, *, global_batch_size: int, process_index: int, process_count: int,
               max_boxes: int = 4):
    self._source = source
    self._global = global_batch_size
    self._local = local_batch_size(global_batch_size, process_count)
    self._offset = process_index * self._local
    self._max_boxes = max_boxes


class SyntheticTrainIterator(_Batches):
  """Endless batches in record order (wrapping around a finite source); the state is the global batches read."""

  def __init__(self, source: SyntheticSource, **kwargs):
    super().__init__(source, **kwargs)
    self._next = 0

  def __iter__(self) -> "SyntheticTrainIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    start = self._next * self._global + self._offset
    n = len(self._source)
    batch = _stack([_row(self._source, i % n, self._max_boxes) for i in range(start, start + self._local)])
    self._next += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"next_batch": self._next}

  def set_state(self, state: dict[str, Any]) -> None:
    self._next = int(state["next_batch"])


class SyntheticEvalBatches(_Batches):
  """Every record once across processes, padded to full batches with valid=False; ``len()`` is the same on all."""

  def __len__(self) -> int:
    return -(-len(self._source) // self._global)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    n = len(self._source)
    for start in range(0, n, self._global):
      first = start + self._offset
      # Padding repeats the last record, marked invalid.
      yield _stack([_row(self._source, min(i, n - 1), self._max_boxes, valid=i < n)
                    for i in range(first, first + self._local)])
