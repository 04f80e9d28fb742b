"""The entry point: config validation, distributed detection, configs that load, CLI errors."""

from __future__ import annotations

import glob
import importlib
import os

import pytest

import _train_helpers as h
from camjax import main


_tiny = h.tiny


@pytest.mark.parametrize("changes, devices, needle", [
    ({"model.name": "googlenet_gapp"}, 1, "--config.model.name"),
    ({"model.pooling": "avg"}, 1, "--config.model.pooling=gap or gmp"),
    ({"model.dtype": "float16"}, 1, "--config.model.dtype"),
    ({"training.global_batch_size": 12}, 8, "multiple of 8"),
    ({"training.grad_accum_steps": 3}, 2, "grad_accum_steps=3"),
    ({"mesh.model": 3}, 8, "--config.mesh.model"),
    ({"training.num_steps": 0}, 1, "num_steps or --config.training.num_epochs"),
    ({"eval.protocols": ("paper", "pascal")}, 1, "eval.protocols"),
    ({"data.name": "imagenett"}, 1, "--config.data.name"),
])
def test_invalid_configs_fail_with_what_to_change(changes, devices, needle):
  with pytest.raises(main.ConfigError, match=None) as info:
    main.validate_config(_tiny(**changes), num_devices=devices)
  assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_missing_torchvision_file_fails_before_any_model_is_built(tmp_path):
  missing = str(tmp_path / "vgg16-397923af.pth")
  with pytest.raises(main.UserError, match="pretrained.path") as info:
    main.validate_config(_tiny(**{"pretrained.path": missing}), num_devices=1)
  assert "\n" not in str(info.value)


def test_a_model_axis_across_processes_is_refused():
  # Two processes of one device each: a (data=1, model=2) mesh would have both read different rows
  # of what must be one replicated batch.
  with pytest.raises(main.ConfigError, match="spans processes") as info:
    main.validate_config(_tiny(**{"mesh.model": 2}), num_devices=2, local_devices=1)
  assert "--config.mesh.model to a divisor of 1" in str(info.value)
  main.validate_config(_tiny(**{"mesh.model": 2}), num_devices=4, local_devices=2)


def test_valid_config_passes_and_missing_manual_data_fails(tmp_path):
  main.validate_config(_tiny(), num_devices=8)
  c = _tiny(**{"data.name": "ilsvrc2012_loc", "data.data_dir": str(tmp_path),
               "data.manual_dir": str(tmp_path / "nope")})
  with pytest.raises(main.ConfigError, match="--config.data.manual_dir"):
    main.validate_config(c, num_devices=1)
  # A manual dir that exists but lacks the download: the line names the missing files.
  (tmp_path / "manual" / "CUB_200_2011").mkdir(parents=True)
  (tmp_path / "manual" / "CUB_200_2011" / "classes.txt").write_text("1 a\n")
  c = _tiny(**{"data.name": "cub200_2011", "data.data_dir": str(tmp_path),
               "data.manual_dir": str(tmp_path / "manual")})
  with pytest.raises(main.ConfigError, match=r"missing in .*CUB_200_2011/images.txt") as info:
    main.validate_config(c, num_devices=1)
  assert "classes.txt" not in str(info.value) and "\n" not in str(info.value)


def test_distributed_detection():
  assert main.distributed_args(None, None, None, {}) is None
  assert main.distributed_args("10.0.0.1:1234", 4, 2, {}) == {
      "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}
  assert main.distributed_args("h:1", 1, 0, {}) is None
  with pytest.raises(main.ConfigError, match="--process_id"):
    main.distributed_args("h:1", 2, None, {})
  assert main.distributed_args(None, None, None, {"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}) == {}
  assert main.distributed_args(None, None, None, {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None
  assert main.distributed_args(None, None, None, {"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) == {}
  assert main.distributed_args(None, None, None, {"CAMJAX_DISTRIBUTED": "1"}) == {}


CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(h.ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith("_"))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_names_a_known_model_and_documents_its_command(name):
  module = importlib.import_module(f"configs.{name}")
  c = module.get_config()
  from camjax import models

  assert c.model.name in models.names()
  assert c.model.pooling in ("gap", "gmp")
  assert "python -m camjax." in module.__doc__ and "--config=configs/" in module.__doc__


def test_cli_bad_value_and_misspelt_override_exit_nonzero(tmp_path):
  bad = h.run(h.cli(str(tmp_path / "a"), "--config.model.pooling=avg"))
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      "camjax: error: model.pooling='avg' is not one of ('gap', 'gmp'); set --config.model.pooling=gap or gmp"]
  typo = h.run(h.cli(str(tmp_path / "b"), "--config.optimizer.learning_rat=0.1"))
  assert typo.returncode != 0 and "learning_rat" in typo.stderr
  assert not os.path.exists(tmp_path / "b" / "checkpoints")
