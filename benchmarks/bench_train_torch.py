"""camjax's train step against PyTorch on the same network, measured in the same run.

``python -m benchmarks.bench_train_torch``. Both sides train ``vgg16_gap`` (224 px,
batch 8, float32, 1000 classes) with SGD, momentum 0.9 and weight decay on kernels
only; PyTorch runs channels-last with one thread per core. The two are timed
interleaved, step for step, so a machine shared with other work slows both alike;
the ratio (camjax / PyTorch images per second) is the number to read. The forward
pass alone (inference mode) is compared the same way. PyTorch is a benchmark
dependency only: skipped with a note when it is not installed.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import jax

from benchmarks.bench_train import build_step
from benchmarks.common import alternating_medians
from camjax.models.layers import count_params
from camjax.models.vgg import VGG16_STAGES
from camjax.train import build_model
from configs import default

NAME = "vgg16_gap"
NUM_CLASSES = 1000


def torch_vgg16_gap(num_classes: int = NUM_CLASSES) -> Any:
  """VGG16-GAP layer for layer as camjax's ``vgg16_gap``: conv1_1..conv5_3 (3x3 pad 1, bias, ReLU),
  2x2/2 max pools after stages 1-4, ``cam_conv`` 3x3 1024 + ReLU, global average pooling, bias-free linear.
  """
  import torch
  from torch import nn

  layers: list[nn.Module] = []
  cin = 3
  for s, stage in enumerate(VGG16_STAGES):
    if s:
      layers.append(nn.MaxPool2d(2, 2))
    for width in stage:
      layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
      cin = width
  layers += [nn.Conv2d(cin, 1024, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
             nn.Linear(1024, num_classes, bias=False)]
  model = nn.Sequential(*layers)
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
      nn.init.normal_(m.weight, 0.0, 0.01)
  return model.to(memory_format=torch.channels_last)


def _torch_step(batch: int, size: int, threads: int) -> tuple[dict[str, Callable[[], None]], int]:
  """One blocking train step and one inference forward of the torch model; and its parameter count."""
  import torch

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = torch_vgg16_gap()
  decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
  no_decay = [p for n, p in model.named_parameters() if not n.endswith("weight")]
  opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=0.01, momentum=0.9)
  images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, NUM_CLASSES, (batch,))
  loss_fn = torch.nn.CrossEntropyLoss()

  def step() -> None:
    model.train()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels)
    loss.backward()
    opt.step()
    loss.item()

  def forward() -> None:
    model.eval()
    with torch.inference_mode():
      model(images).sum().item()

  return {"step": step, "forward": forward}, sum(p.numel() for p in model.parameters())


def run(batch: int = 8, size: int = 224, repeats: int = 5) -> list[dict]:
  try:
    import torch
  except ImportError:
    return [{"benchmark": f"train_vs_torch/{NAME}", "value": float("nan"), "unit": "ratio",
             "error": "torch is not installed (pip install -r requirements-test.txt)"}]
  threads = os.cpu_count() or 1
  c = default.get_config()
  c.model.name, c.model.num_classes = NAME, NUM_CLASSES
  camjax_params = count_params(build_model(c))
  torch_fns, torch_params = _torch_step(batch, size, threads)
  if torch_params != camjax_params:
    raise AssertionError(f"the torch network has {torch_params} parameters, camjax's {NAME} {camjax_params}")
  ours = build_step(NAME, batch=batch, size=size)
  seconds = alternating_medians({"camjax/train": ours["step"], "torch/train": torch_fns["step"],
                          "camjax/forward": ours["forward"], "torch/forward": torch_fns["forward"]},
                                repeats=repeats, warmup=1, settle=0)
  common = {"batch": batch, "size": size, "dtype": "float32", "params": camjax_params, "torch": torch.__version__,
            "torch_threads": threads, "jax": jax.__version__, "devices": jax.device_count()}
  rows = []
  for what in ("train", "forward"):
    ours_ips, theirs_ips = batch / seconds[f"camjax/{what}"], batch / seconds[f"torch/{what}"]
    rows.append({"benchmark": f"train_vs_torch/{NAME}/{what}/camjax", "value": ours_ips, "unit": "images/s",
                 **common})
    rows.append({"benchmark": f"train_vs_torch/{NAME}/{what}/torch", "value": theirs_ips, "unit": "images/s",
                 "memory_format": "channels_last", **common})
    rows.append({"benchmark": f"train_vs_torch/{NAME}/{what}/ratio", "value": ours_ips / theirs_ips,
                 "unit": "camjax/torch", "repeats": repeats})
  return rows


if __name__ == "__main__":
  from benchmarks.run import markdown

  print(markdown(run()))
  sys.exit(0)
