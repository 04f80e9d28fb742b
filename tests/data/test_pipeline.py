"""grain pipelines: sharding, padding, alignment, state round trips, bad data."""

import json
import logging

import numpy as np
import pytest

from camjax.data import pipeline as P
from camjax.data import boxes as B
from camjax.data import transforms as T

MEAN, STD = np.array(T.IMAGENET_MEAN), np.array(T.IMAGENET_STD)


def _record(index: int, masks: bool = False) -> dict:
  """A dark image of varying size with one white filled box."""
  rng = np.random.default_rng(index)
  height, width = int(rng.integers(30, 70)), int(rng.integers(30, 70))
  bw, bh = int(rng.integers(8, width + 1)), int(rng.integers(8, height + 1))
  x0, y0 = int(rng.integers(0, width - bw + 1)), int(rng.integers(0, height - bh + 1))
  image = np.zeros((height, width, 3), np.uint8)
  image[y0:y0 + bh, x0:x0 + bw] = 255
  box = [[x0, y0, x0 + bw - 1, y0 + bh - 1]]
  record = {"image": image, "label": index % 5, "id": f"img{index:03d}".encode(),
            "bboxes": B.pixel_to_normalized(box, height, width)}
  if masks:
    record["mask"] = image[:, :, :1].copy()
  return record


class Source:
  """In-memory random-access source; `broken` maps an index to a record edit or an exception."""

  def __init__(self, n: int, masks: bool = False, broken: dict | None = None):
    self.n, self.masks, self.broken = n, masks, broken or {}

  def __len__(self):
    return self.n

  def __getitem__(self, index):
    if not 0 <= index < self.n:
      raise IndexError(index)
    record = _record(index, self.masks)
    edit = self.broken.get(index)
    if isinstance(edit, Exception):
      raise edit
    if edit is not None:
      record = edit(record)
    return record


def _pixels(batch):
  """Un-normalized images, thresholded."""
  return (batch["image"] * STD + MEAN)[..., 0] > 0.5


def _check_alignment(batch, with_mask: bool):
  checked = 0
  for i in np.nonzero(batch["valid"])[0]:
    n = batch["num_boxes"][i]
    from_image = B.tight_box(_pixels(batch)[i])
    if n == 0:
      assert from_image is None
      continue
    box = batch["boxes"][i, 0]
    assert np.all(batch["boxes"][i, n:] == -1)
    if min(box[2:] - box[:2]) < 3:
      continue  # a sliver left by the crop: too faint to recover from pixels
    np.testing.assert_allclose(box, from_image, atol=1)
    if with_mask:
      np.testing.assert_array_equal(box, B.tight_box(batch["mask"][i]))
    checked += 1
  return checked


def test_train_batches_have_the_schema_and_aligned_boxes():
  it = P.train_iterator(Source(20, masks=True), global_batch_size=8, image_size=32, seed=0,
                        process_index=0, process_count=1)
  checked = 0
  for _ in range(6):
    batch = next(it)
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["num_boxes"].dtype == np.int32
    assert batch["boxes"].shape == (8, 16, 4) and batch["boxes"].dtype == np.float32
    assert batch["mask"].shape == (8, 32, 32) and set(np.unique(batch["mask"])) <= {0, 1}
    assert batch["valid"].all() and batch["index"].dtype == np.int64
    np.testing.assert_array_equal(batch["label"], batch["index"] % 5)
    checked += _check_alignment(batch, with_mask=True)
  assert checked > 20


@pytest.mark.parametrize("mode", P.EVAL_MODES)
def test_eval_batches_have_aligned_boxes(mode):
  batches = P.eval_batches(Source(10, masks=True), global_batch_size=4, image_size=40, mode=mode,
                           process_index=0, process_count=1)
  assert _check_alignment(next(iter(batches)), with_mask=True) >= 2


def test_no_mask_key_without_masks_and_wsol_rounding():
  source = Source(3)
  batch = next(iter(P.eval_batches(source, global_batch_size=3, image_size=224,
                                   box_rounding="wsol", process_index=0, process_count=1)))
  assert "mask" not in batch
  for i in range(3):
    record = source[i]
    height, width = record["image"].shape[:2]
    pixel = B.normalized_to_pixel_unchecked(record["bboxes"], height, width)
    np.testing.assert_array_equal(batch["boxes"][i, :1],
                                  T.wsol_scale_boxes(pixel, height, width, 224))


@pytest.mark.parametrize("num_records", [23, 16, 3])
def test_eval_covers_every_record_once_across_two_processes(num_records):
  runs = [list(P.eval_batches(Source(num_records), global_batch_size=8, image_size=16,
                              process_index=p, process_count=2)) for p in range(2)]
  expected = P.num_eval_batches(num_records, 8, 2)
  assert [len(r) for r in runs] == [expected, expected]
  valid = np.concatenate([b["index"][b["valid"]] for r in runs for b in r])
  assert sorted(valid.tolist()) == list(range(num_records))
  for r in runs:
    for b in r:
      assert b["image"].shape[0] == 4
      assert np.all(b["index"][~b["valid"]] == -1)
      assert np.all(b["image"][~b["valid"]] == 0)


def test_eval_of_chosen_records_gives_their_indices_and_labels_once_across_two_processes():
  chosen = [17, 2, 9, 4, 11]
  source = Source(20)
  runs = [list(P.eval_batches(source, global_batch_size=4, image_size=16, process_index=p, process_count=2,
                              records=chosen)) for p in range(2)]
  assert [len(r) for r in runs] == [2, 2]
  rows = [(int(i), int(label)) for r in runs for b in r for i, label in zip(b["index"][b["valid"]],
                                                                            b["label"][b["valid"]])]
  assert sorted(rows) == sorted((i, source[i]["label"]) for i in chosen)  # the batch's index is the record's
  assert all(np.all(b["index"][~b["valid"]] == -1) for r in runs for b in r)


def test_eval_global_batch_k_holds_records_k_times_g():
  runs = [list(P.eval_batches(Source(13), global_batch_size=6, image_size=16,
                              process_index=p, process_count=3)) for p in range(3)]
  for k in range(3):
    index = np.concatenate([runs[p][k]["index"] for p in range(3)])
    expected = np.arange(6 * k, 6 * k + 6)
    np.testing.assert_array_equal(index, np.where(expected < 13, expected, -1))


def test_num_eval_batches():
  assert P.num_eval_batches(50000, 256, 4) == 196
  assert P.num_eval_batches(8, 8, 2) == 1
  assert P.num_eval_batches(0, 8, 2) == 0


def _epoch_indices(process_index, process_count, n, batch=2):
  it = P.train_iterator(Source(n), global_batch_size=batch * process_count, image_size=8,
                        seed=3, process_index=process_index, process_count=process_count)
  shard = len(range(process_index, n, process_count))
  out = []
  while len(out) < 2 * shard:
    out.extend(next(it)["index"].tolist())
  return out[:shard], out[shard:2 * shard]


def test_train_shards_are_disjoint_and_cover_the_split():
  first0, second0 = _epoch_indices(0, 2, 23)
  first1, _ = _epoch_indices(1, 2, 23)
  assert set(first0).isdisjoint(first1)
  assert sorted(first0 + first1) == list(range(23))
  assert sorted(first0) == sorted(second0)  # each epoch is a permutation of the shard
  assert first0 != second0  # reshuffled between epochs


def test_train_depends_on_seed():
  a = next(P.train_iterator(Source(20), global_batch_size=4, image_size=8, seed=0,
                            process_index=0, process_count=1))
  b = next(P.train_iterator(Source(20), global_batch_size=4, image_size=8, seed=1,
                            process_index=0, process_count=1))
  assert not np.array_equal(a["index"], b["index"])


def _assert_batches_equal(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
      assert x[k].dtype == y[k].dtype


def test_train_state_restores_the_same_batches():
  kwargs = dict(global_batch_size=4, image_size=24, seed=7, process_index=1, process_count=2,
                on_bad_data="skip")
  source = Source(17, masks=True, broken={5: OSError("truncated file")})
  it = P.train_iterator(source, **kwargs)
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(4)]
  it.close()
  restored = P.train_iterator(source, **kwargs)
  restored.set_state(state)
  _assert_batches_equal([next(restored) for _ in range(4)], expected)
  assert restored.get_state() == it.get_state()
  restored.set_state(json.dumps(state).encode())  # bytes work too, and rewind
  _assert_batches_equal([next(restored) for _ in range(4)], expected)


def test_state_of_other_settings_is_refused():
  it = P.train_iterator(Source(10), global_batch_size=2, image_size=8, seed=0,
                        process_index=0, process_count=1)
  state = it.get_state()
  other = P.train_iterator(Source(10), global_batch_size=2, image_size=8, seed=1,
                           process_index=0, process_count=1)
  with pytest.raises(ValueError, match="seed"):
    other.set_state(state)
  with pytest.raises(ValueError, match="format"):
    other.set_state({"next_index": 3})


def test_worker_processes_give_the_same_batches_and_restore():
  source = [_record(i) for i in range(14)]  # a list pickles into the workers
  kwargs = dict(global_batch_size=4, image_size=16, seed=1, process_index=0, process_count=1)
  reference = P.train_iterator(source, **kwargs)
  expected = [next(reference) for _ in range(5)]
  with P.train_iterator(source, worker_count=2, **kwargs) as it:
    got = [next(it) for _ in range(2)]
    state = it.get_state()
  with P.train_iterator(source, worker_count=1, **kwargs) as restored:
    restored.set_state(state)
    got += [next(restored) for _ in range(3)]
  _assert_batches_equal(got, expected)
  evaluated = list(P.eval_batches(source, global_batch_size=4, image_size=16, worker_count=2,
                                  process_index=0, process_count=1))
  _assert_batches_equal(evaluated, list(P.eval_batches(
      source, global_batch_size=4, image_size=16, process_index=0, process_count=1)))


def test_grain_checkpoint_handler_round_trip(tmp_path):
  import grain
  from etils import epath
  source = Source(12)
  kwargs = dict(global_batch_size=2, image_size=8, seed=0, process_index=0, process_count=1)
  it = P.train_iterator(source, **kwargs)
  next(it)
  handler = grain.checkpoint.CheckpointHandler()
  handler.save(epath.Path(tmp_path), args=grain.checkpoint.CheckpointSave(it.checkpointable()))
  expected = next(it)
  restored = P.train_iterator(source, **kwargs)
  handler.restore(epath.Path(tmp_path),
                  args=grain.checkpoint.CheckpointRestore(restored.checkpointable()))
  _assert_batches_equal([next(restored)], [expected])


def test_batch_size_must_divide_by_process_count():
  with pytest.raises(ValueError, match=r"global batch size 10 must be a positive multiple of the 4 processes"):
    P.train_iterator(Source(10), global_batch_size=10, image_size=8, seed=0,
                     process_index=0, process_count=4)
  with pytest.raises(ValueError, match="global batch size 6"):
    P.eval_batches(Source(10), global_batch_size=6, image_size=8, process_index=0, process_count=4)


def test_bad_config_values_fail_with_a_clear_message():
  common = dict(global_batch_size=2, image_size=8, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="unknown augment keys"):
    P.train_iterator(Source(4), seed=0, augment={"scael": (0.5, 1)}, **common)
  with pytest.raises(ValueError, match="on_bad_data"):
    P.train_iterator(Source(4), seed=0, on_bad_data="ignore", **common)
  with pytest.raises(ValueError, match="mode"):
    P.eval_batches(Source(4), mode="crop", **common)
  with pytest.raises(ValueError, match="process_count"):
    P.train_iterator(Source(1), seed=0, global_batch_size=2, image_size=8,
                     process_index=1, process_count=2)


# ----------------------------------------------------------------------------
# Bad data.


def _inverted_box(r):
  return dict(r, bboxes=np.array([[0.1, 0.6, 0.5, 0.2]], np.float32))


def _outside_box(r):
  return dict(r, bboxes=np.array([[0.1, 1.2, 0.5, 1.5]], np.float32))


def _bad_image(r):
  return dict(r, image=np.zeros((10, 10, 4), np.uint8))


def _no_label(r):
  return {k: v for k, v in r.items() if k != "label"}


def _no_mask(r):
  return {k: v for k, v in r.items() if k != "mask"}


BAD_CASES = {
    "unreadable": OSError("image file is truncated"),
    "bad_box": _inverted_box,
    "bad_box_outside": _outside_box,
    "bad_image": _bad_image,
    "bad_record": _no_label,
    "bad_mask": _no_mask,
}


def _bad_source(case):
  return Source(9, masks=True, broken={4: BAD_CASES[case]})


def _kind(case):
  return case.replace("_outside", "")


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_record_is_skipped_counted_and_logged_in_training(case, caplog):
  it = P.train_iterator(_bad_source(case), global_batch_size=4, image_size=8, seed=0,
                        process_index=0, process_count=1)
  with caplog.at_level(logging.WARNING, logger="camjax.data"):
    seen = np.concatenate([next(it)["index"] for _ in range(3)])  # > one epoch of 8 good
  assert 4 not in seen
  report = it.bad_data_report()
  assert report["counts"][_kind(case)] >= 1 and report["skipped"] >= 1
  rid = "index 4" if case == "unreadable" else "img004"
  assert report["records"][0]["id"] == rid and report["records"][0]["index"] == 4
  assert rid in caplog.text
  assert it.get_state()["next_index"] == 12 + report["skipped"]


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_record_fails_when_asked_in_training(case):
  it = P.train_iterator(_bad_source(case), global_batch_size=9, image_size=8, seed=0,
                        process_index=0, process_count=1, on_bad_data="fail")
  with pytest.raises(P.BadDataError, match=_kind(case)):
    next(it)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_record_in_evaluation(case):
  common = dict(global_batch_size=4, image_size=8, process_index=0, process_count=1)
  with pytest.raises(P.BadDataError, match=r"index 4"):  # fail is the evaluation default
    list(P.eval_batches(_bad_source(case), **common))
  batches = P.eval_batches(_bad_source(case), on_bad_data="skip", **common)
  out = list(batches)
  valid = np.concatenate([b["index"][b["valid"]] for b in out])
  assert sorted(valid.tolist()) == [0, 1, 2, 3, 5, 6, 7, 8]
  np.testing.assert_array_equal(out[1]["index"], [4, 5, 6, 7])  # the slot keeps its index
  assert batches.bad_data_report()["counts"] == {_kind(case): 1}


def test_box_partly_outside_is_clipped_and_counted():
  def partly_outside(r):
    return dict(r, bboxes=np.array([[-0.2, 0.0, 0.5, 1.3]], np.float32))

  source = Source(2, broken={1: partly_outside})
  batches = P.eval_batches(source, global_batch_size=2, image_size=20,
                           process_index=0, process_count=1)
  batch = next(iter(batches))
  assert batch["valid"].all()
  # y from -0.2 (clipped to 0) to 0.5, x over the full width.
  height = source[1]["image"].shape[0]
  y1 = T.map_boxes([[0, 0, 0, round(0.5 * height) - 1]], (0, 0, 1, height), (20, 20))[0][0, 3]
  np.testing.assert_array_equal(batch["boxes"][1, 0], [0, 0, 19, y1])
  assert batches.bad_data_report() == {"skipped": 0, "counts": {"clipped_box": 1}, "records": []}


def test_too_many_boxes_keeps_the_first_and_counts():
  def three_boxes(r):
    return dict(r, bboxes=np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1]], np.float32))

  batches = P.eval_batches(Source(2, broken={0: three_boxes}), global_batch_size=2,
                           image_size=20, max_boxes=2, process_index=0, process_count=1)
  batch = next(iter(batches))
  assert batch["boxes"].shape == (2, 2, 4)
  np.testing.assert_array_equal(batch["num_boxes"], [2, 1])
  np.testing.assert_array_equal(batch["boxes"][0], [[0, 0, 9, 9], [10, 10, 19, 19]])
  assert batches.bad_data_report()["counts"] == {"too_many_boxes": 1}


def test_record_without_boxes_is_fine():
  batches = P.eval_batches(Source(2, broken={0: lambda r: dict(r, bboxes=[])}),
                           global_batch_size=2, image_size=8, process_index=0, process_count=1)
  batch = next(iter(batches))
  np.testing.assert_array_equal(batch["num_boxes"], [0, 1])
  assert np.all(batch["boxes"][0] == -1) and batch["valid"].all()


def test_all_bad_training_source_raises_instead_of_spinning():
  source = Source(3, broken={i: OSError("gone") for i in range(3)})
  it = P.train_iterator(source, global_batch_size=1, image_size=8, seed=0,
                        process_index=0, process_count=1)
  with pytest.raises(P.BadDataError, match="no usable record"):
    next(it)


# ----------------------------------------------------------------------------
# A real TFDS data source: the built-in data set's tiny config.


@pytest.fixture(scope="module")
def shapes_source(tmp_path_factory):
  from camjax import data
  builder = data.prepare("camjax_shapes", str(tmp_path_factory.mktemp("tfds")), "tiny")
  return builder.as_data_source("validation")


def test_tfds_source_through_both_pipelines(shapes_source):
  n = len(shapes_source)
  runs = [list(P.eval_batches(shapes_source, global_batch_size=10, image_size=48,
                              process_index=p, process_count=2)) for p in range(2)]
  valid = np.concatenate([b["index"][b["valid"]] for r in runs for b in r])
  assert sorted(valid.tolist()) == list(range(n))
  checked = 0
  for batch in runs[0] + runs[1]:
    for i in np.nonzero(batch["valid"])[0]:
      # The stored box is the tight box of the stored mask; upscaled, they stay equal.
      np.testing.assert_array_equal(batch["boxes"][i, 0], B.tight_box(batch["mask"][i]))
      checked += 1
  assert checked == n
  it = P.train_iterator(shapes_source, global_batch_size=8, image_size=24, seed=0,
                        process_index=1, process_count=2)
  batch = next(it)
  assert batch["image"].shape == (4, 24, 24, 3) and batch["mask"].shape == (4, 24, 24)
  assert set(batch["index"].tolist()) <= set(range(1, n, 2))
  assert it.bad_data_report()["skipped"] == 0
