"""OpenImages30k from the WSOL standard's layout: its records and splits, bad data, and PxAP with ignore regions."""

from __future__ import annotations

import numpy as np
import pytest

from camjax import data, localization
from camjax.data.openimages import IgnoreRegions
from camjax.train import data as train_data
from configs import default
from tests import fake_layouts as fake


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("openimages")
  expect = fake.make_openimages(str(root / "manual"))
  builder = data.prepare("openimages30k", str(root / "data"), manual_dir=str(root / "manual"))
  return builder, expect, root


def _records(builder, split):
  source = builder.as_data_source(split)
  return {source[i]["id"].decode(): source[i] for i in range(len(source))}


def test_splits_are_camjax_names_and_classes_the_folders(built):
  builder, expect, _ = built
  assert set(builder.info.splits) == {"train", "train_fullsup", "test"}
  assert builder.info.features["label"].names == list(fake.OPENIMAGES_CLASSES)
  assert {split: len(builder.as_data_source(split)) for split in expect} == {s: len(v) for s, v in expect.items()}


def test_records_hold_the_union_mask_and_the_ignore_region_at_the_image_size(built):
  builder, expect, _ = built
  for split, want in expect.items():
    recs = _records(builder, split)
    assert sorted(recs) == sorted(want)
    for key, w in want.items():
      rec = recs[key]
      assert rec["label"] == w["label"] and rec["image"].shape == (w["size"][1], w["size"][0], 3), key
      assert len(rec["bboxes"]) == 0
      assert set(np.unique(rec["mask"])) <= {0, 255} and set(np.unique(rec["ignore"])) <= {0, 255}
      np.testing.assert_array_equal(rec["mask"][..., 0] > 0, w["mask"], err_msg=key)
      np.testing.assert_array_equal(rec["ignore"][..., 0] > 0, w["ignore"], err_msg=key)
  # Test A's foreground joins its two instances; test B's mask file was 16x16.
  assert expect["test"][fake.OPENIMAGES_TEST_A]["mask"].sum() == 9 + 6
  assert expect["test"][fake.OPENIMAGES_TEST_B]["mask"].sum() == 16


def test_broken_training_image_is_skipped_and_counted(tmp_path):
  expect = fake.make_openimages(str(tmp_path / "manual"), bad=["corrupt"])
  builder = data.prepare("openimages30k", str(tmp_path / "data"), manual_dir=str(tmp_path / "manual"))
  assert sorted(_records(builder, "train")) == sorted(expect["train"])
  report = data.read_bad_examples(builder)
  assert report["counts"] == {"train": {"corrupt_image": 1}}
  assert [e["id"] for e in report["examples"]["train"]] == [fake.OPENIMAGES_CORRUPT]


def test_missing_test_mask_refuses_the_split_naming_the_image(tmp_path):
  fake.make_openimages(str(tmp_path / "manual"), bad=["missing_mask"])
  with pytest.raises(data.BadDataError, match="missing_file") as err:
    data.prepare("openimages30k", str(tmp_path / "data"), manual_dir=str(tmp_path / "manual"))
  assert fake.OPENIMAGES_TEST_B in str(err.value) and "\n" not in str(err.value)


def test_missing_manual_data_fails_in_one_line(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist") as err:
    data.prepare("openimages30k", str(tmp_path / "data"), manual_dir=str(tmp_path / "nowhere"))
  assert "\n" not in str(err.value)
  (tmp_path / "manual" / "OpenImages").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=r"missing in .*metadata/OpenImages/\{train,val,test\}") as err:
    data.prepare("openimages30k", str(tmp_path / "data"), manual_dir=str(tmp_path / "manual"))
  assert "\n" not in str(err.value)


def _fixed_maps() -> dict[str, np.ndarray]:
  """Score maps over the 8x8 test images (the eval resize to 8 px is the identity)."""
  rect = fake.rectangle
  a = np.full((8, 8), 0.1)
  a[rect(8, 8, (0, 2), (2, 7))] = 0.95  # the ignore region: 14 of its 18 pixels lie outside the foreground
  a[rect(8, 8, (7, 7), (0, 3))] = 0.6  # 4 background pixels
  a[rect(8, 8, (5, 6), (4, 6))] = 0.3  # the second instance: 6 foreground pixels
  a[rect(8, 8, (1, 3), (1, 3))] = 0.9  # the first instance: 9 foreground pixels
  b = np.full((8, 8), 0.1)
  b[rect(8, 8, (2, 5), (2, 5))] = 0.9  # 16 foreground pixels
  return {fake.OPENIMAGES_TEST_A: a, fake.OPENIMAGES_TEST_B: b}


def test_pxap_of_fixed_maps_leaves_out_the_ignore_region(built):
  builder, expect, root = built
  config = default.get_config()
  config.data.name, config.data.builder_config = "openimages30k", "wsol"
  config.data.data_dir, config.data.manual_dir = str(root / "data"), str(root / "manual")
  config.data.eval_split, config.data.image_size, config.data.eval_mode = "test", 8, "resize"
  config.eval.batch_size = 2
  regions = IgnoreRegions.for_eval(config)
  source = builder.as_data_source("test")
  maps, fg, ignore = [], [], []
  for batch in train_data.eval_batches(config, process_index=0, process_count=1):
    index = batch["index"][batch["valid"]]
    ids = [source[int(i)]["id"].decode() for i in index]
    maps += [_fixed_maps()[i] for i in ids]
    fg.append(batch["mask"][batch["valid"]] > 0)
    ignore.append(regions(index))
    for k, i in enumerate(ids):
      np.testing.assert_array_equal(fg[-1][k], expect["test"][i]["mask"])
      np.testing.assert_array_equal(ignore[-1][k], expect["test"][i]["ignore"])
  maps, fg, ignore = np.stack(maps), np.concatenate(fg), np.concatenate(ignore)
  # Walking the levels down: 0.95 is ignored; 0.9 finds 25 of the 31 foreground pixels at precision 1;
  # 0.6 adds 4 background pixels; 0.3 the last 6 foreground pixels at precision 31/35; 0.1 adds no recall.
  want = 100 * (25 / 31 * 1 + 6 / 31 * 31 / 35)
  assert localization.pxap(maps, fg, ignore) == pytest.approx(want)
  assert localization.pxap(maps, fg) < want - 20  # the ignore region scored as background would cost this much


def test_no_ignore_regions_for_data_sets_without_them():
  config = default.get_config()
  config.data.name = "synthetic"
  assert IgnoreRegions.for_eval(config) is None


def test_eval_loop_scores_pxap_alone_with_the_ignore_regions(built, tmp_path, monkeypatch):
  import jax

  from camjax import train
  from camjax.evaluation import loop as eval_loop
  from tests._train_helpers import tiny

  _, expect, root = built
  config = tiny(**{"data.name": "openimages30k", "data.builder_config": "wsol", "data.data_dir": str(root / "data"),
                   "data.manual_dir": str(root / "manual"), "data.eval_split": "test", "data.image_size": 8,
                   "model.num_classes": 2, "training.num_steps": 1, "training.global_batch_size": 2,
                   "eval.batch_size": 2, "eval.protocols": ("wsol",)})
  seen, add = [], localization.PxapAccumulator.add

  def spy(self, maps, fg, ignore=None):
    seen.append(ignore)
    return add(self, maps, fg, ignore)

  monkeypatch.setattr(localization.PxapAccumulator, "add", spy)
  results = eval_loop.evaluate(train.train(config, str(tmp_path), devices=jax.devices()[:1]), config, str(tmp_path))
  assert "wsol" not in results and results["pxap"]["num_images"] == 2
  assert sorted(int(m.sum()) for m in np.concatenate(seen)) == sorted(
      int(w["ignore"].sum()) for w in expect["test"].values())


def test_eval_of_n_per_class_writes_into_its_own_folder_and_leaves_the_runs_results(built, tmp_path):
  import json
  import os

  from camjax import main
  from tests._train_helpers import tiny

  _, expect, root = built
  common = {"data.name": "openimages30k", "data.builder_config": "wsol", "data.data_dir": str(root / "data"),
            "data.manual_dir": str(root / "manual"), "data.image_size": 8, "model.num_classes": 2,
            "training.num_steps": 1, "training.global_batch_size": 2, "eval.batch_size": 2,
            "eval.protocols": ("wsol",)}
  workdir = str(tmp_path / "run")
  main.run(tiny(**common, **{"data.eval_split": "test"}), workdir, "train_and_eval")
  with open(os.path.join(workdir, "eval_results.json")) as f:
    tested = f.read()
  picked = tiny(**{**common, "data.eval_split": "train", "eval.protocols": (), "eval.samples_per_class": 1,
                   "eval.samples_seed": 3, "eval.output_subdir": "select-train"})  # train has no masks
  results = main.run(picked, workdir, "eval")
  assert results["classification"]["top1_acc"] in (0.0, 50.0, 100.0) and results["num_images"] == 2
  train = built[0].as_data_source("train")
  chosen = train_data.eval_records(picked, built[0], train)
  assert len(train) == 4 and sorted(int(train[i]["label"]) for i in chosen) == [0, 1]  # one image per class
  with open(os.path.join(workdir, "select-train", "eval_results.json")) as f:
    assert json.load(f)["num_images"] == 2
  with open(os.path.join(workdir, "eval_results.json")) as f:
    assert f.read() == tested


def test_partly_decoded_leaves_images_encoded_and_keeps_labels(built):
  from camjax.data import subsample

  builder = built[0]
  decoded = builder.as_data_source("test")
  encoded = subsample.partly_decoded(builder, "test", decode=("ignore",))
  assert len(encoded) == len(decoded) == 2
  for i in range(2):
    assert isinstance(encoded[i]["image"], bytes) and encoded[i]["image"][:2] == b"\xff\xd8"  # JPEG bytes
    assert isinstance(encoded[i]["mask"], bytes)
    assert encoded[i]["label"] == decoded[i]["label"]
    assert (encoded[i]["ignore"] == decoded[i]["ignore"]).all()
