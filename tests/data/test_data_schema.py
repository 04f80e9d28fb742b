"""One schema for the data: box conventions, the bad-data error and log, the record a source returns."""

import numpy as np
import pytest

import _train_helpers as h
from camjax import data
from camjax.data import bad_data, boxes as B, examples, pipeline, synthetic
from camjax.errors import UserError
from camjax.train import data as train_data


def test_box_conversions_keep_the_leading_shape_and_invert_each_other():
  px = np.array([[0, 0, 9, 4], [3, 2, 5, 2]])
  norm = B.pixel_to_normalized(px, 5, 10)
  assert norm.shape == (2, 4) and norm.dtype == np.float32
  np.testing.assert_array_equal(B.normalized_to_pixel(norm, 5, 10), px)
  assert B.pixel_to_normalized(px[0], 5, 10).shape == (4,)
  assert B.normalized_to_pixel([], 5, 10).shape == (0, 4)
  assert B.normalized_to_pixel_unchecked([], 5, 10).shape == (0, 4)


def test_checked_conversion_clips_what_the_unchecked_one_shows():
  outside = [[-0.2, 0.5, 0.1, 1.3]]  # above the image and past its right edge
  np.testing.assert_array_equal(B.normalized_to_pixel_unchecked(outside, 10, 10), [[5, -2, 12, 0]])
  np.testing.assert_array_equal(B.normalized_to_pixel(outside, 10, 10), [[5, 0, 9, 0]])


def test_tight_box_takes_2d_and_single_channel_masks():
  mask = np.zeros((6, 8), np.uint8)
  mask[1:3, 2:7] = 255
  np.testing.assert_array_equal(B.tight_box(mask), [2, 1, 6, 2])
  np.testing.assert_array_equal(B.tight_box(mask[:, :, None]), [2, 1, 6, 2])
  assert B.tight_box(np.zeros((3, 3))) is None


def test_one_bad_data_error_everywhere_and_it_is_a_user_error():
  assert pipeline.BadDataError is bad_data.BadDataError is data.BadDataError
  assert issubclass(bad_data.BadDataError, UserError)


def test_bad_data_log_lists_counts_and_restores():
  log = bad_data.BadDataLog("eval[0/1]", "skip", max_listed=1)
  log.bad("a", "bad_box", "inverted", index=3)
  log.bad("b", "bad_image", "not an image")
  log.note("c", "clipped_box", "1 box clipped")
  report = log.report()
  assert report == {"skipped": 2, "counts": {"bad_box": 1, "bad_image": 1, "clipped_box": 1},
                    "records": [{"id": "a", "kind": "bad_box", "detail": "inverted", "index": 3}]}
  again = bad_data.BadDataLog("eval[0/1]", "skip")
  again.load(log.state())
  assert again.report() == report


def test_bad_data_log_fail_names_the_example_on_one_line():
  log = bad_data.BadDataLog("ds split 'test'", "fail", fix="fix it")
  message = r"^ds split 'test': bad example 'x' \(index 4, bad_box\): why; fix it$"
  with pytest.raises(bad_data.BadDataError, match=message):
    log.bad("x", "bad_box", "why", index=4)
  with pytest.raises(ValueError, match="on_bad_data must be one of"):
    bad_data.BadDataLog("x", "ignore")


def test_synthetic_source_returns_the_record_schema():
  config = h.tiny()
  dataset = data.prepare_from_config(config)
  assert data.label_names(dataset) == []
  train = dataset.as_data_source(config.data.train_split)
  evaluation = dataset.as_data_source(config.data.eval_split)
  assert len(train) == examples.ENDLESS and len(evaluation) == config.eval.max_examples
  record = evaluation[3]
  assert set(examples.KEYS) <= set(record) and not examples.source_has_mask(evaluation)
  assert record["image"].shape == (16, 16, 3) and record["image"].dtype == np.float32
  assert record["bboxes"].shape == (1, 4) and record["bboxes"].dtype == np.float32
  assert examples.record_id(record, 3) == f"synthetic/{synthetic.EVAL_OFFSET + 3}"
  with pytest.raises(IndexError):
    evaluation[len(evaluation)]


def test_synthetic_batches_come_from_the_source_records():
  config = h.tiny(**{"eval.max_examples": 5, "eval.batch_size": 4})
  source = data.prepare_from_config(config).as_data_source(config.data.eval_split)
  batches = train_data.eval_batches(config, process_index=0, process_count=1)
  assert len(batches) == 2
  last = list(batches)[-1]
  np.testing.assert_array_equal(last["valid"], [True, False, False, False])
  np.testing.assert_array_equal(last["image"][0], source[4]["image"])
  np.testing.assert_array_equal(last["boxes"][0, 0], B.normalized_to_pixel(source[4]["bboxes"], 16, 16)[0])


def test_synthetic_epoch_length_comes_from_the_source():
  assert train_data.num_train_examples(h.tiny()) == 0  # endless
  config = h.tiny(**{"data.num_train_examples": 12})
  assert train_data.num_train_examples(config) == 12
  assert train_data.steps_for(h.tiny(**{"data.num_train_examples": 12, "training.num_steps": 0,
                                        "training.num_epochs": 2.0})) == 3
