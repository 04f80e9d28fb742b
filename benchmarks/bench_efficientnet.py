"""EfficientNet-Lite0 on this machine: camjax against the PyTorch reference, forward and forward + CAM.

``python -m benchmarks.bench_efficientnet [--no-plain] [--no-train]``. One run measures, at
batch 8 and 224 px (images/s, median of repeated calls after warm-up):

- camjax forward, and forward + top-1 CAM (``camjax.cam.class_activation_maps``, maps
  at feature resolution, as ``camjax.tools.cam_images`` computes them);
- the same with every convolution as ``lax.conv_general_dilated`` (``plain``: what
  ``camjax.models.conv`` replaces on CPU), unless ``--no-plain``;
- PyTorch (``torch.set_num_threads`` = this machine's cores, channels-last and NCHW; and
  one thread, channels-last) forward of the ``efficientnet-lite-pytorch`` model with the
  ImageNet weights, and forward + top-1 CAM with ``torchcam``'s ``CAM`` (by hand from the
  head features and the fc weights when torchcam is not installed; the row says which);
- the train step ``camjax.train`` runs (forward, backward, SGD) and a PyTorch train step on the
  same network (SGD with momentum, channels-last), called in alternation; plain convolutions alone.

Goal: camjax forward + CAM at least as fast as PyTorch + torchcam on CPU; the ratio rows
divide by the fastest PyTorch row.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import sys
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from flax import nnx

from benchmarks.common import alternating_medians, median_seconds
from camjax import cam
from camjax.models import conv

MODEL = "efficientnet_lite0"


@contextlib.contextmanager
def plain_convolutions(enabled: bool = True) -> Iterator[None]:
  """Models built inside use ``lax.conv_general_dilated`` for every convolution (the form before the CPU one)."""
  fast = conv.conv_general_dilated
  if enabled:
    conv.conv_general_dilated = lax.conv_general_dilated
  try:
    yield
  finally:
    conv.conv_general_dilated = fast


def _row(name: str, seconds: float, batch: int, size: int, **extra: Any) -> dict:
  return {"benchmark": f"efficientnet/{name}", "value": round(batch / seconds, 2), "unit": "images/s",
          "batch": batch, "size": size, "seconds": round(seconds, 4), **extra}


def _images(batch: int, size: int) -> np.ndarray:
  return np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype(np.float32)


def _camjax_model(plain: bool) -> nnx.Module:
  from camjax.weights import efficientnet_lite

  with plain_convolutions(plain):
    try:
      return efficientnet_lite.pretrained(MODEL)
    except FileNotFoundError:  # same speed with random weights
      from camjax import models

      model = models.create(MODEL, num_classes=1000)
      model.eval()
      return model


def camjax_rows(*, batch: int, size: int, repeats: int, plain: bool) -> list[dict]:
  """camjax forward and forward + top-1 CAM."""
  model = _camjax_model(plain)
  images = jnp.asarray(_images(batch, size))
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)[0])
  label = "camjax_plain_conv" if plain else "camjax"
  fwd = median_seconds(lambda: forward(state, images).block_until_ready(), repeats=repeats)
  with_cam = median_seconds(
      lambda: jax.block_until_ready(cam.class_activation_maps(model, images, top_k=1, upsample=False).maps),
      repeats=repeats)
  return [_row(f"{label}/forward", fwd, batch, size), _row(f"{label}/forward_cam", with_cam, batch, size)]


def _torch_model(torch: Any) -> Any:
  import efficientnet_lite_pytorch as reference

  from camjax.weights import efficientnet_lite

  try:
    path = efficientnet_lite.default_weights_path(MODEL)
  except FileNotFoundError:
    return reference.EfficientNet.from_name("efficientnet-lite0").eval()
  return reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()


def _torch_cam(torch: Any, net: Any) -> tuple[Callable[[Any], Any], str, Callable[[], None]]:
  """``x -> top-1 maps (B, 7, 7)`` with torchcam's CAM (or by hand when torchcam is missing), and a cleanup."""
  try:
    from torchcam.methods import CAM
  except ImportError:
    def by_hand(x):
      features = net.extract_features(x)
      logits = net._fc(net._avg_pooling(features).flatten(1))
      weights = net._fc.weight[logits.argmax(1)]  # (B, C)
      return torch.einsum("bchw,bc->bhw", features, weights)
    return by_hand, "by hand (torchcam not installed)", lambda: None
  # The top-level ReLU6 runs last on the head features (the stem uses it first): the hook keeps the last call.
  extractor = CAM(net, target_layer="_swish", fc_layer="_fc")

  def with_torchcam(x):
    logits = net(x)
    return extractor(logits.argmax(1).tolist(), logits)[0]
  return with_torchcam, "torchcam CAM", extractor.remove_hooks


def torch_rows(*, batch: int, size: int, repeats: int) -> list[dict]:
  """PyTorch forward and forward + top-1 CAM: channels-last and NCHW on every core, channels-last on one.

  The one-thread rows are there because OpenMP's threads wait for each other: when another
  process takes a core, two threads can run several times slower than one.
  """
  import torch

  cores = os.cpu_count() or 1
  net = _torch_model(torch)
  images = torch.from_numpy(_images(batch, size).transpose(0, 3, 1, 2).copy())
  rows = []
  runs = [(cores, "channels_last"), (cores, "nchw")] + ([(1, "channels_last")] if cores > 1 else [])
  for threads, layout in runs:
    torch.set_num_threads(threads)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = images.contiguous(memory_format=fmt)
    cam_fn, how, cleanup = _torch_cam(torch, net)
    with torch.inference_mode():
      fwd = median_seconds(lambda: net(x), repeats=repeats)
    with torch.no_grad():
      with_cam = median_seconds(lambda: cam_fn(x), repeats=repeats)
    cleanup()
    name = f"torch_{layout}" + ("" if threads == cores else f"_{threads}thread")
    extra = {"threads": threads, "torch": torch.__version__}
    rows.append(_row(f"{name}/forward", fwd, batch, size, **extra))
    rows.append(_row(f"{name}/forward_cam", with_cam, batch, size, cam=how, **extra))
  torch.set_num_threads(cores)
  return rows


def torch_train_step(*, batch: int, size: int) -> Callable[[], None]:
  """One blocking PyTorch train step on the same network: cross-entropy, backward, SGD with momentum 0.9
  (channels-last, every core; the reference model in train mode, as camjax's step trains BatchNorm)."""
  import torch

  net = _torch_model(torch).train().to(memory_format=torch.channels_last)
  x = torch.from_numpy(_images(batch, size).transpose(0, 3, 1, 2).copy()).contiguous(memory_format=torch.channels_last)
  y = torch.from_numpy(np.random.default_rng(1).integers(0, 1000, batch))
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

  def one_step() -> None:
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()

  return one_step


def train_step(*, batch: int, size: int, repeats: int, plain: bool) -> Callable[[], None]:
  """One blocking call of the step ``camjax.train`` jits (forward, backward, SGD) for EfficientNet-Lite0."""
  from benchmarks.train_step import SyntheticTrainStep, synthetic_config

  config = synthetic_config(MODEL, batch=batch, size=size, num_steps=repeats + 2)
  with plain_convolutions(plain):
    return SyntheticTrainStep(config, images=_images(batch, size))


def train_rows(*, batch: int, size: int, repeats: int, plain: bool) -> list[dict]:
  """camjax's and PyTorch's train steps timed in alternation (one machine load for both); plain convs alone."""
  steps = {"camjax/train_step": train_step(batch=batch, size=size, repeats=repeats, plain=False)}
  extra = {"camjax/train_step": {}}
  missing = []
  try:
    import torch
  except ImportError as e:  # torch is a benchmark-only dependency
    missing.append({"benchmark": "efficientnet/torch_channels_last/train_step", "value": float("nan"),
                    "unit": "images/s", "error": str(e)})
  else:
    steps["torch_channels_last/train_step"] = torch_train_step(batch=batch, size=size)
    extra["torch_channels_last/train_step"] = {"threads": torch.get_num_threads(), "torch": torch.__version__}
  seconds = alternating_medians(steps, repeats=repeats, warmup=1)
  rows = [_row(name, s, batch, size, alternated=True, **extra[name]) for name, s in seconds.items()] + missing
  if plain:
    plain_step = train_step(batch=batch, size=size, repeats=2, plain=True)
    rows.append(_row("camjax_plain_conv/train_step", median_seconds(plain_step, repeats=2), batch, size))
  return rows


def _ratio(rows: list[dict], ours: str, theirs: str) -> dict:
  """``ours`` over ``theirs`` in images/s; a ``theirs`` pattern (``torch_*/forward``) takes the fastest match."""
  values = {r["benchmark"][len("efficientnet/"):]: r["value"] for r in rows if r["unit"] == "images/s"}
  matches = {k: v for k, v in values.items() if fnmatch.fnmatchcase(k, theirs) and v == v}
  best = max(matches, key=matches.get, default=None)
  a = values.get(ours)
  return {"benchmark": f"efficientnet/ratio/{ours}_over_{theirs}", "unit": "x",
          "value": round(a / matches[best], 3) if a and best else float("nan"), "against": best}


def run(*, batch: int = 8, size: int = 224, repeats: int = 5, plain: bool = True, train: bool = True) -> list[dict]:
  rows = camjax_rows(batch=batch, size=size, repeats=repeats, plain=False)
  if plain:
    rows += camjax_rows(batch=batch, size=size, repeats=3, plain=True)
  try:
    rows += torch_rows(batch=batch, size=size, repeats=repeats)
  except ImportError as e:  # torch is a benchmark-only dependency
    rows.append({"benchmark": "efficientnet/torch", "value": float("nan"), "unit": "images/s", "error": str(e)})
  if train:
    rows += train_rows(batch=batch, size=size, repeats=5, plain=plain)
  for ours, theirs in (("camjax/forward_cam", "torch_*/forward_cam"),
                       ("camjax/forward", "torch_*/forward"),
                       ("camjax/forward_cam", "camjax_plain_conv/forward_cam"),
                       ("camjax/train_step", "camjax_plain_conv/train_step"),
                       ("camjax/train_step", "torch_channels_last/train_step")):
    rows.append(_ratio(rows, ours, theirs))
  return rows


if __name__ == "__main__":
  from benchmarks.run import markdown

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--no-plain", action="store_true", help="skip the plain-convolution rows (slow)")
  parser.add_argument("--no-train", action="store_true", help="skip the train step rows")
  args = parser.parse_args()
  print(markdown(run(plain=not args.no_plain, train=not args.no_train)))
  sys.exit(0)
