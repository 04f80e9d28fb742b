"""TFDS builders: built-in shapes data, ILSVRC / CUB from fake manual folders, WSOL metadata, bad data."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from camjax import data
from camjax.data import bad_data, boxes as B, examples, records, shapes
from tests import fake_layouts as fake


def _all(builder, split):
  src = builder.as_data_source(split)
  return {r["id"].decode(): r for r in (src[i] for i in range(len(src)))}


def _pixel_boxes(rec):
  h, w = rec["image"].shape[:2]
  return [tuple(int(v) for v in b)
          for b in B.normalized_to_pixel(np.asarray(rec["bboxes"], np.float32).reshape(-1, 4), h, w)]


def _shard_digests(builder):
  out = {}
  for fn in sorted(os.listdir(builder.data_dir)):
    if ".array_record" in fn:
      with open(os.path.join(builder.data_dir, fn), "rb") as f:
        out[fn] = hashlib.sha256(f.read()).hexdigest()
  return out


# ---------------------------------------------------------------- records helpers


def test_box_conversion_round_trip():
  rng = np.random.default_rng(0)
  h, w = 37, 53
  x0 = rng.integers(0, w, 50)
  y0 = rng.integers(0, h, 50)
  x1 = x0 + rng.integers(0, w - x0)
  y1 = y0 + rng.integers(0, h - y0)
  px = np.stack([x0, y0, x1, y1], -1)
  norm = B.pixel_to_normalized(px, h, w)
  assert norm.shape == (50, 4) and norm.min() >= 0 and norm.max() <= 1
  np.testing.assert_allclose(norm[0], [y0[0] / h, x0[0] / w, (y1[0] + 1) / h, (x1[0] + 1) / w], rtol=1e-6)
  np.testing.assert_array_equal(B.normalized_to_pixel(norm, h, w), px)
  # A whole-image box.
  np.testing.assert_array_equal(B.pixel_to_normalized([0, 0, w - 1, h - 1], h, w), [0, 0, 1, 1])


def test_check_box_rejects_impossible_boxes():
  assert records.check_box((0, 0, 10, 10), 20, 20) == (0, 0, 10, 10)
  assert records.check_box((1, 1, 20, 20), 20, 20) == (1, 1, 19, 19)  # 1-based far edge is clipped
  for box in [(10, 0, 5, 5), (0, 10, 5, 5), (-3, 0, 5, 5), (0, 0, 25, 5), (0, 0, float("nan"), 5)]:
    with pytest.raises(bad_data.BadExample, match="bad_box"):
      records.check_box(box, 20, 20)


# ---------------------------------------------------------------- built-in data set


@pytest.fixture(scope="module")
def tiny_builders(tmp_path_factory):
  a = data.prepare("camjax_shapes/tiny", str(tmp_path_factory.mktemp("shapes_a")))
  b = data.prepare("camjax_shapes", str(tmp_path_factory.mktemp("shapes_b")), config="tiny")
  return a, b


def test_shapes_deterministic_across_preparations(tiny_builders):
  a, b = tiny_builders
  assert _shard_digests(a) == _shard_digests(b) and len(_shard_digests(a)) == 3
  for split in ("train", "test"):
    ra, rb = _all(a, split), _all(b, split)
    assert sorted(ra) == sorted(rb)
    for key in list(ra)[:20]:
      for feat in ("image", "mask", "label"):
        np.testing.assert_array_equal(ra[key][feat], rb[key][feat])
  # The per-example generator depends on (seed, split, index) only, not on order.
  spec = shapes.Spec(image_size=32)
  later = shapes.make_example(spec, 0, "train", 7)
  assert shapes.make_example(spec, 0, "train", 7)["image"] == later["image"]


def test_shapes_other_seed_differs(tmp_path):
  cfg = shapes.ShapesConfig(name="tiny_seed1", image_size=32, train=4, validation=4, test=4, seed=1)
  b = data.prepare("camjax_shapes", str(tmp_path), config=cfg)
  spec = shapes.Spec(image_size=32)
  recs = _all(b, "train")
  assert len(recs) == 4
  for key, rec in recs.items():
    index = int(key.split("/")[1])
    seed0 = examples.features(with_mask=True, names=list(shapes.CLASS_NAMES)).decode_example_np(
        examples.features(with_mask=True, names=list(shapes.CLASS_NAMES)).encode_example(
            shapes.make_example(spec, 0, "train", index)))
    assert not np.array_equal(rec["image"], seed0["image"])


def test_shapes_records_consistent(tiny_builders):
  builder = tiny_builders[0]
  names = builder.info.features["label"].names
  assert names == list(shapes.CLASS_NAMES) and len(names) >= 10
  assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {
      "train": 192, "validation": 64, "test": 64}
  labels = []
  for split in ("train", "validation"):
    for key, rec in _all(builder, split).items():
      assert key.startswith(f"{split}/") and rec["image"].shape == (32, 32, 3) and rec["mask"].shape == (32, 32, 1)
      assert set(np.unique(rec["mask"])) <= {0, 255}
      tight = B.tight_box(rec["mask"])
      (box,) = _pixel_boxes(rec)
      assert np.abs(np.subtract(box, tight)).max() <= 1, (key, box, tight)
      extent = max(tight[2] - tight[0] + 1, tight[3] - tight[1] + 1)
      assert 0.25 * 32 - 2 <= extent <= 0.70 * 32 + 2, (key, extent)
      assert 0 <= rec["label"] < len(names)
      labels.append(rec["label"])
  assert len(set(labels)) == len(names)  # every class occurs


def test_data_source_finds_builder_by_name_offline(tiny_builders):
  builder = tiny_builders[0]
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.fspath(builder.data_dir))))
  src = tfds.data_source("camjax_shapes/tiny", data_dir=root, download=False, try_gcs=False)
  assert len(src["validation"]) == 64
  stamp = os.path.getmtime(os.path.join(builder.data_dir, "dataset_info.json"))
  again = data.prepare("camjax_shapes/tiny", root)  # already prepared: nothing is rebuilt
  assert os.path.getmtime(os.path.join(again.data_dir, "dataset_info.json")) == stamp
  assert data.read_bad_examples(again)["counts"] == {}


def test_unknown_names_fail_clearly(tmp_path):
  with pytest.raises(ValueError, match="unknown data set 'nope'"):
    data.prepare("nope", str(tmp_path))
  with pytest.raises(ValueError, match="no config 'px7'"):
    data.prepare("camjax_shapes/px7", str(tmp_path))


# ---------------------------------------------------------------- ILSVRC


@pytest.mark.parametrize("archives", [True, False], ids=["archives", "extracted"])
def test_ilsvrc_official_layout(tmp_path, archives):
  manual = str(tmp_path / "manual")
  expect = fake.make_ilsvrc(manual, archives=archives)
  builder = data.prepare("ilsvrc2012_loc", str(tmp_path / "data"), manual_dir=manual)
  assert builder.info.features["label"].names == list(fake.WNIDS)
  for split in ("train", "validation"):
    recs = _all(builder, split)
    assert sorted(recs) == sorted(expect[split])
    for key, want in expect[split].items():
      rec = recs[key]
      assert rec["label"] == want["label"]
      assert rec["image"].shape == (want["size"][1], want["size"][0], 3)
      assert _pixel_boxes(rec) == want["boxes"], key
  assert any(not e["boxes"] for e in expect["train"].values())  # training images without boxes kept


def test_ilsvrc_stores_original_jpeg_bytes(tmp_path):
  manual = str(tmp_path / "manual")
  fake.make_ilsvrc(manual, archives=False)
  builder = data.prepare("ilsvrc2012_loc", str(tmp_path / "data"), manual_dir=manual)
  from array_record.python.array_record_data_source import ArrayRecordDataSource

  (shard,) = [os.path.join(builder.data_dir, f) for f in os.listdir(builder.data_dir) if "validation.array_record" in f]
  src = ArrayRecordDataSource([shard])
  serialized = [src[i] for i in range(len(src))]
  for name in ("ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000004.JPEG"):
    with open(os.path.join(manual, "val", name), "rb") as f:
      original = f.read()
    assert sum(original in rec for rec in serialized) == 1


def test_ilsvrc_wsol_metadata_splits(tmp_path):
  manual = str(tmp_path / "manual")
  fake.make_ilsvrc(manual, archives=False)
  meta = os.path.join(manual, "metadata", "ILSVRC")
  # ImageNetV2-style held-out images under ILSVRC/val2, test = official val images.
  v2 = [(f"val2/{c}/img{c}.jpeg", c, (44, 33), [(2.0, 3.0, 30.0, 20.0), (5.0, 5.0, 9.0, 9.0)]) for c in range(3)]
  for i, (iid, _, (w, h), _) in enumerate(v2):
    fake.write_image(os.path.join(manual, "ILSVRC", iid), w, h, seed=900 + i)
  fake.write_wsol_metadata(os.path.join(meta, "val"), v2)
  fake.write_wsol_metadata(os.path.join(meta, "test"),
                           [("val/ILSVRC2012_val_00000001.JPEG", 0, (48, 36), [(1, 2, 44, 34)])])
  builder = data.prepare("ilsvrc2012_loc/wsol", str(tmp_path / "data"), manual_dir=manual)
  assert set(builder.info.splits) == {"train_fullsup", "test"}
  recs = _all(builder, "train_fullsup")
  assert sorted(recs) == sorted(i for i, *_ in v2)
  for iid, label, _, boxes in v2:
    assert recs[iid]["label"] == label
    assert _pixel_boxes(recs[iid]) == [tuple(int(v) for v in b) for b in boxes]
  (test,) = _all(builder, "test").values()
  assert _pixel_boxes(test) == [(1, 2, 44, 34)] and test["label"] == 0


def test_ilsvrc_missing_manual_data_fails_in_one_line(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "LOC_synset_mapping.txt").write_text("n01440764 tench\n")
  with pytest.raises(FileNotFoundError, match=r"missing in .*ILSVRC2012_img_train.tar or train/") as err:
    data.prepare("ilsvrc2012_loc", str(tmp_path / "data"), manual_dir=str(manual))
  assert "\n" not in str(err.value)


# ---------------------------------------------------------------- CUB


def _cub_pixel_box(box):
  x, y, w, h = box
  r = lambda v: int(np.floor(v + 0.5))
  return (r(x), r(y), r(x + w) - 1, r(y + h) - 1)


@pytest.mark.parametrize("archives", [True, False], ids=["archives", "extracted"])
def test_cub_masks_layout(tmp_path, archives):
  manual = str(tmp_path / "manual")
  expect = fake.make_cub(manual, archives=archives)
  builder = data.prepare("cub200_2011/masks", str(tmp_path / "data"), manual_dir=manual)
  assert builder.info.features["label"].names == list(fake.CUB_CLASSES)
  for split in ("train", "test"):
    recs = _all(builder, split)
    assert sorted(recs) == sorted(expect[split])
    for key, want in expect[split].items():
      rec = recs[key]
      assert rec["label"] == want["label"]
      assert _pixel_boxes(rec) == [_cub_pixel_box(want["box"])], key
      np.testing.assert_array_equal(rec["mask"][..., 0], np.where(want["mask"] > 127, 255, 0))


def test_cub_boxes_config_has_no_mask(tmp_path):
  manual = str(tmp_path / "manual")
  expect = fake.make_cub(manual, segmentations=False)
  builder = data.prepare("cub200_2011", str(tmp_path / "data"), manual_dir=manual)
  recs = _all(builder, "train")
  assert sorted(recs) == sorted(expect["train"]) and all("mask" not in r for r in recs.values())
  with pytest.raises(FileNotFoundError, match="segmentations.tgz"):
    data.prepare("cub200_2011/masks", str(tmp_path / "data"), manual_dir=manual)


def test_cub_wsol_metadata_split(tmp_path):
  manual = str(tmp_path / "manual")
  expect = fake.make_cub(manual, segmentations=False)
  meta = os.path.join(manual, "metadata", "CUB")
  test_items = [(k, v["label"], v["size"],
                 [(v["box"][0], v["box"][1], v["box"][0] + v["box"][2], v["box"][1] + v["box"][3])])
                for k, v in expect["test"].items()]
  fake.write_wsol_metadata(os.path.join(meta, "test"), test_items)
  v2 = [(f"{fake.CUB_CLASSES[1]}/v2_0001.jpg", 1, (40, 30), [(4.0, 5.0, 20.0, 25.0)])]
  fake.write_image(os.path.join(manual, "CUB", v2[0][0]), 40, 30, seed=3)
  fake.write_wsol_metadata(os.path.join(meta, "val"), v2)
  builder = data.prepare("cub200_2011/wsol", str(tmp_path / "data"), manual_dir=manual)
  (fullsup,) = _all(builder, "train_fullsup").values()
  assert fullsup["label"] == 1 and _pixel_boxes(fullsup) == [(4, 5, 20, 25)]
  recs = _all(builder, "test")
  assert sorted(recs) == sorted(expect["test"])


# ---------------------------------------------------------------- bad data


BAD_CASES = {
    # (writer, bad kind, split, id of the bad example, builder name)
    "ilsvrc_corrupt": ("ilsvrc", "corrupt", "train", f"train/{fake.WNIDS[1]}/{fake.WNIDS[1]}_100.JPEG",
                       "corrupt_image"),
    "ilsvrc_bad_box": ("ilsvrc", "bad_box", "validation", "val/ILSVRC2012_val_00000002.JPEG", "bad_box"),
    "ilsvrc_missing": ("ilsvrc", "missing", "validation", "val/ILSVRC2012_val_00000003.JPEG", "missing_file"),
    "cub_corrupt": ("cub", "corrupt", "train", f"{fake.CUB_CLASSES[2]}/Sooty_Albatross_0001_8.jpg", "corrupt_image"),
    "cub_bad_box": ("cub", "bad_box", "test", f"{fake.CUB_CLASSES[0]}/Black_footed_Albatross_0002_3.jpg", "bad_box"),
    "cub_missing": ("cub", "missing", "test", f"{fake.CUB_CLASSES[1]}/Laysan_Albatross_0002_6.jpg", "missing_file"),
}
_NAMES = {"ilsvrc": "ilsvrc2012_loc", "cub": "cub200_2011"}


def _write_bad(kind_of_layout, bad, manual):
  if kind_of_layout == "ilsvrc":
    return fake.make_ilsvrc(manual, bad=[bad])
  return fake.make_cub(manual, bad=[bad], segmentations=False)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_data_skip_counts_and_reports(tmp_path, caplog, case):
  layout, bad, split, bad_id, kind = BAD_CASES[case]
  manual = str(tmp_path / "manual")
  expect = _write_bad(layout, bad, manual)
  with caplog.at_level(logging.WARNING, logger="camjax.data"):
    builder = data.prepare(_NAMES[layout], str(tmp_path / "data"), manual_dir=manual, on_bad_data="skip")
  assert sorted(_all(builder, split)) == sorted(expect[split])
  report = data.read_bad_examples(builder)
  assert report["counts"] == {split: {kind: 1}}
  assert [e["id"] for e in report["examples"][split]] == [bad_id]
  with open(os.path.join(builder.data_dir, bad_data.BAD_EXAMPLES_FILE)) as f:
    assert json.load(f)["counts"][split][kind] == 1
  assert any(bad_id in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_data_fail_names_the_example(tmp_path, case):
  layout, bad, split, bad_id, kind = BAD_CASES[case]
  manual = str(tmp_path / "manual")
  _write_bad(layout, bad, manual)
  # Evaluation splits fail by default; a training split fails when asked to.
  on_bad_data = "fail" if split == "train" else None
  with pytest.raises(data.BadDataError, match=kind) as err:
    data.prepare(_NAMES[layout], str(tmp_path / "data"), manual_dir=manual, on_bad_data=on_bad_data)
  assert bad_id in str(err.value)
  assert not list((tmp_path / "data").glob("*/*/*/dataset_info.json"))  # nothing half-built is left as prepared


def test_bad_data_default_skips_train(tmp_path):
  manual = str(tmp_path / "manual")
  expect = fake.make_cub(manual, bad=["corrupt"], segmentations=False)
  builder = data.prepare("cub200_2011", str(tmp_path / "data"), manual_dir=manual)
  assert sorted(_all(builder, "train")) == sorted(expect["train"])
  assert data.read_bad_examples(builder)["counts"] == {"train": {"corrupt_image": 1}}


def test_prepare_and_read_make_no_network_attempt(tmp_path, monkeypatch):
  import socket

  def refuse(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args[:2]}")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "getaddrinfo", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)
  cfg = shapes.ShapesConfig(name="offline", image_size=16, train=3, validation=2, test=2)
  builder = data.prepare("camjax_shapes", str(tmp_path), config=cfg)
  assert len(tfds.data_source("camjax_shapes/tiny", data_dir=str(tmp_path), try_gcs=False)["test"]) == 64
  assert len(builder.as_data_source("train")) == 3


def test_check_image_keeps_jpeg_and_converts_cmyk():
  import io

  from PIL import Image

  rgb = fake.jpeg_bytes(20, 10, seed=1)
  assert records.check_image(rgb) == (rgb, 10, 20)
  buf = io.BytesIO()
  Image.new("CMYK", (12, 8), (0, 255, 0, 0)).save(buf, format="JPEG")
  stored, h, w = records.check_image(buf.getvalue())
  with Image.open(io.BytesIO(stored)) as img:
    assert (img.format, img.mode, img.size, (h, w)) == ("PNG", "RGB", (12, 8), (8, 12))
  with pytest.raises(bad_data.BadExample, match="corrupt_image"):
    records.check_image(rgb[: len(rgb) // 2])
