"""The embedded default end to end, shrunken: train, evaluate, report; the CAM beats the centre baseline."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_shrunken_quickstart_writes_report_and_beats_the_centre_baseline(tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "camjax.main", "--config=configs/quickstart.py", f"--workdir={workdir}",
         f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.builder_config=px64_small",
         "--config.model.overrides.widths=(8,16,32,64)", "--config.training.num_steps=700",
         "--config.training.global_batch_size=48", "--config.optimizer.warmup_steps=50",
         "--config.training.checkpoint_every=700",
         "--config.training.progress_bar=False", "--config.eval.batch_size=100", "--config.report.num_images=8"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  for name in ("metrics.json", "eval_results.json", "metrics.jsonl", "cam_grid.png", "top5.png",
               "class_units.png", "report.html", "config.json"):
    assert (workdir / name).is_file(), name
  metrics = json.loads((workdir / "metrics.json").read_text())
  for key in ("classification_top1", "top1_loc", "gt_known_loc", "MaxBoxAcc", "MaxBoxAccV2", "PxAP"):
    assert key in metrics and key in metrics["baseline"], key
  assert metrics["num_images"] == 500  # the whole test split of px64_small
  assert metrics["classification_top1"] > 100 / 12 + 15  # well above chance after 700 steps
  assert metrics["gt_known_loc"] > metrics["baseline"]["gt_known_loc"]
  assert metrics["MaxBoxAccV2"] > metrics["baseline"]["MaxBoxAccV2"] + 10
  assert metrics["PxAP"] > metrics["baseline"]["PxAP"] + 5
  html = (workdir / "report.html").read_text()
  assert "data:image/png;base64," in html and "MaxBoxAccV2" in html
  assert "MaxBoxAccV2" in done.stdout  # the console table
