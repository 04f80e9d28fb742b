"""The loop of ``python -m camjax.methods compare``: every method's maps of the same images, scored as they come.

``compare(images, settings)`` runs one method after another over the same batches
(one compile per method), scores each batch on the host (``camjax.localization``,
the eval loop's accumulators, and ``camjax.methods.faithfulness``) and keeps the
first few maps for the figure. The command (``camjax.tools.compare_methods``)
builds the ``Images``; tests can build them from any batches.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from camjax.errors import UserError
from camjax.tools import compare_figure


def keywords(fn: Callable) -> list[str]:
  """The keywords of a method that ``--option`` may set (the ones every call sets itself left out)."""
  fixed = ("model", "images", "layer", "class_ids", "upsample")
  return [p for p in inspect.signature(fn).parameters if p not in fixed]


def pooled_layer(model: Any, image_size: int) -> str:
  """The layer whose output the model returns as its features: the map global pooling reads."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from camjax import methods
  from camjax.methods._core import tap_layer

  names = methods.layer_names(model, image_size)
  graphdef, state = nnx.split(model)
  found: list[str] = []

  def forward(images):
    net = nnx.merge(graphdef, state)
    net.eval()
    taps = {name: tap_layer(net, name) for name in names}
    _, features = net(images)
    found.extend(name for name, tap in taps.items() if tap.output is features)
    return features

  jax.eval_shape(forward, jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32))
  if not found:
    raise UserError(f"{type(model).__name__} returns features that no named layer outputs; "
                    "camjax.methods needs the layer global pooling reads")
  return found[0]


@dataclasses.dataclass
class Images:
  """A model and the images every method sees: ``batches()`` gives a fresh pass over the same batches.

  A batch is a dict with "image" (B, H, W, 3) model inputs and "valid" (B,); a split
  with ground truth also has "label", "boxes", "num_boxes" and maybe "mask"
  (``camjax.train.data.eval_batches``); photos have "name".
  """

  model: Any
  batches: Callable[[], Iterable[dict]]
  num_images: int | None
  image_size: int
  mean: Sequence[float]
  std: Sequence[float]
  source: str
  class_names: Sequence[str] | None = None
  protocol: dict | None = None  # cam_thresholds, iou_thresholds, paper_threshold: the split has ground truth
  info: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def from_config(cls, config: Any, model: Any, *, step: int | None = None, workdir: str = "") -> "Images":
    """The config's eval split (``eval.max_examples``, ``eval.batch_size``) with its scoring settings."""
    from camjax import data
    from camjax.tools import cam_images
    from camjax.train import data as train_data

    def batches() -> Iterable[dict]:
      return train_data.eval_batches(config, process_index=0, process_count=1)

    d = config.data
    split = len(data.prepare_from_config(config).as_data_source(d.eval_split))
    total = min(split, config.eval.max_examples) if config.eval.max_examples else split
    name = f"{d.name}/{d.builder_config}" if d.builder_config else d.name
    part = f"all {total} images" if total == split else f"its first {total} of {split} images"
    protocol = {"cam_thresholds": np.arange(0.0, 1.0, config.eval.wsol_threshold_step),
                "iou_thresholds": tuple(config.eval.iou_thresholds), "paper_threshold": config.eval.paper_threshold}
    return cls(model, batches, total, int(d.image_size), tuple(d.mean), tuple(d.std),
               f"{config.model.name} (step {step}, {workdir}) on the {d.eval_split} split of {name}, {part}",
               cam_images.resolve_class_names("auto", config.model.num_classes, data=d), protocol,
               {"model": config.model.name, "step": step, "workdir": workdir, "data": name, "split": d.eval_split})

  @classmethod
  def from_arrays(cls, model: Any, inputs: np.ndarray, names: Sequence[str], *, batch_size: int,
                  mean: Sequence[float], std: Sequence[float], class_names: Sequence[str] | None,
                  source: str) -> "Images":
    """Preprocessed images without ground truth, padded to whole batches (one compile per method)."""
    def batches() -> Iterable[dict]:
      for start in range(0, len(inputs), batch_size):
        chunk = inputs[start:start + batch_size]
        pad = batch_size - len(chunk)
        yield {"image": np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)]),
               "valid": np.arange(batch_size) < len(chunk),
               "name": list(names[start:start + batch_size]) + [""] * pad}

    return cls(model, batches, len(inputs), int(inputs.shape[1]), tuple(mean), tuple(std), source, class_names)


@dataclasses.dataclass
class Settings:
  methods: Sequence[str]
  options: dict = dataclasses.field(default_factory=dict)  # {method or "faithfulness": {keyword: value}}
  chunk_size: int | None = None
  faithfulness: bool = True
  figure_images: int = 4
  seed: int = 0
  progress: bool = True


class Localization:
  """The eval loop's scores of ground-truth class maps: paper GT-known, MaxBoxAcc(V2), PxAP."""

  def __init__(self, cam_thresholds: np.ndarray, iou_thresholds: Sequence[int], paper_threshold: float):
    from camjax import localization

    self.cam_thresholds = cam_thresholds
    self.paper = localization.PaperAccumulator(paper_threshold)
    self.wsol = localization.WsolAccumulator(cam_thresholds, iou_thresholds, "both")
    self.pxap = None

  def add(self, maps: np.ndarray, labels: Sequence[int], boxes: Sequence[np.ndarray], masks: np.ndarray | None,
          top1_correct: np.ndarray) -> None:
    from camjax import localization

    self.paper.add(None, None, list(labels), boxes, gt_known_cams=maps)
    unit = localization.min_max(maps, dtype=np.float32)
    self.wsol.add(unit, boxes, top1_correct=top1_correct)
    if masks is not None:
      self.pxap = self.pxap or localization.PxapAccumulator(self.cam_thresholds)
      self.pxap.add(unit, masks)

  def result(self) -> dict:
    paper, wsol = self.paper.result(), self.wsol.result()
    self.wsol.close()
    out = {"gt_known_loc": paper["gt_known_loc_acc"], **{k: wsol[k] for k in ("MaxBoxAcc", "MaxBoxAccV2") if k in wsol}}
    if self.pxap is not None:
      out["PxAP"] = self.pxap.result()["PxAP"]
    out.update({k: v for k, v in wsol.items() if k.startswith(("MaxBoxAcc@", "top1_loc@", "v1/best_threshold@"))})
    return out


def ground_truth(batch: dict, valid: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
  """Labels, integer boxes and foreground masks of a batch's valid rows, as the eval loop reads them."""
  labels = np.asarray(batch["label"])[valid]
  counts = np.asarray(batch["num_boxes"])[valid]
  boxes = [np.asarray(b[:n]).round().astype(np.int64) for b, n in zip(np.asarray(batch["boxes"])[valid], counts)]
  masks = np.asarray(batch["mask"])[valid] > 0 if "mask" in batch else None
  return labels, boxes, masks


def method_call(images: Images, name: str, layer: str, settings: Settings) -> Callable:
  """``(inputs, class_ids) -> (maps (B, K, H, W), logits)`` for one method with its settings."""
  import jax

  from camjax import methods

  fn = methods.ALL[name]
  accepted = keywords(fn)
  kwargs = dict(settings.options.get(name, {}))
  if settings.chunk_size and "chunk_size" in accepted:
    kwargs.setdefault("chunk_size", settings.chunk_size)
  if "key" in accepted:
    kwargs.setdefault("key", jax.random.key(settings.seed))
  kwargs["layer"] = None if name in methods.ATTRIBUTION else layer
  return lambda inputs, ids: fn(images.model, inputs, class_ids=ids, upsample=True, **kwargs)


class Timer:
  """Seconds and rows per batch; the first batch (which compiles) is kept apart when there are more."""

  def __init__(self):
    self.first: tuple[float, int] | None = None
    self.seconds, self.rows = 0.0, 0

  def add(self, seconds: float, rows: int) -> None:
    if self.first is None:
      self.first = (seconds, rows)
    else:
      self.seconds, self.rows = self.seconds + seconds, self.rows + rows

  def per_image(self) -> float:
    return self.seconds / self.rows if self.rows else self.first[0] / self.first[1]

  def result(self, prefix: str) -> dict:
    out = {f"{prefix}seconds_per_image": self.per_image(), f"{prefix}includes_compile": not self.rows}
    if self.rows:
      out[f"{prefix}compile_seconds"] = max(0.0, self.first[0] - self.per_image() * self.first[1])
    return out


def _timed(fn: Callable, timer: Timer, rows: int) -> Any:
  import jax

  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  timer.add(time.perf_counter() - start, rows)
  return out


def score_method(images: Images, name: str, call: Callable, settings: Settings, faithfulness: Any,
                 keep: dict, desc: str) -> dict:
  """Maps of every image by one method, scored batch by batch; ``keep`` collects the figure's maps."""
  import jax
  import jax.numpy as jnp
  from tqdm import tqdm

  scorer = Localization(**images.protocol) if images.protocol else None
  map_timer, faith_timer = Timer(), Timer()
  sums: dict[str, float] = {}
  count = nonfinite = 0
  kept = keep["maps"].setdefault(name, [])
  options = settings.options.get("faithfulness", {})
  with tqdm(total=images.num_images, desc=desc, unit="img", disable=not settings.progress, file=sys.stderr,
            leave=False) as bar:
    for batch in images.batches():
      valid = np.asarray(batch["valid"], bool)
      if not valid.any():
        continue
      inputs = jnp.asarray(batch["image"], jnp.float32)
      ids = jnp.asarray(batch["label"], jnp.int32)[:, None] if scorer else None
      maps, logits = _timed(lambda: call(inputs, ids), map_timer, len(valid))
      top1 = np.asarray(jnp.argmax(logits, axis=-1))
      ids = jnp.asarray(top1, jnp.int32)[:, None] if ids is None else ids
      host = np.asarray(maps[:, 0], np.float32)[valid]
      bad = ~np.isfinite(host).all(axis=(1, 2))
      nonfinite += int(bad.sum())
      host[bad] = 0.0
      if faithfulness is not None:
        scores = _timed(lambda: faithfulness.score(images.model, inputs, jnp.nan_to_num(maps), ids,
                                                   key=jax.random.key(settings.seed), **options),
                        faith_timer, len(valid))
        for metric, value in scores.items():
          sums[metric] = sums.get(metric, 0.0) + float(np.asarray(value, np.float64)[valid, 0].sum())
      labels, boxes, masks = ground_truth(batch, valid) if scorer else (top1[valid], None, None)
      if scorer is not None:
        scorer.add(host, labels, boxes, masks, top1[valid] == labels)
      kept.extend(host[:max(0, settings.figure_images - len(kept))])
      _keep_rows(keep["rows"], images, batch, valid, labels, boxes, settings.figure_images)
      count += int(valid.sum())
      bar.update(int(valid.sum()))
  if not count:
    raise UserError(f"no valid image to compare in {images.source}; check --config.data.eval_split")
  row = {"images": count, **map_timer.result("")}
  if scorer is not None:
    row["localization"] = scorer.result()
  if faithfulness is not None:
    row["faithfulness"] = {k: v / count for k, v in sums.items()}
    row.update(faith_timer.result("faithfulness_"))
  if nonfinite:
    row["nonfinite_maps"] = nonfinite
  return row


def _keep_rows(rows: list, images: Images, batch: dict, valid: np.ndarray, labels: np.ndarray,
               boxes: list | None, wanted: int) -> None:
  """The figure's first ``wanted`` images: shown as the model sees them, with class, name and boxes."""
  for j, row in enumerate(np.flatnonzero(valid)[:max(0, wanted - len(rows))]):
    rows.append({"image": compare_figure.display_image(batch["image"][row], images.mean, images.std),
                 "class": int(labels[j]), "name": batch.get("name", [""] * len(valid))[row],
                 "boxes": None if boxes is None else boxes[j]})


def faithfulness_module() -> Any:
  """``camjax.methods.faithfulness``, or a one-line error saying how to go without it."""
  try:
    from camjax.methods import faithfulness
  except ModuleNotFoundError as e:
    if e.name != "camjax.methods.faithfulness":
      raise
    raise UserError("this camjax has no camjax.methods.faithfulness; pass --no_faithfulness") from e
  return faithfulness


def _faithfulness_settings(module: Any, options: dict) -> dict | None:
  """The options ``score`` ran with: its defaults, then the ones given."""
  if module is None:
    return None
  defaults = {k: p.default for k, p in inspect.signature(module.score).parameters.items()
              if k in ("steps",) and p.default is not inspect.Parameter.empty}
  return {**defaults, **{k: v for k, v in options.items() if k != "metrics"}}


def compare(images: Images, settings: Settings) -> tuple[dict, dict | None]:
  """Every method of ``settings`` on ``images``: the results (``methods.json``) and the figure's data."""
  import jax

  from camjax import methods

  layer = pooled_layer(images.model, images.image_size)
  faithfulness = faithfulness_module() if settings.faithfulness else None
  rows: dict[str, dict] = {}
  keep: dict = {"rows": [], "maps": {}}
  start = time.perf_counter()
  for i, name in enumerate(settings.methods):
    desc = f"[{i + 1}/{len(settings.methods)}] {name}"
    began = time.perf_counter()
    call = method_call(images, name, layer, settings)
    rows[name] = row = {"layer": None if name in methods.ATTRIBUTION else layer,
                        **score_method(images, name, call, settings, faithfulness, keep, desc)}
    took = time.perf_counter() - began
    rate = f"{row['images'] / took:.1f} images/s" if row["images"] >= took else f"{took / row['images']:.1f} s/image"
    print(f"{desc}: {row['images']} images in {took:.1f} s ({rate} with compile and scoring; maps "
          f"{1000 * row['seconds_per_image']:.1f} ms/image), {time.perf_counter() - start:.0f} s elapsed",
          file=sys.stderr, flush=True)
  metrics = list(settings.options.get("faithfulness", {}).get("metrics", faithfulness.METRICS)) if faithfulness else []
  target = "ground-truth class" if images.protocol else "top-1 class"
  results = {
      "title": f"CAM methods on {images.source}",
      "description": compare_figure.description(images, layer, target, rows, _faithfulness_settings(
          faithfulness, settings.options.get("faithfulness", {}))),
      "source": images.source, **images.info, "layer": layer, "target": target, "faithfulness_metrics": metrics,
      "num_images": next(iter(rows.values()))["images"] if rows else 0, "device": str(jax.devices()[0]),
      "settings": {"chunk_size": settings.chunk_size, "options": settings.options, "seed": settings.seed},
      "methods": rows}
  return results, compare_figure.figure_data(images, rows, keep)
