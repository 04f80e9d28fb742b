"""configs/wsol.py: one locked config per (method, backbone, data set) from the standard's table; wsol_quick."""

from __future__ import annotations

import itertools

import jax
import pytest
from flax import nnx

from camjax.train import optim
from camjax.train.state import build_model
from configs import default, wsol
from tests.models.test_models import abstract_forward

STANDARD = list(itertools.product(wsol.METHODS, ("vgg16", "resnet50", "inceptionv3"), ("cub", "ilsvrc", "openimages")))


@pytest.mark.parametrize("method,backbone,dataset", STANDARD)
def test_every_combination_builds_a_locked_config_of_the_table(method, backbone, dataset, monkeypatch):
  from camjax import main

  c = wsol.get_config(f"method={method},backbone={backbone},data={dataset}")
  monkeypatch.setattr(main, "_check_manual_data", lambda config: None)  # no download here
  main.validate_config(c, num_devices=1, mode="train_and_eval")
  row = wsol.TABLE[dataset, backbone]
  method_row = wsol.METHOD_TABLE.get((method, backbone, dataset), {})
  assert c.is_locked
  assert c.model.name == f"{backbone}_wsol" and c.model.overrides.large_feature_map == row["large_feature_map"]
  assert (c.data.name, c.data.builder_config, c.model.num_classes) == {
      "cub": ("cub200_2011", "wsol", 200), "ilsvrc": ("ilsvrc2012_loc", "wsol", 1000),
      "openimages": ("openimages30k", "wsol", 100)}[dataset]
  assert (c.data.train_split, c.data.eval_split, c.eval.protocols) == ("train", "test", ("wsol",))
  assert c.method.name == method
  for field in ("has_grid_size", "has_drop_rate", "adl_threshold", "adl_drop_rate", "acol_threshold"):
    assert getattr(c.method, field) == method_row.get(field, default.get_config().method[field]), field
  assert c.optimizer.lr == method_row.get("lr", row["lr"]) and c.optimizer.weight_decay == row["weight_decay"]
  assert c.optimizer.nesterov and c.optimizer.new_layer_lr_mult == 10.0
  assert c.optimizer.new_layer_patterns[:1] == wsol.CLASSIFIER[backbone]
  assert (c.training.num_epochs, c.training.global_batch_size) == (row["epochs"], 32)
  with pytest.raises(AttributeError):
    c.optimizer.lr_classifier_ratio = 10  # locked: a misspelt field is an error


@pytest.mark.parametrize("dataset,epochs,every", [("cub", 50, 15), ("ilsvrc", 10, 3), ("openimages", 10, 3)])
def test_learning_rate_drops_tenfold_every_decay_period(dataset, epochs, every):
  c = wsol.get_config(f"data={dataset}")
  steps_per_epoch = 100
  schedule = optim.make_schedule(c.optimizer, epochs * steps_per_epoch)
  for k, epoch in enumerate(range(every, epochs, every)):
    before, after = schedule(epoch * steps_per_epoch - 1), schedule(epoch * steps_per_epoch)
    assert float(before) == pytest.approx(c.optimizer.lr * 0.1 ** k)
    assert float(after) == pytest.approx(c.optimizer.lr * 0.1 ** (k + 1))


def test_eval_split_train_fullsup_is_selectable():
  assert wsol.get_config("split=train_fullsup,data=ilsvrc").data.eval_split == "train_fullsup"


@pytest.mark.parametrize("arg,names", [
    ("method=foo", "cam, has, acol, spg, adl, cutmix"),
    ("backbone=vgg19", "vgg16, resnet50, inceptionv3, small"),
    ("data=voc", "cub, ilsvrc, openimages, shapes"),
    ("size=224", "method, backbone, data, split"),
    ("adl", "method, backbone, data, split"),
    ("backbone=small,data=cub", "backbone=small and data=shapes go together"),
    ("data=shapes", "backbone=small and data=shapes go together"),
    ("backbone=small,data=shapes,split=train_fullsup", "no train_fullsup split"),
])
def test_bad_arguments_fail_in_one_line_naming_the_allowed(arg, names):
  with pytest.raises(ValueError, match="configs/wsol.py") as err:
    wsol.get_config(arg)
  assert names in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("backbone,classifier", [
    ("vgg16", {"cam_conv", "head"}), ("resnet50", {"layer4", "head"}),
    ("inceptionv3", {"SPG_A3_1b", "SPG_A3_2b", "head"})])
def test_faster_group_is_the_standards_classifier(backbone, classifier):
  c = wsol.get_config(f"backbone={backbone}")
  model = nnx.eval_shape(lambda: build_model(c))
  labels = optim.param_labels(nnx.state(model, nnx.Param).to_pure_dict(), c)
  groups = {}
  for path, label in jax.tree_util.tree_flatten_with_path(labels)[0]:
    groups.setdefault(label, set()).add(optim.sharding.path_str(path).split("/")[0])
  assert groups["new"] == classifier and not groups["new"] & groups["base"]


def test_spg_vgg16_trains_conv4_and_conv5_at_the_classifier_rate_as_the_standard():
  c = wsol.get_config("method=spg,backbone=vgg16")
  model = nnx.eval_shape(lambda: build_model(c))
  labels = optim.param_labels(nnx.state(model, nnx.Param).to_pure_dict(), c)
  for path, label in jax.tree_util.tree_flatten_with_path(labels)[0]:
    name = optim.sharding.path_str(path)
    renamed_by_the_standard = name.startswith(("features/conv4_", "features/conv5_"))
    assert (label == "new") == (renamed_by_the_standard or not name.startswith("features/")), name


@pytest.mark.parametrize("method", wsol.METHODS)
def test_quick_config_is_quickstarts_network_on_shapes(method):
  from camjax import main

  c = wsol.get_config(f"method={method},backbone=small,data=shapes")
  main.validate_config(c, num_devices=1, mode="train_and_eval")
  assert (c.model.name, c.data.name, c.data.builder_config, c.model.num_classes) == (
      "small_gap", "camjax_shapes", "px64", 12)
  assert c.method.name == method and c.training.num_steps == wsol.QUICK_STEPS and c.mode == "train_and_eval"


@pytest.mark.parametrize("method", wsol.METHODS)
def test_quick_model_builds_abstractly(method):
  c = wsol.get_config(f"method={method},backbone=small,data=shapes")
  model = nnx.eval_shape(lambda: build_model(c))
  logits, features = abstract_forward(model, c.data.image_size)
  assert logits.shape == (2, 12) and features.shape[-1] == c.model.overrides.widths[-1]
