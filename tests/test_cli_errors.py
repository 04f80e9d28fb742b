"""Bad input to camjax.main, camjax.features and camjax.ablation ends in one line and exit 2, never a traceback.

Also: the run's config.json is written once, by the run that starts the workdir, and never by a run that is
refused, resumed or evaluates.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

import _train_helpers as h
from camjax import app as camjax_app
from camjax import main
from camjax.tools import ablation
from camjax.errors import UserError

FEATURES_TINY = os.path.join(h.ROOT, "configs", "finegrained_tiny.py")


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
  """The single stderr line of a user error (exit 2, no traceback) that holds every needle."""
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("camjax: error: "), proc.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


# ----------------------------------------------------------------------------- camjax.main


def test_main_misspelt_field_and_missing_config_file(tmp_path):
  typo = h.run(h.cli(str(tmp_path / "a"), "--config.model.nmae=x"))
  _one_line_error(typo, "model.nmae", "did you mean model.name?")
  missing = h.run(h.cli(str(tmp_path / "b"), config=str(tmp_path / "nope.py")))
  _one_line_error(missing, "nope.py", "does not exist")
  assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_main_workdir_that_is_a_file(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("x")
  _one_line_error(h.run(h.cli(str(afile))), "--workdir", "is a file")
  assert afile.read_text() == "x"


def test_main_workdir_without_write_permission(tmp_path, monkeypatch):
  workdir = tmp_path / "readonly"
  workdir.mkdir()
  real_access = os.access
  monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(workdir) else
                      real_access(p, mode, **kw))
  with pytest.raises(UserError, match="--workdir=.*readonly is not writable"):
    main.run(h.tiny(), str(workdir), "train")
  assert os.listdir(workdir) == []


@pytest.mark.parametrize("name, make, needles", [
    ("cub200_2011", lambda m: os.makedirs(m / "CUB_200_2011" / "images"), ("CUB_200_2011/images.txt",)),
    ("ilsvrc2012_loc", lambda m: (m / "LOC_synset_mapping.txt").write_text("n01440764 tench\n"),
     ("ILSVRC2012_img_train.tar or train/", "ILSVRC2012_bbox_val_v3.tgz or bbox_val/")),
])
def test_main_manual_data_dir_without_its_files(tmp_path, name, make, needles):
  manual = tmp_path / "manual"
  manual.mkdir()
  make(manual)
  proc = h.run(h.cli(str(tmp_path / "w"), f"--config.data.name={name}", f"--config.data.manual_dir={manual}",
                     f"--config.data.data_dir={tmp_path / 'data'}"))
  line = _one_line_error(proc, name, str(manual), *needles)
  assert "LOC_synset_mapping.txt" not in line  # it is there
  assert not os.path.exists(tmp_path / "w")


def test_no_backend_probe_noise_on_a_cpu_only_machine(tmp_path):
  """jax probes 'tpu' when JAX_PLATFORMS is unset; its 'Unable to initialize backend' line must not show."""
  env = h.env()
  del env["JAX_PLATFORMS"]
  proc = subprocess.run(h.cli(str(tmp_path / "w"), "--config.model.pooling=avg", "--verbose_orbax"), cwd=h.ROOT,
                        env=env, capture_output=True, text=True, timeout=240)
  assert "Unable to initialize backend" not in proc.stderr
  _one_line_error(proc, "model.pooling='avg'")


# ----------------------------------------------------------------------------- config.json


def test_config_json_is_written_by_the_run_that_starts_the_workdir_only(tmp_path):
  workdir = str(tmp_path / "w")
  main.run(h.tiny(**{"training.num_steps": 2}), workdir, "train")
  config_json = os.path.join(workdir, "config.json")
  with open(config_json, "rb") as f:
    original = f.read()
  # A resume refused for a checkpoint of another config leaves the file the refusal points to as it was.
  with pytest.raises(ValueError, match="another config"):
    main.run(h.tiny(**{"training.num_steps": 4, "model.num_classes": 5}), workdir, "train")
  with open(config_json, "rb") as f:
    assert f.read() == original
  assert not glob.glob(os.path.join(workdir, "config.*-*.json"))  # the refused run used no config
  # An evaluation leaves it too and records its own config beside it.
  main.run(h.tiny(**{"training.num_steps": 2, "eval.protocols": ("paper",)}), workdir, "eval")
  with open(config_json, "rb") as f:
    assert f.read() == original
  (side,) = glob.glob(os.path.join(workdir, "config.eval-*Z.json"))
  with open(side) as f:
    assert json.load(f)["eval"]["protocols"] == ["paper"]
  assert not glob.glob(os.path.join(workdir, "*.tmp-*"))


def test_resumed_run_records_its_config_beside_config_json(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  os.makedirs(workdir / "checkpoints" / "4")
  (workdir / "config.json").write_text("{}")
  path = main.run_config_path(str(workdir), "train_and_eval", main.checkpoint_steps(str(workdir)))
  assert os.path.basename(path).startswith("config.resume-4-") and path.endswith("Z.json")
  assert os.path.basename(main.run_config_path(str(tmp_path / "new"), "train", [])) == "config.json"


def test_config_that_fails_validation_writes_no_config_json(tmp_path):
  proc = h.run(h.cli(str(tmp_path / "w"), "--config.data.name=imagenett"))
  _one_line_error(proc, "unknown data set 'imagenett'", "--config.data.name")
  assert not os.path.exists(tmp_path / "w" / "config.json")


# ----------------------------------------------------------------------------- camjax.features


def test_features_mistyped_backbone_workdir(tmp_path):
  backbone = tmp_path / "runs" / "quikstart"
  cmd = [sys.executable, "-m", "camjax.features", f"--config={FEATURES_TINY}", f"--workdir={tmp_path / 'fg'}",
         f"--config.backbone_workdir={backbone}"]
  _one_line_error(h.run(cmd), f"backbone_workdir={backbone}", "--config.backbone_workdir")
  assert not os.path.exists(tmp_path / "fg")


# ----------------------------------------------------------------------------- camjax.ablation


def test_ablation_mistyped_field_stops_before_any_run(tmp_path):
  cmd = [sys.executable, "-m", "camjax.ablation", f"--config={h.TINY}", f"--workdir={tmp_path / 'abl'}",
         "--field=model.poolng", "--values=gap,gmp", "--seeds=0"]
  _one_line_error(h.run(cmd), "--field=model.poolng", "did you mean model.pooling?")
  assert not os.path.exists(tmp_path / "abl")


def test_ablation_checks_values_and_field_in_process():
  with pytest.raises(UserError, match="model.pooling='gmpp'"):
    ablation.check_runs(h.TINY, "model.pooling", ["gap", "gmpp"], [])
  with pytest.raises(UserError, match="is a section"):
    ablation.check_runs(h.TINY, "model", ["x"], [])
  with pytest.raises(UserError, match="did you mean training.num_steps"):
    ablation.check_runs(h.TINY, "model.pooling", ["gap"], ["--config.training.num_step=3"])


def test_ablation_failing_run_ends_in_one_line_with_its_workdir_and_exit_code(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(ablation.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 3))
  with pytest.raises(SystemExit) as exit_info:
    ablation.entry([f"--config={h.TINY}", f"--workdir={tmp_path}", "--values=gap", "--seeds=0"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("camjax: error: the run in ")
  assert os.path.join(str(tmp_path), "model_pooling=gap", "seed0") in err[0] and "exit code 3" in err[0]


def test_ablation_varies_a_key_of_the_config_argument(tmp_path):
  wsol = "configs/wsol.py:method=cam,data=cub"
  assert ablation.with_arg(wsol, "method", "adl") == "configs/wsol.py:method=adl,data=cub"
  assert ablation.with_arg("c.py", "method", "has") == "c.py:method=has"
  assert ablation.setting("c.py:data=cub", "arg.method", "spg") == ("c.py:data=cub,method=spg", [], "method=spg")
  assert ablation.setting("c.py", "model.pooling", "gmp") == ("c.py", ["--config.model.pooling=gmp"],
                                                             "model_pooling=gmp")
  family = tmp_path / "family.py"
  family.write_text(
      "import importlib.util\n"
      f"spec = importlib.util.spec_from_file_location('tiny_for_family', {str(h.TINY)!r})\n"
      "tiny = importlib.util.module_from_spec(spec)\n"
      "spec.loader.exec_module(tiny)\n\n\n"
      "def get_config(arg):\n"
      "  c = tiny.get_config()\n"
      "  c.model.pooling = dict(p.split('=') for p in arg.split(','))['pooling']\n"
      "  return c\n")
  ablation.check_runs(f"{family}:pooling=gap", "arg.pooling", ["gap", "gmp"], [])
  with pytest.raises(UserError, match="arg.pooling=gmpp"):
    ablation.check_runs(f"{family}:pooling=gap", "arg.pooling", ["gap", "gmpp"], [])
  with pytest.raises(UserError, match="key=value pairs"):
    ablation.check_runs(f"{family}:gap", "arg.pooling", ["gap"], [])


def test_a_config_files_own_error_is_its_last_line():
  raised = ("flag --config=configs/wsol.py:method=foo: Error whilst parsing config file: Traceback (most recent "
            "call last):\n  File \"configs/wsol.py\", line 114, in parse_arg\n    raise ValueError(...)\n"
            "ValueError: configs/wsol.py: method='foo' is not one of cam, has\n")
  assert camjax_app.one_line(raised) == ("flag --config=configs/wsol.py:method=foo: Error whilst parsing config file: "
                                         "ValueError: configs/wsol.py: method='foo' is not one of cam, has")


def test_ablation_chooses_on_the_selection_split_and_reports_the_chosen_rows_test_scores(tmp_path, monkeypatch,
                                                                                          capsys):
  # Runs stand in for camjax.main: test scores favour gmp, the held-out split favours gap; gap must be chosen.
  scores = {("gap", "validation"): 40.0, ("gmp", "validation"): 60.0, ("gap", "test"): 55.0, ("gmp", "test"): 45.0}
  calls = []

  def fake_run(cmd, **kw):
    calls.append(cmd)
    value = next(a.split("=")[-1] for a in cmd if a.startswith("--config.model.pooling="))
    workdir = next(a.split("=", 1)[1] for a in cmd if a.startswith("--workdir="))
    subdir = next((a.split("=", 1)[1] for a in cmd if a.startswith("--config.eval.output_subdir=")), "")
    split = "test" if subdir else "validation"
    os.makedirs(os.path.join(workdir, subdir), exist_ok=True)
    with open(os.path.join(workdir, subdir, "metrics.json"), "w") as f:
      json.dump({"MaxBoxAccV2": scores[value, split], "classification_top1": 50.0}, f)
    return subprocess.CompletedProcess(cmd, 0)

  monkeypatch.setattr(ablation.subprocess, "run", fake_run)
  args = [f"--config={h.TINY}", f"--workdir={tmp_path}", "--values=gap,gmp", "--seeds=0",
          "--select_on=test"]
  assert ablation.main(args) == 0
  scoring = [c for c in calls if "--mode=eval" in c]
  assert len(scoring) == 2 and all("--config.data.eval_split=test" in c and
                                   "--config.eval.output_subdir=select-test" in c for c in scoring)
  with open(tmp_path / "ablation.json") as f:
    report = json.load(f)
  assert report["selection"]["chosen"] == "gap" and report["selection"]["metric"] == "MaxBoxAccV2"
  assert report["table"]["gap"]["MaxBoxAccV2"]["mean"] == 40.0
  assert "**model.pooling=gap** (55.0; gmp: 45.0)" in capsys.readouterr().out
  calls.clear()
  assert ablation.main(args) == 0 and calls == []  # finished runs and their scores are reused


def test_ablation_refuses_to_select_on_the_test_split():
  with pytest.raises(UserError, match="--select_on=validation is the split the runs are tested on"):
    ablation.check_runs(h.TINY, "model.pooling", ["gap"], [], select_on="validation")
  with pytest.raises(UserError, match="--select_on=test with model.pooling=gap: eval.samples_per_class needs a real"):
    ablation.check_runs(h.TINY, "model.pooling", ["gap"], [], select_on="test", select_per_class=2)
  with pytest.raises(UserError, match="the synthetic training split is endless"):
    ablation.check_runs(h.TINY, "model.pooling", ["gap"], [], select_on="train")
  flags = ablation.selection_flags("train_fullsup", 5)
  assert flags[-1] == "--config.eval.output_subdir=select-train_fullsup-5per_class"
  with pytest.raises(UserError, match="need --select_on"):
    ablation.main([f"--config={h.TINY}", "--workdir=/tmp/x", "--select_per_class=3"])


def test_files_written_together_keep_their_old_versions_when_one_writer_fails(tmp_path):
  camjax_app.write_together(str(tmp_path), {"a.md": camjax_app.text_writer("old a"),
                                            "b.json": camjax_app.text_writer("old b")})

  def fails(path):
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    camjax_app.write_together(str(tmp_path), {"a.md": camjax_app.text_writer("new a"), "b.json": fails})
  assert sorted(os.listdir(tmp_path)) == ["a.md", "b.json"]  # no temporary file left behind
  assert (tmp_path / "a.md").read_text() == "old a" and (tmp_path / "b.json").read_text() == "old b"


def test_selection_metric_is_the_standards_and_a_missing_one_is_one_line():
  boxes = {"a": [{"MaxBoxAccV2": 50.0, "PxAP": 90.0}], "b": [{"MaxBoxAccV2": 60.0, "PxAP": 10.0}]}
  assert ablation.select(boxes, "auto")[:2] == ("b", "MaxBoxAccV2")  # boxes: MaxBoxAccV2, as on CUB / ImageNet
  assert ablation.select(boxes, "PxAP")[:2] == ("a", "PxAP")
  masks_only = {"a": [{"PxAP": 40.0}, {"PxAP": 60.0}], "b": [{"PxAP": 45.0}, {"PxAP": 45.0}]}
  assert ablation.select(masks_only, "auto") == ("a", "PxAP", {"a": 50.0, "b": 45.0})  # OpenImages30k: PxAP
  with pytest.raises(UserError, match="have no MaxBoxAcc .*choose one of those"):
    ablation.select(masks_only, "MaxBoxAcc")
