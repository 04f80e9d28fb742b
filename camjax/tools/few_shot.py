"""The WSOL standard's few-shot baseline: a localizer trained on a few fully supervised images, scored like a CAM.

  python -m camjax.few_shot --config=configs/quickstart.py --workdir=runs/few_shot \\
      --split=validation --per_class=5 --steps=300 [--target=auto|boxes|masks] \\
      [--compare_with=runs/quickstart] [--config.x=y ...]

Takes ``--per_class`` images of every class from ``--split`` (default
``train_fullsup``, the standard's fully supervised split; a data set without one,
such as the built-in ``camjax_shapes``, must name another: its ``validation`` split
is held out from both training and test), trains the config's model with a 1x1
foreground head on them (``camjax.wsol.few_shot``), and scores its sigmoid map,
as the map of every class, on the config's eval split with the accumulators
``camjax.evaluation`` uses: GT-known localization (CAM paper, ``eval.paper_threshold``),
MaxBoxAcc, MaxBoxAccV2 (``eval.iou_thresholds``) and PxAP where there are masks.
``--target=auto`` trains on masks where the data set has them, else on boxes.
``--compare_with`` puts a CAM run's scores (its ``eval_results.json``) beside it.

Writes ``few_shot.json`` and ``few_shot.md`` to ``--workdir``, each first to a
temporary file and renamed only when the run succeeds, so a failed run leaves
what an earlier run wrote.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from camjax import app
from camjax.errors import UserError

OUTPUTS = ("few_shot.json", "few_shot.md")
STANDARD_SPLIT = "train_fullsup"
COLUMNS = (("gt_known_loc", "GT-known loc (paper)"), ("MaxBoxAcc", "MaxBoxAcc"), ("MaxBoxAccV2", "MaxBoxAccV2"),
           ("PxAP", "PxAP"))


def build_parser(prog: str) -> app.ArgumentParser:
  parser = app.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", required=True, help="config file: model, data set, eval split and thresholds")
  parser.add_argument("--workdir", required=True, help="where few_shot.json and few_shot.md go")
  parser.add_argument("--split", default=STANDARD_SPLIT, help="split the few images come from")
  parser.add_argument("--per_class", type=int, default=10, help="images per class (the standard: 10 on ImageNet)")
  parser.add_argument("--steps", type=int, default=300, help="training steps")
  parser.add_argument("--batch_size", type=int, default=32, help="images per step")
  parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (cosine decay to 0)")
  parser.add_argument("--weight_decay", type=float, default=1e-4, help="AdamW weight decay on kernels")
  parser.add_argument("--target", default="auto", choices=("auto", "boxes", "masks"),
                      help="foreground to learn: masks where the data set has them (auto), or boxes")
  parser.add_argument("--seed", type=int, help="image choice, initialisation and data order "
                      "(default: training.seed)")
  parser.add_argument("--compare_with", help="a CAM run's workdir: its eval_results.json goes beside the scores")
  return parser


def check_args(args: Any) -> None:
  """Numbers out of range, found before anything is loaded."""
  for flag in ("per_class", "steps", "batch_size"):
    if getattr(args, flag) < 1:
      raise UserError(f"--{flag}={getattr(args, flag)}; give a positive number")
  if not args.lr > 0:
    raise UserError(f"--lr={args.lr}; give a positive learning rate")
  if args.weight_decay < 0:
    raise UserError(f"--weight_decay={args.weight_decay}; give 0 or more")


def cam_scores(workdir: str) -> dict:
  """A ``camjax.main`` run's GT-known loc, MaxBoxAcc, MaxBoxAccV2 and PxAP, from its ``eval_results.json``."""
  from camjax.evaluation.loop import RESULTS_FILE

  path = os.path.join(workdir, RESULTS_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
  except FileNotFoundError:
    raise UserError(f"--compare_with={workdir} has no {RESULTS_FILE}; point it at an evaluated camjax run") from None
  except (OSError, ValueError) as e:
    raise UserError(f"--compare_with: cannot read {path} ({e}); point it at an evaluated camjax run") from e
  scores = {"step": results.get("step")}
  for key, group, name in (("gt_known_loc", "paper", "gt_known_loc_acc"), ("MaxBoxAcc", "wsol", "MaxBoxAcc"),
                           ("MaxBoxAccV2", "wsol", "MaxBoxAccV2"), ("PxAP", "pxap", "PxAP")):
    if name in results.get(group, {}):
      scores[key] = float(results[group][name])
  return scores


def data_splits(dataset: Any) -> list[str]:
  """The splits a prepared data set has."""
  return list(dataset.info.splits.keys())


def check_data(config: Any, split: str, target: str) -> tuple[Any, str]:
  """The prepared data set and the target to train on; a split or target it cannot give is one line."""
  from camjax import data
  from camjax.data.examples import source_has_mask

  d = config.data
  if d.name == data.SYNTHETIC:
    raise UserError("the few-shot baseline trains through the image pipeline, which the synthetic set skips; "
                    f"set --config.data.name to one of {', '.join(data.builder_names())}")
  dataset = data.prepare_from_config(config)
  name = f"{d.name}/{d.builder_config}" if d.builder_config else d.name
  splits = data_splits(dataset)
  if split not in splits:
    fallback = [s for s in splits if s not in (d.eval_split, d.train_split)]
    hint = (f"; name the split the few images come from, e.g. --split={fallback[0]} (held out from training "
            "and test)" if fallback else "; name the split the few images come from with --split")
    raise UserError(f"{name} has no split {split!r} (it has {', '.join(splits)}){hint}")
  if d.eval_split not in splits:
    raise UserError(f"{name} has no eval split {d.eval_split!r} (it has {', '.join(splits)}); "
                    "set --config.data.eval_split")
  if split == d.eval_split:
    raise UserError(f"--split={split} is the eval split: the few images must not be the images scored; "
                    "choose another --split")
  has_mask = source_has_mask(dataset.as_data_source(split))
  if target == "masks" and not has_mask:
    raise UserError(f"the {split} split of {name} has no masks; use --target=boxes (or auto)")
  return dataset, "masks" if target == "masks" or (target == "auto" and has_mask) else "boxes"


def score(map_fn: Callable[[np.ndarray], np.ndarray], batches: Iterable[dict], protocol: dict, *,
          ignore_regions: Callable[[np.ndarray], np.ndarray] | None = None, progress: bool = True,
          total: int | None = None) -> dict:
  """Class-agnostic score maps of every valid image, scored as the eval loop scores the true class's CAM.

  ``map_fn(images) -> (B, H, W)`` maps; ``protocol`` holds ``cam_thresholds``,
  ``iou_thresholds`` and ``paper_threshold``. The map stands for every class, so
  only GT-known scores exist (no top-1 variants). With ``ignore_regions`` (record
  indices -> bool masks: mask annotations without boxes, OpenImages30k) the eval
  loop scores PxAP alone, leaving those pixels out, and so does this.
  """
  from tqdm import tqdm

  from camjax import localization
  from camjax.tools.compare_scoring import Localization, ground_truth

  scorer = Localization(**protocol) if ignore_regions is None else None
  pxap = localization.PxapAccumulator(protocol["cam_thresholds"]) if ignore_regions is not None else None
  count = 0
  for batch in tqdm(batches, desc="few-shot eval", unit="batch", total=total, disable=not progress,
                    file=sys.stderr, leave=False):
    valid = np.asarray(batch["valid"], bool)
    if not valid.any():
      continue
    maps = np.asarray(map_fn(np.asarray(batch["image"], np.float32)), np.float32)[valid]
    labels, boxes, masks = ground_truth(batch, valid)
    if scorer is not None:
      scorer.add(maps, labels, boxes, masks, np.ones(len(labels), bool))
    else:
      pxap.add(localization.min_max(maps, dtype=np.float32), masks,
               ignore_regions(np.asarray(batch["index"])[valid]))
    count += int(valid.sum())
  if not count:
    raise UserError("the eval split gave no valid image; check --config.data.eval_split")
  if scorer is None:
    return {"num_images": count, "PxAP": pxap.result()["PxAP"]}
  results = {k: v for k, v in scorer.result().items() if not k.startswith("top1_loc@")}
  return {"num_images": count, **results}


def protocol_of(config: Any) -> dict:
  """The eval loop's scoring settings from the config."""
  return {"cam_thresholds": np.arange(0.0, 1.0, config.eval.wsol_threshold_step),
          "iou_thresholds": tuple(config.eval.iou_thresholds), "paper_threshold": config.eval.paper_threshold}


def markdown(results: dict) -> str:
  """The scores as a table, with the CAM run's beside them when there is one."""
  cam = results.get("cam")
  header = ["metric", "few-shot"] + ([f"CAM ({cam['workdir']})"] if cam else [])
  lines = [f"# {results['title']}", "", results["description"], "",
           "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
  for key, name in COLUMNS:
    if key not in results["scores"]:
      continue
    row = [name, f"{results['scores'][key]:.1f}"]
    if cam:
      row.append(f"{cam[key]:.1f}" if key in cam else "-")
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def write_outputs(results: dict, workdir: str) -> list[str]:
  """few_shot.json and few_shot.md, both or neither (``app.write_together``)."""
  json_name, md_name = OUTPUTS
  return app.write_together(workdir, {json_name: app.text_writer(json.dumps(results, indent=2, default=float) + "\n"),
                                      md_name: app.text_writer(markdown(results))})


def describe(name: str, split: str, choice: Any, per_class: int, target: str, config: Any, steps: int) -> str:
  """One paragraph: what was trained on what, and where it differs from the standard."""
  short = {c: n for c, n in choice.per_class.items() if n < per_class}
  text = (f"{config.model.name} with a 1x1 foreground head, trained {steps} steps with per-pixel binary "
          f"cross-entropy against the {'masks' if target == 'masks' else 'union of the ground-truth boxes'} of "
          f"{len(choice.indices)} images ({per_class} per class) from the {split} split of {name}")
  if split != STANDARD_SPLIT:
    text += f" (the standard takes them from {STANDARD_SPLIT}, which this run did not use)"
  if short:
    text += "; classes with fewer images: " + ", ".join(f"{c} ({n})" for c, n in sorted(short.items()))
  return (text + f". Its sigmoid map, upsampled to the image, is scored as the map of every class on the "
          f"{config.data.eval_split} split (GT-known scores).")


def run(argv: Sequence[str]) -> int:
  parser = build_parser("python -m camjax.few_shot")
  args, rest = parser.parse_known_args(list(argv[1:]))
  overrides = [a for a in rest if a.startswith("--config.")]
  if len(overrides) != len(rest):
    parser.error(f"unrecognized arguments: {' '.join(a for a in rest if a not in overrides)}")
  check_args(args)
  from camjax import main as camjax_main
  from camjax.tools import ablation

  config = ablation.load_config(args.config, overrides)
  camjax_main.validate_config(config, mode="eval")
  import jax

  from camjax.train import sharding

  devices = jax.local_device_count()  # the few images' batches are split over this process's devices
  sharding.per_device_batch(args.batch_size, devices, field="--batch_size")
  sharding.per_device_batch(config.eval.batch_size, devices, field="eval.batch_size")
  from camjax.train.checkpoint import pretrained_format

  if pretrained_format(config) == "torchvision":
    from camjax import weights

    weights.check_pretrained_path(config.pretrained.path)
  cam = {"workdir": args.compare_with, **cam_scores(args.compare_with)} if args.compare_with else None
  workdir = app.writable_dir(args.workdir, "--workdir")
  began = time.perf_counter()
  dataset, target = check_data(config, args.split, args.target)
  results = fit_and_score(config, dataset, split=args.split, per_class=args.per_class, steps=args.steps,
                          batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, target=target,
                          seed=config.training.seed if args.seed is None else args.seed)
  results["seconds"]["total"] = time.perf_counter() - began
  results["config"] = args.config
  results["overrides"] = overrides
  if cam:
    results["cam"] = cam
  paths = write_outputs(results, workdir)
  print(markdown(results))
  print(f"took {results['seconds']['total']:.1f} s (training {results['seconds']['train']:.1f} s); "
        f"wrote {', '.join(paths)}")
  return 0


def fit_and_score(config: Any, dataset: Any, *, split: str, per_class: int, steps: int, batch_size: int,
                  lr: float, weight_decay: float, target: str, seed: int) -> dict:
  """Choose the images, train the localizer, score its maps: the results ``few_shot.json`` holds."""
  import jax

  from camjax.data import pipeline, subsample
  from camjax.data.openimages import IgnoreRegions
  from camjax.train import COMPUTE_DTYPES, data as train_data
  from camjax.wsol import few_shot

  d = config.data
  name = f"{d.name}/{d.builder_config}" if d.builder_config else d.name
  seconds: dict[str, float] = {}
  start = time.perf_counter()
  source = dataset.as_data_source(split)
  choice = subsample.per_class(subsample.partly_decoded(dataset, split), per_class, int(config.model.num_classes), seed)
  seconds["choose"] = time.perf_counter() - start
  origin = "" if split == STANDARD_SPLIT else f" (not the standard's {STANDARD_SPLIT})"
  print(f"few-shot images: {len(choice.indices)} from the {split} split of {name}{origin}, up to {per_class} "
        f"per class, target: {target}", flush=True)

  start = time.perf_counter()
  batches = pipeline.train_iterator(
      subsample.Subset(source, choice.indices), global_batch_size=batch_size, image_size=d.image_size, seed=seed,
      process_index=0, process_count=1, augment=train_data.augment_settings(config), mean=tuple(d.mean),
      std=tuple(d.std), max_boxes=d.max_boxes, on_bad_data=d.on_bad_data, worker_count=d.worker_count)
  dtype = COMPUTE_DTYPES[config.model.dtype]
  try:
    trained = few_shot.train(few_shot.build_localizer(config, seed), batches, steps=steps, lr=lr,
                             weight_decay=weight_decay, target=target, dtype=dtype,
                             freeze=tuple(config.pretrained.freeze), progress=config.training.progress_bar)
  finally:
    batches.close()
  seconds["train"] = time.perf_counter() - start
  tail = max(1, min(10, steps // 10))
  first, last = float(np.mean(trained.losses[:tail])), float(np.mean(trained.losses[-tail:]))
  print(f"trained {steps} steps in {seconds['train']:.1f} s (with compile); loss {first:.4f} -> {last:.4f} "
        f"(mean of the first and last {tail} steps)", flush=True)

  start = time.perf_counter()
  eval_batches = train_data.eval_batches(config, process_index=0, process_count=1)
  scores = score(trained.map_fn(dtype), eval_batches, protocol_of(config),
                 ignore_regions=IgnoreRegions.for_eval(config), progress=config.training.progress_bar,
                 total=len(eval_batches))
  seconds["eval"] = time.perf_counter() - start
  return {
      "title": f"Few-shot localization baseline on {name}",
      "description": describe(name, split, choice, per_class, target, config, steps),
      "model": config.model.name, "pretrained": config.pretrained.path, "data": name, "split": split,
      "standard_split": split == STANDARD_SPLIT, "per_class": per_class, "num_images": len(choice.indices),
      "images_per_class": {str(c): n for c, n in choice.per_class.items()}, "indices": choice.indices,
      "unreadable": choice.unreadable, "target": target, "steps": steps, "batch_size": batch_size, "lr": lr,
      "weight_decay": weight_decay, "seed": seed,
      "loss": {"first": first, "last": last, "steps_averaged": tail},
      "eval_split": d.eval_split, "scores": scores, "seconds": seconds,
      "devices": [str(device) for device in jax.local_devices()],
  }


def main(argv: Sequence[str] | None = None) -> int:
  """Exit code: 0, or 2 with one ``camjax: error:`` line for bad input."""
  return app.guard(lambda: run(list(sys.argv if argv is None else argv)))


def entry(argv: Sequence[str] | None = None) -> None:
  sys.exit(main(argv))


if __name__ == "__main__":
  entry()
