"""A fixed number of records per class from a split: the WSOL standard's subsampled ``train_fullsup``.

The standard scores hyperparameter candidates on ``train_fullsup`` and studies
how few fully supervised images that choice needs (``num_val_sample_per_class``:
up to 5 on CUB, 25 on OpenImages, 10 on ImageNet). The few-shot baseline trains
on the same kind of choice. ``per_class`` makes it, fixed by a seed, reading
only labels, and ``Subset`` serves the chosen records as a source of their own.
``partly_decoded`` reads a split with the image features it is not asked for left
encoded: labels without decoding any image, training images without their masks.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds

from camjax.errors import UserError

log = logging.getLogger("camjax.data")


@dataclasses.dataclass
class Choice:
  """The records ``per_class`` took: split indices (class by class) and what each class got."""

  indices: list[int]
  per_class: dict[int, int]  # class -> records taken (< n when the split has fewer)
  unreadable: list[int]  # indices whose record could not be read (skipped)

  def short_classes(self, n: int) -> list[int]:
    """Classes that got fewer than ``n`` records (the split holds fewer)."""
    return [c for c, k in self.per_class.items() if k < n]


def per_class(source: Any, n: int, num_classes: int, seed: int) -> Choice:
  """``n`` records of every class of ``source``, the first ones met in a permutation fixed by ``seed``.

  Walks the permutation only until every class is full, so a large split is read
  no further than needed. A class with fewer records gets all it has.
  """
  if n < 1:
    raise UserError(f"per_class={n}; give at least 1 image per class")
  taken: dict[int, list[int]] = {c: [] for c in range(num_classes)}
  unreadable: list[int] = []
  full = 0
  for index in np.random.default_rng(seed).permutation(len(source)):
    try:
      label = int(source[int(index)]["label"])
    except Exception as e:  # noqa: BLE001 - a corrupt record is skipped and listed, as the pipeline does
      log.warning("record %d cannot be read (%s: %s); skipped", index, type(e).__name__, e)
      unreadable.append(int(index))
      continue
    if not 0 <= label < num_classes:
      raise UserError(f"record {index} has label {label}, outside model.num_classes={num_classes}; "
                      "set --config.model.num_classes to the data set's class count")
    if len(taken[label]) < n:
      taken[label].append(int(index))
      full += len(taken[label]) == n
      if full == num_classes:
        break
  indices = [i for c in range(num_classes) for i in taken[c]]
  if not indices:
    raise UserError("the split gave no readable record to choose from; check the split")
  return Choice(indices, {c: len(v) for c, v in taken.items()}, unreadable)


class Encoded(tfds.decode.Decoder):
  """Leaves an image feature as its stored bytes (``tfds.decode.SkipDecoding`` does not reach data sources)."""

  def decode_example(self, serialized_example):
    return serialized_example


class Subset:
  """Records ``indices`` of a random-access source, as a source of their own (for the grain pipeline)."""

  def __init__(self, source: Any, indices: Sequence[int]):
    self._source = source
    self._indices = [int(i) for i in indices]
    self.dataset_info = getattr(source, "dataset_info", None)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> Any:
    return self._source[self._indices[index]]


def partly_decoded(dataset: Any, split: str, *, decode: Sequence[str] = ()) -> Any:
  """``split`` of a prepared data set with its image features left as stored bytes, except ``decode``.

  Reading labels (or one small feature) this way costs no image decoding. A data
  set without TFDS features (the synthetic one) is returned as it is.
  """
  info = getattr(dataset, "info", None)
  if info is None:
    return dataset.as_data_source(split)
  encoded = {key: Encoded() for key, feature in info.features.items()
             if key not in decode and isinstance(feature, tfds.features.Image)}
  return dataset.as_data_source(split, decoders=encoded)
