"""n records per class, fixed by a seed, read from labels alone: the standard's subsampled train_fullsup."""

from __future__ import annotations

import pytest

from camjax.data import subsample
from camjax.errors import UserError


def test_per_class_takes_n_of_every_class_fixed_by_the_seed():
  labels = [0] * 6 + [1] * 6 + [2] * 1
  source = [{"label": c} for c in labels]
  a = subsample.per_class(source, 2, 3, seed=0)
  assert a.per_class == {0: 2, 1: 2, 2: 1} and a.short_classes(2) == [2]  # class 2 has one image: it gets it
  assert sorted(labels[i] for i in a.indices) == [0, 0, 1, 1, 2]
  assert subsample.per_class(source, 2, 3, seed=0).indices == a.indices
  assert {tuple(subsample.per_class(source, 2, 3, seed=s).indices) for s in range(5)} != {tuple(a.indices)}
  chosen = subsample.Subset(source, a.indices)
  assert [chosen[k] for k in range(len(chosen))] == [source[i] for i in a.indices]


def test_per_class_skips_unreadable_records_and_refuses_foreign_labels():
  class Broken(list):
    def __getitem__(self, i):
      if i == 1:
        raise OSError("truncated")
      return super().__getitem__(i)

  choice = subsample.per_class(Broken([{"label": 0}, {"label": 0}, {"label": 1}]), 5, 2, seed=0)
  assert choice.unreadable == [1] and sorted(choice.indices) == [0, 2]
  with pytest.raises(UserError, match="outside model.num_classes=2"):
    subsample.per_class([{"label": 3}], 1, 2, seed=0)
  with pytest.raises(UserError, match="per_class=0"):
    subsample.per_class([{"label": 0}], 0, 1, seed=0)
