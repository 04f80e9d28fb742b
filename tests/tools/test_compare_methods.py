"""python -m camjax.methods compare on a tiny trained run: its scores are camjax.localization's for the same maps."""

import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import tiny_config
from camjax import localization, methods
from camjax.methods import __main__ as methods_main
from camjax.tools import compare_figure, compare_methods, compare_scoring
from camjax.train import checkpoint, data as train_data

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "run_before_move")
CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tiny_config.py")
METHODS = ("grad_cam", "eigen_cam", "backprop_saliency", "score_cam")
LAYER = "blocks/1"  # the tiny run's last block: what its global pooling reads
EXAMPLES = 16
HAS_FAITHFULNESS = importlib.util.find_spec("camjax.methods.faithfulness") is not None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("compare") / "run")
  shutil.copytree(FIXTURE, path)  # the command writes <workdir>/methods; keep the fixture as it is
  return path


@pytest.fixture(scope="module")
def config():
  c = tiny_config.get_config()
  with c.unlocked():
    c.eval.max_examples = EXAMPLES
  return c


@pytest.fixture(scope="module")
def model(config, workdir):
  return checkpoint.restore_model(config, workdir)[0]


@pytest.fixture(scope="module")
def compared(workdir):
  """One run of the command: four methods (Score-CAM four masked passes at a time) on 16 images."""
  faithfulness = "--option=faithfulness.steps=4" if HAS_FAITHFULNESS else "--no_faithfulness"
  code = methods_main.entry(["camjax.methods", "compare", f"--config={CONFIG}", f"--workdir={workdir}",
                             f"--methods={','.join(METHODS)}", f"--max_examples={EXAMPLES}", faithfulness,
                             "--option=score_cam.chunk_size=4", "--no_progress"])
  assert code == 0
  out = os.path.join(workdir, "methods")
  with open(os.path.join(out, "methods.json")) as f:
    return out, json.load(f)


def _reference(model, config, name, masks=False):
  """The method's ground-truth class maps over the same batches, scored by camjax.localization directly."""
  maps, labels, boxes = [], [], []
  for batch in train_data.eval_batches(config, process_index=0, process_count=1):
    valid = np.asarray(batch["valid"], bool)
    layer = None if name in methods.ATTRIBUTION else LAYER
    extra = {"chunk_size": 4} if name == "score_cam" else {}
    m, _ = methods.ALL[name](model, jnp.asarray(batch["image"]), layer=layer, upsample=True,
                                  class_ids=jnp.asarray(batch["label"]), **extra)
    maps.append(np.asarray(m[:, 0], np.float32)[valid])
    labels += [int(v) for v in np.asarray(batch["label"])[valid]]
    for b, n in zip(np.asarray(batch["boxes"])[valid], np.asarray(batch["num_boxes"])[valid]):
      boxes.append(np.asarray(b[:n]).round().astype(np.int64))
  maps = np.concatenate(maps)
  thresholds = np.arange(0, 1, config.eval.wsol_threshold_step)
  unit = localization.min_max(maps)
  wsol = localization.max_box_acc(unit, boxes, thresholds, config.eval.iou_thresholds, multi_contour="both")
  paper = localization.paper_localization(None, None, labels, boxes, gt_known_cams=maps,
                                          threshold=config.eval.paper_threshold)
  out = {"MaxBoxAcc": wsol["MaxBoxAcc"], "MaxBoxAccV2": wsol["MaxBoxAccV2"], "gt_known_loc": paper["gt_known_loc_acc"]}
  if masks:
    fg = np.zeros(unit.shape, bool)
    for i, b in enumerate(boxes):
      x0, y0, x1, y1 = b[0]
      fg[i, y0:y1 + 1, x0:x1 + 1] = True
    out["PxAP"] = localization.pxap(unit, fg, cam_thresholds=thresholds)
  return out, maps


def test_one_row_per_method_with_the_scores_camjax_localization_gives(compared, model, config):
  out, results = compared
  assert list(results["methods"]) == list(METHODS)
  assert results["layer"] == LAYER and results["num_images"] == EXAMPLES
  for name in METHODS:
    row = results["methods"][name]
    assert row["layer"] == (None if name == "backprop_saliency" else LAYER)
    assert row["images"] == EXAMPLES and row["seconds_per_image"] > 0
    want, _ = _reference(model, config, name)
    for key, value in want.items():
      assert row["localization"][key] == pytest.approx(value, abs=1e-9), (name, key)
  text = open(os.path.join(out, "methods.md")).read()
  table = [line for line in text.splitlines() if line.startswith("| `")]
  assert [line.split("|")[1].strip(" `") for line in table] == list(METHODS)
  assert f"{results['methods']['eigen_cam']['localization']['MaxBoxAccV2']:.1f}" in table[1]
  with Image.open(os.path.join(out, "methods.png")) as picture:
    width, height = picture.size
  assert width == 5 * 144 + 6 * 4  # the input and one tile per method, 144 px, 4 px apart
  assert height > 4 * 144  # four images


def test_pxap_where_the_batches_have_masks(model, config):
  """Masks (the boxes filled) added to the batches: PxAP appears and equals camjax.localization.pxap."""
  def batches():
    for batch in train_data.eval_batches(config, process_index=0, process_count=1):
      mask = np.zeros(batch["image"].shape[:3], np.uint8)
      for i, box in enumerate(np.asarray(batch["boxes"]).round().astype(int)[:, 0]):
        mask[i, box[1]:box[3] + 1, box[0]:box[2] + 1] = 1
      yield {**batch, "mask": mask}

  images = compare_scoring.Images.from_config(config, model)
  images = compare_scoring.Images(model, batches, EXAMPLES, images.image_size, images.mean, images.std, "masked",
                                  protocol=images.protocol)
  settings = compare_scoring.Settings(methods=["grad_cam"], faithfulness=False, figure_images=2, progress=False)
  results, figure = compare_scoring.compare(images, settings)
  want, maps = _reference(model, config, "grad_cam", masks=True)
  assert results["methods"]["grad_cam"]["localization"]["PxAP"] == pytest.approx(want["PxAP"], abs=1e-9)
  np.testing.assert_array_equal(figure["maps"]["grad_cam"], maps[:2])
  assert "PxAP" in compare_figure.markdown_table(results)


@pytest.mark.skipif(not HAS_FAITHFULNESS, reason="camjax.methods.faithfulness has not landed yet")
@pytest.mark.parametrize("name", ["grad_cam", "score_cam"])
def test_faithfulness_columns_are_the_mean_of_faithfulness_score(compared, model, config, name):
  from camjax.methods import faithfulness

  out, results = compared
  _, maps = _reference(model, config, name)
  sums, start = {}, 0
  for batch in train_data.eval_batches(config, process_index=0, process_count=1):
    valid = np.asarray(batch["valid"], bool)
    x, ids = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])[:, None]
    m = np.zeros((len(valid), 1) + maps.shape[1:], np.float32)
    m[valid, 0] = maps[start:start + valid.sum()]
    start += int(valid.sum())
    for k, v in faithfulness.score(model, x, m, ids, steps=4, key=jax.random.key(0)).items():
      sums[k] = sums.get(k, 0.0) + float(np.asarray(v)[valid, 0].sum())
  row = results["methods"][name]
  assert set(row["faithfulness"]) == set(faithfulness.METRICS) and row["faithfulness_seconds_per_image"] > 0
  for k, v in sums.items():
    assert row["faithfulness"][k] == pytest.approx(v / EXAMPLES, rel=1e-5, abs=1e-7), k
  header = next(line for line in open(os.path.join(out, "methods.md")) if line.startswith("| method"))
  assert "Deletion ↓" in header and "ROAD ↑" in header


def test_a_failed_write_leaves_the_earlier_files(compared, workdir, monkeypatch):
  from camjax.report import figures

  out, _ = compared
  before = {name: open(os.path.join(out, name), "rb").read() for name in compare_figure.OUTPUTS}

  def broken(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(figures, "save_png", broken)
  with pytest.raises(OSError, match="disk full"):
    compare_methods.main(["compare", f"--config={CONFIG}", f"--workdir={workdir}", "--methods=grad_cam",
                          "--max_examples=8", "--no_faithfulness", "--no_progress"])
  assert sorted(os.listdir(out)) == sorted(compare_figure.OUTPUTS)  # no temporary file left
  assert {name: open(os.path.join(out, name), "rb").read() for name in compare_figure.OUTPUTS} == before


@pytest.mark.parametrize("flags, words", [
    (["--methods=grad_cam,gradcam"], "unknown method gradcam; valid: grad_cam, grad_cam_plus_plus"),
    (["--max_examples=0"], "--max_examples=0; give a positive number"),
    (["--option=score_cam.chunk=4"], "score_cam has no keyword 'chunk'"),
    (["--workdir={empty}"], "holds no checkpoint"),
    (["--model=efficientnet_lite0", "--images={empty}"], "holds no image files"),
])
def test_bad_input_is_one_line_and_exit_2(flags, words, workdir, tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  flags = [f.format(empty=empty) for f in flags]
  base = [f"--config={CONFIG}"] + ([] if any(f.startswith(("--workdir", "--model")) for f in flags)
                                   else [f"--workdir={workdir}"])
  if any(f.startswith("--model") for f in flags):
    base = []
  code = methods_main.entry(["camjax.methods", "compare", *base, *flags])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert err.startswith("camjax: error:") and "\n" not in err and words in err, err
