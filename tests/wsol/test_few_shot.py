"""The few-shot localization baseline: targets and loss by hand, training, scoring as the accumulators, the command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from camjax import localization, models
from camjax.tools import few_shot as command
from camjax.train import ModelDef
from camjax.wsol import few_shot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [f"--config={ROOT}/configs/quickstart.py", "--split=validation", "--per_class=1", "--steps=4", "--batch_size=4",
        "--config.data.builder_config=tiny", "--config.data.image_size=32", "--config.model.overrides.widths=(4,8)",
        "--config.model.overrides.blocks_per_stage=(1,1)", "--config.eval.batch_size=32",
        "--config.eval.wsol_threshold_step=0.05", "--config.training.progress_bar=False"]


def test_box_targets_mark_the_pixels_of_every_real_box_and_no_padding():
  boxes = np.array([[[1, 0, 2, 1], [4, 3, 4, 4], [0, 0, 5, 5]],  # third box is padding (num_boxes 2)
                    [[0, 0, 5, 5], [-1, -1, -1, -1], [-1, -1, -1, -1]]], np.float32)  # no box at all
  got = np.asarray(few_shot.box_targets(boxes, np.array([2, 0]), (5, 6)))
  want = np.zeros((2, 5, 6), np.float32)
  want[0, 0:2, 1:3] = 1  # rows y0..y1, columns x0..x1, both ends included
  want[0, 3:5, 4] = 1
  np.testing.assert_array_equal(got, want)


def test_pixel_bce_is_the_mean_of_the_hand_computed_terms():
  # -log sigmoid(0) = log 2 for a foreground pixel; -log(1 - sigmoid(log 3)) = log 4 for a background one.
  got = float(few_shot.pixel_bce(jnp.array([[[0.0, math.log(3.0)]]]), jnp.array([[[1.0, 0.0]]])))
  assert got == pytest.approx(1.5 * math.log(2.0), rel=1e-6)


def _localizer(seed: int = 0) -> few_shot.FewShotLocalizer:
  backbone = models.create("small_gap", num_classes=3, widths=(4, 8), blocks_per_stage=1, seed=seed)
  return few_shot.FewShotLocalizer(backbone, few_shot.feature_channels(backbone, 16), rngs=nnx.Rngs(seed))


def _batch(n: int = 4, seed: int = 0) -> dict:
  """Bright squares on dark noise, each square its box."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(0.0, 0.2, (n, 16, 16, 3)).astype(np.float32)
  boxes = np.full((n, 2, 4), -1.0, np.float32)
  for i in range(n):
    x0, y0 = rng.integers(0, 9, 2)
    images[i, y0:y0 + 7, x0:x0 + 7] = 1.0
    boxes[i, 0] = (x0, y0, x0 + 6, y0 + 6)
  return {"image": images, "boxes": boxes, "num_boxes": np.ones(n, np.int32),
          "mask": np.asarray(few_shot.box_targets(boxes, np.ones(n), (16, 16)), np.uint8),
          "label": np.arange(n, dtype=np.int32) % 3, "valid": np.ones(n, bool), "index": np.arange(n) + 10 * seed}


def test_a_few_steps_on_a_tiny_model_reduce_the_loss():
  batch = _batch()
  trained = few_shot.train(_localizer(), iter([batch] * 12), steps=12, lr=0.01, weight_decay=0.0, target="boxes",
                           log_every=4, progress=False)
  assert trained.losses.shape == (12,)
  assert trained.losses[-1] < 0.8 * trained.losses[0]


def test_scores_equal_the_accumulators_on_the_same_maps():
  localizer = _localizer(seed=1)
  model_def = ModelDef(localizer)
  params, stats, other = model_def.split(localizer)
  state = {"params": params, "batch_stats": stats, "other": other}
  map_fn = few_shot.make_map_fn(model_def)
  second = _batch(seed=1)
  second["valid"][-1] = False  # a padded row is never scored
  batches = [_batch(seed=0), second]
  protocol = {"cam_thresholds": np.arange(0.0, 1.0, 0.05), "iou_thresholds": (30, 50, 70), "paper_threshold": 0.2}
  got = command.score(lambda x: map_fn(state, jnp.asarray(x)), batches, protocol, progress=False)

  maps = np.concatenate([np.asarray(map_fn(state, jnp.asarray(b["image"])))[b["valid"]] for b in batches])
  boxes = [b["boxes"][i, :1].astype(np.int64) for b in batches for i in np.flatnonzero(b["valid"])]
  masks = np.concatenate([b["mask"][b["valid"]] > 0 for b in batches])
  labels = np.concatenate([b["label"][b["valid"]] for b in batches])
  paper = localization.PaperAccumulator(0.2)
  paper.add(None, None, list(labels), boxes, gt_known_cams=maps)
  wsol = localization.WsolAccumulator(protocol["cam_thresholds"], (30, 50, 70), "both")
  wsol.add(localization.min_max(maps), boxes)
  pxap = localization.PxapAccumulator(protocol["cam_thresholds"])
  pxap.add(localization.min_max(maps), masks)
  direct = wsol.result()
  wsol.close()
  assert got["num_images"] == 7
  assert got["gt_known_loc"] == paper.result()["gt_known_loc_acc"]
  assert got["MaxBoxAcc"] == direct["MaxBoxAcc"] and got["MaxBoxAccV2"] == direct["MaxBoxAccV2"]
  assert got["PxAP"] == pxap.result()["PxAP"]
  assert not any(k.startswith("top1_loc") for k in got)  # one map for every class: GT-known scores only

  # Ignore regions (masks without boxes): PxAP alone, those pixels left out, as the eval loop does.
  ignore = {int(i): np.arange(16)[None, :] < 4 for b in batches for i in b["index"]}  # the left 4 columns
  got = command.score(lambda x: map_fn(state, jnp.asarray(x)), batches, protocol, progress=False,
                      ignore_regions=lambda indices: np.stack([np.broadcast_to(ignore[int(i)], (16, 16))
                                                               for i in indices]))
  pxap = localization.PxapAccumulator(protocol["cam_thresholds"])
  pxap.add(localization.min_max(maps), masks, np.broadcast_to(np.arange(16)[None, :] < 4, masks.shape))
  assert got == {"num_images": 7, "PxAP": pxap.result()["PxAP"]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from camjax import data

  root = str(tmp_path_factory.mktemp("tfds"))
  data.prepare("camjax_shapes", root, "tiny")
  return root


def test_the_command_writes_its_scores_and_a_failed_run_keeps_them(data_dir, tmp_path, capsys):
  workdir = tmp_path / "run"
  args = ["few_shot", *ARGS, f"--config.data.data_dir={data_dir}", f"--workdir={workdir}"]
  assert command.main(args) == 0
  results = json.loads((workdir / "few_shot.json").read_text())
  assert results["num_images"] == 12 and results["target"] == "masks" and results["split"] == "validation"
  assert results["scores"]["num_images"] == 64 and {"MaxBoxAcc", "MaxBoxAccV2", "PxAP"} <= set(results["scores"])
  markdown = (workdir / "few_shot.md").read_text()
  assert "| MaxBoxAcc |" in markdown
  assert "from the validation split" in markdown and "takes them from train_fullsup" in markdown  # says so
  capsys.readouterr()
  # A loss that goes non-finite stops the run with one line; what the first run wrote stays.
  assert command.main(args + ["--lr=1e30", "--steps=10"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("camjax: error:") and "--lr" in err[0]
  assert json.loads((workdir / "few_shot.json").read_text()) == results
  assert (workdir / "few_shot.md").read_text() == markdown


@pytest.mark.parametrize("flags, says", [
    (["--per_class=0"], "--per_class=0"),
    (["--steps=-1"], "--steps=-1"),
    (["--lr=0"], "--lr=0"),
    (["--split=train_fullsup"], "--split=validation"),
    (["--split=test"], "is the eval split"),
    (["--compare_with=/nonexistent"], "eval_results.json"),
    (["--config.data.name=synthetic"], "synthetic"),
])
def test_bad_flags_end_in_one_line(data_dir, tmp_path, capsys, flags, says):
  args = ["few_shot", *ARGS, f"--config.data.data_dir={data_dir}", f"--workdir={tmp_path / 'w'}", *flags]
  assert command.main(args) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("camjax: error:") and says in err[0], err


def test_the_module_entry_ends_a_bad_flag_in_one_line_before_loading_anything(tmp_path):
  workdir = tmp_path / "w"
  done = subprocess.run([sys.executable, "-m", "camjax.few_shot", "--config=configs/quickstart.py",
                         f"--workdir={workdir}", "--per_class=0"], cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 2, done.stderr
  assert done.stderr.strip().splitlines() == ["camjax: error: --per_class=0; give a positive number"]
  assert not workdir.exists()


DATA_PARALLEL = """
import jax, numpy as np
from tests.wsol.test_few_shot import _batch, _localizer
from camjax.wsol import few_shot

assert jax.device_count() == 2
batches = [_batch(seed=s) for s in range(3)] * 2
runs = [few_shot.train(_localizer(), iter(batches), steps=6, lr=0.01, weight_decay=1e-4, target="masks",
                       log_every=3, progress=False, devices=jax.devices()[:n]) for n in (1, 2)]
np.testing.assert_allclose(runs[1].losses, runs[0].losses, rtol=1e-5)
maps = [np.asarray(r.map_fn()(_batch(seed=5)["image"])) for r in runs]
np.testing.assert_allclose(maps[1], maps[0], atol=1e-5)
assert all(len(x.sharding.device_set) == 2 for x in jax.tree.leaves(runs[1].state["params"]))
print("same")
"""


def test_data_parallel_training_on_two_devices_equals_one_device():
  import _train_helpers as h

  done = h.run([sys.executable, "-c", DATA_PARALLEL], devices=2, timeout=120)
  assert done.returncode == 0 and done.stdout.strip().endswith("same"), done.stderr[-3000:]
