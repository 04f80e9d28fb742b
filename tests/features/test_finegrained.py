"""Fine-grained pipeline (paper Sec. 4.1) and pattern discovery (Sec. 4.2), end to end on tiny data."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from camjax.data import transforms as T
from camjax.features import LinearHeadModel, array_batches, finegrained
from camjax.features.discovery import discover

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from configs import finegrained_tiny  # noqa: E402


class _Pixels(nnx.Module):
  """A 'backbone' whose feature map is the image itself, so CAMs are known exactly."""

  def __init__(self):
    self.scale = nnx.Param(jnp.ones(()))

  def __call__(self, images):
    return jnp.zeros((images.shape[0], 2)), images * self.scale[...]


def _square_images(boxes, size=24):
  images = np.zeros((len(boxes), size, size, 3), np.float32)
  for i, (x0, y0, x1, y1) in enumerate(boxes):
    images[i, y0:y1 + 1, x0:x1 + 1, 0] = 1.0
  return images


def test_perfect_cam_gives_iou_one_and_gt_crop_equals_cam_crop():
  squares = [(3, 5, 12, 14), (10, 2, 20, 9)]
  images = _square_images(squares)
  gt = np.asarray([squares[0], (0, 15, 6, 23)], np.float32)[:, None]  # the second GT box is elsewhere
  head = LinearHeadModel(_Pixels(), np.array([[1.0, -1.0], [0, 0], [0, 0]], np.float32), np.zeros(2, np.float32))
  batches = array_batches(images, np.zeros(2, np.int64), 2, extra={"boxes": gt, "num_boxes": np.ones(2, np.int32)})
  boxes = finegrained.cam_boxes(head, batches, classes="predicted")
  np.testing.assert_array_equal(boxes.boxes, np.asarray(squares))
  np.testing.assert_array_equal(boxes.predicted, [0, 0])
  assert boxes.ious[0] == 1.0 and boxes.ious[1] == 0.0
  assert boxes.localization_rate(0.5) == 0.5
  # Cropping the stored image to the CAM box or to the (identical) GT box gives the same pixels.
  uint8 = (images * 255).astype(np.uint8)
  size = 24.0
  records = [{"image": uint8[i], "label": 0,
              "bboxes": np.asarray([[y0 / size, x0 / size, (y1 + 1) / size, (x1 + 1) / size]], np.float32)}
             for i, (x0, y0, x1, y1) in enumerate(squares)]
  cam_src = finegrained.CroppedSource(records, boxes.regions(), size=24)
  gt_src = finegrained.CroppedSource(records, {0: "gt", 1: "gt"}, size=24)
  np.testing.assert_array_equal(cam_src[0]["image"], gt_src[0]["image"])
  assert cam_src[0]["image"][2:-2, 2:-2, 0].min() == 255  # the crop is the square (edges blend bilinearly)


@pytest.mark.parametrize("mode", ["resize", "resize_crop"])
def test_crop_region_maps_eval_frame_back_to_original(mode):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
  size = 16
  left, top, right, bottom = finegrained.eval_region(40, 70, mode, size)
  ex = T.Example(image, np.zeros((0, 4), np.int64))
  reference = T.resize(ex, size) if mode == "resize" else T.resize_center_crop(ex, size)
  full = T.crop_resize(ex, (left, top, right, bottom), (size, size))
  np.testing.assert_array_equal(full.image, reference.image)  # the eval frame is what the pipeline shows
  box = (4, 2, 11, 9)  # inclusive, eval frame
  src = finegrained.CroppedSource([{"image": image, "label": 3}],
                                  {0: ("eval", (box[0] / size, box[1] / size,
                                                (box[2] + 1) / size, (box[3] + 1) / size))},
                                  size=size, eval_mode=mode)
  sx, sy = (right - left) / size, (bottom - top) / size
  want = T.crop_resize(ex, (left + box[0] * sx, top + box[1] * sy, left + (box[2] + 1) * sx, top + (box[3] + 1) * sy),
                       (size, size))
  got = src[0]
  np.testing.assert_array_equal(got["image"], want.image)
  assert got["label"] == 3 and got["image"].shape == (size, size, 3)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("fg_data"))


def _tiny_config(data_dir, **features):
  c = finegrained_tiny.get_config()
  c.data.data_dir = data_dir
  c.features.update(features)
  return c


def _check_result(result, workdir, rows=("full image", "crop (CAM box)", "crop (GT box)")):
  assert [r["row"] for r in result["rows"]] == list(rows)
  for row in result["rows"]:
    assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["train_accuracy"] <= 1.0
    assert row["num_test"] > 0 and row["num_train"] > 0
  assert 0.0 <= result["localization_rate"] <= 1.0
  with open(os.path.join(workdir, "finegrained.json")) as fh:
    saved = json.load(fh)
  assert [r["accuracy"] for r in saved["rows"]] == [r["accuracy"] for r in result["rows"]]


def test_pipeline_on_builtin_data_untrained_is_deterministic(shapes_dir, tmp_path, capsys):
  config = _tiny_config(shapes_dir, max_examples=96)
  a = finegrained.run(config, str(tmp_path / "a"))
  out = capsys.readouterr()
  assert "FRESH, UNTRAINED" in out.err and "crop (CAM box)" in out.out
  _check_result(a, str(tmp_path / "a"))
  assert a["backbone"]["source"] == "fresh init (untrained)" and "head_accuracy" not in a
  full_test = np.load(str(tmp_path / "a" / "features" / "full_test.npz"))
  assert full_test["features"].shape == (64, 8) and list(full_test["indices"]) == list(range(64))
  b = finegrained.run(config, str(tmp_path / "b"))
  assert [r["accuracy"] for r in b["rows"]] == [r["accuracy"] for r in a["rows"]]
  assert b["localization_rate"] == a["localization_rate"]


def test_pipeline_with_briefly_trained_backbone_reports_head_accuracy(shapes_dir, tmp_path):
  from camjax import train

  train_config = _tiny_config(shapes_dir)
  train_config.training.global_batch_size = 16
  train_config.training.num_steps = 3
  train_config.training.checkpoint_every = 3
  train_config.training.progress_bar = False
  backbone = tmp_path / "backbone"
  train.train(train_config, str(backbone))
  (backbone / "config.json").write_text(train_config.to_json_best_effort())  # as camjax.main writes it
  config = _tiny_config(shapes_dir, max_examples=96, rows=("full", "cam_crop"), C_grid=(0.1, 1.0))
  config.data.mean, config.data.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # the backbone's own must win
  with config.unlocked():
    config.backbone_workdir = str(tmp_path / "backbone")
  result = finegrained.run(config, str(tmp_path / "fg"))
  _check_result(result, str(tmp_path / "fg"), rows=("full image", "crop (CAM box)"))
  assert result["backbone"]["source"] == "checkpoint" and result["backbone"]["step"] == 3
  assert result["data_mean"] == list(train_config.data.mean) and result["data_std"] == list(train_config.data.std)
  assert 0.0 <= result["head_accuracy"] <= 1.0
  assert result["linear_minus_head"] == pytest.approx(result["rows"][0]["accuracy"] - result["head_accuracy"])


def test_pipeline_on_fake_cub_layout(tmp_path):
  import fake_layouts

  manual = str(tmp_path / "manual")
  fake_layouts.make_cub(manual, segmentations=False)
  config = _tiny_config(str(tmp_path / "data"), val_split="", C_grid=(1.0,), batch_size=4)
  config.data.name = "cub200_2011"
  config.data.builder_config = "boxes"
  config.data.manual_dir = manual
  config.model.num_classes = 3
  result = finegrained.run(config, str(tmp_path / "fg"))
  _check_result(result, str(tmp_path / "fg"))
  assert result["rows"][0]["num_train"] == 6 and result["rows"][0]["num_test"] == 3
  assert result["rows"][0]["C_selected_on"] == "none (single C)"


def test_bad_config_fails_with_clear_message(shapes_dir, tmp_path):
  with pytest.raises(ValueError, match="features.classifier"):
    finegrained.run(_tiny_config(shapes_dir, classifier="knn"), str(tmp_path))
  with pytest.raises(ValueError, match="no split 'dev'"):
    finegrained.run(_tiny_config(shapes_dir, val_split="dev"), str(tmp_path))


def test_backbone_workdir_that_is_mistyped_or_untrained_is_a_user_error(shapes_dir, tmp_path):
  from camjax.errors import UserError

  config = _tiny_config(shapes_dir)
  with config.unlocked():
    config.backbone_workdir = str(tmp_path / "runs" / "quikstart")  # does not exist
  with pytest.raises(UserError, match="quikstart is not a directory; .*--config.backbone_workdir"):
    finegrained.check_config(config)
  os.makedirs(tmp_path / "runs" / "quikstart" / "checkpoints")
  with pytest.raises(UserError, match="has no checkpoint in .*; train it first"):
    finegrained.load_backbone(config)
  assert finegrained.check_backbone_workdir(_tiny_config(shapes_dir)) == ""  # '' still means a fresh backbone


def _write_folder(folder, n, bright, seed):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(n):
    image = rng.integers(0, 60, (28, 28, 3), dtype=np.uint8)
    if bright:
      x, y = rng.integers(0, 16, 2)
      image[y:y + 12, x:x + 12] = 255
    Image.fromarray(image).save(os.path.join(folder, f"img{i:02d}.png"))


def test_discovery_ranks_pattern_images_first(tmp_path):
  from camjax import models

  pos, neg = str(tmp_path / "pos"), str(tmp_path / "neg")
  _write_folder(pos, 8, True, 0)
  _write_folder(neg, 8, False, 1)
  with open(os.path.join(neg, "broken.png"), "wb") as fh:
    fh.write(b"not a png")
  model = models.create("small_gap", num_classes=2, widths=(4, 8), blocks_per_stage=1, seed=0)
  out = str(tmp_path / "out")
  result = discover(model, positives=pos, negatives=neg, output=out, image_size=28, top=3, batch_size=8,
                    mean=(127.5,) * 3, std=(64.0,) * 3)
  assert result["detector"]["train_accuracy"] == 1.0
  assert result["unreadable"] == [os.path.join(neg, "broken.png")]
  ranking = result["ranking"]
  assert len(ranking) == 16 and [r["rank"] for r in ranking] == list(range(1, 17))
  scores = [r["score"] for r in ranking]
  assert scores == sorted(scores, reverse=True)
  assert all(r["positive"] for r in ranking[:3])
  with open(os.path.join(out, "ranking.json")) as fh:
    assert json.load(fh)["ranking"][0]["file"] == ranking[0]["file"]
  cam = np.load(os.path.join(out, ranking[0]["cam"]))
  assert cam.shape == (28, 28) and os.path.exists(os.path.join(out, ranking[0]["overlay"]))
  assert os.path.exists(os.path.join(out, result["figure"]))
  # The detector score of an image is mean(CAM) + bias: the map explains the score.
  bias = np.load(os.path.join(out, "detector.npz"))["bias"][0]
  np.testing.assert_allclose(cam.mean() + bias, ranking[0]["score"], rtol=1e-3, atol=1e-3)
  assert "cam" not in ranking[3]


def test_discover_command_line(tmp_path):
  pos, neg, rank = str(tmp_path / "pos"), str(tmp_path / "neg"), str(tmp_path / "rank")
  _write_folder(pos, 3, True, 2)
  _write_folder(neg, 3, False, 3)
  _write_folder(rank, 2, True, 4)
  out = str(tmp_path / "out")
  cmd = [sys.executable, "-m", "camjax.features", "discover", f"--positives={pos}", f"--negatives={neg}",
         f"--rank={rank}", f"--output={out}", "--top=1", "--config=configs/finegrained_tiny.py",
         "--config.data.image_size=28"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "FRESH, UNTRAINED" in proc.stderr
  with open(os.path.join(out, "ranking.json")) as fh:
    ranking = json.load(fh)["ranking"]
  assert len(ranking) == 2 and "cam" in ranking[0] and "cam" not in ranking[1]
  assert all("positive" not in r for r in ranking)
