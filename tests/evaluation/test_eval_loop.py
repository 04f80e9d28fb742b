"""The evaluation loop's progress bar knows how many batches are coming, on every data set."""

import pytest

import _train_helpers as h
from camjax.evaluation import loop as eval_loop
from camjax.train import data as train_data
from camjax.data import pipeline
from test_pipeline import Source


@pytest.mark.parametrize("max_examples, batch_size, processes, expected", [
    (16, 8, 1, 2),
    (10, 4, 1, 3),   # the last batch is padded
    (10, 4, 2, 3),   # every process runs the same number of batches
    (0, 4, 1, 4),    # 0: the synthetic split's default size, 4 batches
])
def test_synthetic_split_batch_count_is_the_progress_total(max_examples, batch_size, processes, expected):
  config = h.tiny(**{"eval.max_examples": max_examples, "eval.batch_size": batch_size})
  runs = [train_data.eval_batches(config, process_index=p, process_count=processes) for p in range(processes)]
  assert [eval_loop.num_eval_batches(run) for run in runs] == [expected] * processes
  assert [len(list(run)) for run in runs] == [expected] * processes


def test_pipeline_batches_give_their_own_length():
  batches = pipeline.eval_batches(Source(13), global_batch_size=6, image_size=16, process_index=1, process_count=2)
  assert eval_loop.num_eval_batches(batches) == 3 == len(list(batches))
  assert eval_loop.num_eval_batches(iter([])) is None  # unknown: the bar shows a count only


def test_report_data_counts_each_class_and_ranks_images_by_iou():
  rows = [[0, 1, 1, 0.9], [1, 1, 0, 0.2], [2, 0, 0, 0.5], [3, 0, 1, 0.7], [4, 2, 2, 0.0]]
  data = eval_loop.report_data(rows, None, None, extremes=2)
  assert data["per_class"] == {"0": {"images": 2, "top1": 50.0, "gt_known_loc": 100.0},
                               "1": {"images": 2, "top1": 50.0, "gt_known_loc": 50.0},
                               "2": {"images": 1, "top1": 100.0, "gt_known_loc": 0.0}}
  assert [r["index"] for r in data["best"]] == [0, 3] and [r["index"] for r in data["worst"]] == [4, 1]
  assert "box_acc" not in data and "pxap_pr" not in data
