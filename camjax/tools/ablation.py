"""GAP vs GMP (or any config field) over several seeds: one command, one table.

  python -m camjax.ablation --config=configs/quickstart.py --workdir=runs/ablation \\
      --field=model.pooling --values=gap,gmp --seeds=0,1,2

Each (value, seed) pair is a full ``camjax.main --mode=train_and_eval`` run in
its own subdirectory (a finished run is reused, so an interrupted ablation
resumes). The table of means and standard deviations is printed and written to
``WORKDIR/ablation.md`` and ``WORKDIR/ablation.json``.

For a config family built from an argument (``configs/wsol.py:method=cam,data=cub``),
``--field=arg.method`` varies that argument's key instead of a config field, so
each value gets the family's own settings for it (the WSOL table's per-method
hyperparameters), not one config with a single field changed:

  python -m camjax.ablation --config=configs/wsol.py:backbone=small,data=shapes \\
      --workdir=runs/wsol_quick --field=arg.method --values=cam,has,acol,spg,adl,cutmix --seeds=0,1,2

The WSOL standard chooses hyperparameters on held-out fully supervised images
(``train_fullsup``), never on the test split. ``--select_on=train_fullsup`` also
scores every trained run there (``camjax.main --mode=eval`` into
``RUN/select-train_fullsup/``; ``--select_per_class=N`` scores N images per
class, the standard's ``num_val_sample_per_class``) and names the value whose
mean score there is best (``--select_metric``: MaxBoxAccV2 where there are boxes,
else PxAP, as the standard scores); the test scores to report are that value's row:

  python -m camjax.ablation --config=configs/wsol.py:method=adl,backbone=resnet50,data=cub \\
      --workdir=runs/adl_lr --field=optimizer.lr --values=1e-4,2e-4,5e-4 --seeds=0 \\
      --select_on=train_fullsup --select_per_class=5

The field, every value and the extra overrides are checked against the config
before the first run starts; a misspelt field or a value that cannot work ends
in one line, ``camjax: error: ...``, and exit 2, as does a run that fails.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
from typing import Any, Sequence

import numpy as np

from camjax import app as camjax_app
from camjax.errors import UserError

ARG = "arg."  # --field=arg.KEY varies KEY of the config file's argument
METRICS = ("classification_top1", "gt_known_loc", "top1_loc", "MaxBoxAcc", "MaxBoxAccV2", "PxAP")


def _main_metrics(config: str, workdir: str, args: Sequence[str], metrics: str, what: str) -> dict:
  """``metrics`` written by ``camjax.main`` with ``args`` in a subprocess (fresh JAX state), run only if absent."""
  if not os.path.exists(metrics):
    cmd = [sys.executable, "-m", "camjax.main", f"--config={config}", f"--workdir={workdir}", *args]
    print("+", " ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    if code != 0:
      raise UserError(f"{what} failed with exit code {code} (its output is above); fix it and rerun "
                      "the ablation, finished runs are reused")
  if not os.path.exists(metrics):
    raise UserError(f"{what} ended without {metrics} (preempted?); rerun the ablation to resume it")
  with open(metrics) as f:
    return json.load(f)


def run_one(config: str, workdir: str, overrides: Sequence[str]) -> dict:
  """Train and evaluate one setting; returns its metrics.json."""
  return _main_metrics(config, workdir, ["--mode=train_and_eval", "--config.report.enabled=True",
                                         "--config.eval.baseline=True", *overrides],
                       os.path.join(workdir, "metrics.json"), f"the run in {workdir}")


def selection_dir(split: str, per_class: int) -> str:
  """The subdirectory of a run that holds its scores on the selection split."""
  return f"select-{split}" + (f"-{per_class}per_class" if per_class else "")


def selection_flags(split: str, per_class: int) -> list[str]:
  """The overrides that score a trained run on ``split`` into its own subdirectory."""
  return [f"--config.data.eval_split={split}", f"--config.eval.samples_per_class={per_class}",
          f"--config.eval.output_subdir={selection_dir(split, per_class)}"]


def score_on(config: str, workdir: str, overrides: Sequence[str], split: str, per_class: int) -> dict:
  """A trained run's scores on ``split`` (``camjax.main --mode=eval``, reused when already there)."""
  return _main_metrics(config, workdir, ["--mode=eval", "--config.report.enabled=True", *overrides,
                                         *selection_flags(split, per_class)],
                       os.path.join(workdir, selection_dir(split, per_class), "metrics.json"),
                       f"scoring the run in {workdir} on {split!r}")


def select(selection: dict[str, list[dict]], metric: str) -> tuple[str, str, dict[str, float]]:
  """The value with the best mean ``metric`` over its runs' selection scores, the metric used, and every mean.

  ``metric`` "auto" is the standard's: MaxBoxAccV2 where there are boxes, else PxAP (OpenImages30k).
  """
  if metric == "auto":
    metric = "MaxBoxAccV2" if all("MaxBoxAccV2" in r for rs in selection.values() for r in rs) else "PxAP"
  means = {}
  for value, results in selection.items():
    missing = [r for r in results if metric not in r]
    if missing:
      raise UserError(f"--select_metric={metric}: the selection scores of {value} have no {metric} "
                      f"(they have {', '.join(k for k in missing[0] if k in METRICS)}); choose one of those")
    means[value] = float(np.mean([r[metric] for r in results]))
  best = max(means, key=lambda v: means[v])  # the first listed value wins a tie
  return best, metric, means


def _config_overrides(args: Sequence[str]) -> list[str]:
  return [a for a in args if a.startswith(("--config.", "-config."))]


def load_config(config: str, overrides: Sequence[str] = ()) -> Any:
  """The config a run gets from ``--config=config`` and its ``--config.x=y`` overrides, loaded here.

  A file that cannot be loaded or an override that does not apply is a
  UserError, as it would be in ``camjax.main``.
  """
  from absl import flags
  from ml_collections import config_flags

  argv = ["camjax.ablation", f"--config={config}", *_config_overrides(overrides)]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True, sys_argv=argv)
  try:
    values(argv)
    loaded = values.config
    loaded.get("mode")  # a file that failed to load raises on first access
    return loaded
  except flags.Error as e:
    raise UserError(f"{camjax_app.one_line(e)}; fix the override") from e
  except (KeyError, AttributeError, OSError, TypeError, ValueError) as e:
    raise UserError(camjax_app.config_flag_message(e, argv)) from e


def check_field(config: Any, field: str) -> None:
  """``field`` must name a value of ``config`` (a dotted path); a near miss gets a "did you mean" hint."""
  node, path = config, []
  for part in field.split("."):
    keys = sorted(str(k) for k in node.keys()) if hasattr(node, "keys") else []
    if part not in keys:
      where = ".".join(path) or "the config"
      close = difflib.get_close_matches(part, keys, n=1)
      hint = (f"did you mean {'.'.join(path + close)}?" if close
              else f"{where} has: {', '.join(keys)}" if keys else f"{where} is a value, not a section")
      raise UserError(f"--field={field}: no config field {'.'.join(path + [part])}; {hint}")
    node = node[part]
    path.append(part)
  if hasattr(node, "keys"):
    raise UserError(f"--field={field} is a section, not a value; choose one of: "
                    f"{', '.join(f'{field}.{k}' for k in sorted(node.keys()))}")


def with_arg(config: str, key: str, value: str) -> str:
  """``config`` (``path.py:k=v,k=v``) with ``key`` set to ``value``, added when the argument lacks it."""
  path, _, arg = config.partition(":")
  pairs = [p.split("=", 1) for p in arg.split(",") if p]
  if any(len(p) != 2 for p in pairs):
    raise UserError(f"--field={ARG}{key} needs a config argument of key=value pairs (path.py:k=v,k=v), "
                    f"got {config!r}")
  pairs = [(k, value if k == key else v) for k, v in pairs]
  if key not in {k for k, _ in pairs}:
    pairs.append((key, value))
  return f"{path}:{','.join(f'{k}={v}' for k, v in pairs)}"


def setting(config: str, field: str, value: str) -> tuple[str, list[str], str]:
  """The config path, the override flags and the subdirectory name of one value of ``field``."""
  if field.startswith(ARG):
    key = field[len(ARG):]
    return with_arg(config, key, value), [], f"{key}={value}"
  return config, [f"--config.{field}={value}"], f"{field.replace('.', '_')}={value}"


def check_runs(config: str, field: str, values: Sequence[str], overrides: Sequence[str],
               select_on: str = "", select_per_class: int = 0) -> None:
  """Before any run: the field exists; every value gives a config camjax.main trains (and scores on select_on)."""
  from camjax import main as camjax_main

  if not field.startswith(ARG):
    check_field(load_config(config, overrides), field)
  elif not field[len(ARG):] or "=" in field or "," in field:
    raise UserError(f"--field={field}: name one key of the config argument, e.g. --field=arg.method")
  for value in values:
    path, flags, _ = setting(config, field, value)
    run_config = load_config(path, [*flags, *overrides])
    try:
      camjax_main.validate_config(run_config, mode="train_and_eval")
    except UserError as e:
      raise UserError(f"with {field}={value}: {e}") from e
    if select_on:
      if select_on == run_config.data.eval_split:
        raise UserError(f"--select_on={select_on} is the split the runs are tested on; choose settings on "
                        "held-out images (the standard: train_fullsup)")
      scoring = load_config(path, [*flags, *overrides, *selection_flags(select_on, select_per_class)])
      try:
        camjax_main.validate_config(scoring, mode="eval")
      except UserError as e:
        raise UserError(f"--select_on={select_on} with {field}={value}: {e}") from e


def summarize(runs: dict[str, list[dict]]) -> tuple[dict, str]:
  """Mean and standard deviation (ddof=1 when there are several seeds) per value and metric."""
  table: dict = {}
  for value, results in runs.items():
    table[value] = {}
    for metric in METRICS:
      xs = np.array([r[metric] for r in results if metric in r], np.float64)
      if len(xs):
        table[value][metric] = {"mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if len(xs) > 1 else 0.0,
                                "n": int(len(xs)), "values": xs.tolist()}
  metrics = [m for m in METRICS if any(m in t for t in table.values())]
  lines = ["| setting | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
  for value, row in table.items():
    cells = [f"{row[m]['mean']:.1f} ± {row[m]['std']:.1f}" if m in row else "-" for m in metrics]
    lines.append(f"| {value} | " + " | ".join(cells) + " |")
  return table, "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = camjax_app.ArgumentParser(prog="python -m camjax.ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--field", default="model.pooling",
                      help="config field to vary, or arg.KEY for a key of the config file's argument")
  parser.add_argument("--values", default="gap,gmp")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--select_on", default="",
                      help="also score every run on this split (the standard: train_fullsup) and name the best value")
  parser.add_argument("--select_per_class", type=int, default=0,
                      help="images per class scored on --select_on (0: all; the standard: 5 CUB, 25 OpenImages)")
  parser.add_argument("--select_metric", default="auto", choices=("auto", *METRICS),
                      help="what --select_on maximises (auto: MaxBoxAccV2 where there are boxes, else PxAP)")
  parser.add_argument("overrides", nargs="*", help="extra --config.x=y flags passed to every run (after --)")
  args = parser.parse_args(argv)
  values = [v for v in args.values.split(",") if v]
  try:
    seeds = [int(s) for s in args.seeds.split(",") if s]
  except ValueError:
    raise UserError(f"--seeds={args.seeds}: give comma-separated integers, e.g. --seeds=0,1,2") from None
  if not values or not seeds:
    raise UserError("--values and --seeds need at least one entry each")
  if args.select_per_class < 0:
    raise UserError(f"--select_per_class={args.select_per_class}; give 0 (all images) or a positive number")
  if not args.select_on and (args.select_per_class or args.select_metric != "auto"):
    raise UserError("--select_per_class and --select_metric need --select_on=SPLIT (e.g. train_fullsup)")
  check_runs(args.config, args.field, values, args.overrides, args.select_on, args.select_per_class)
  camjax_app.writable_dir(args.workdir, "--workdir")
  runs: dict[str, list[dict]] = {}
  selection: dict[str, list[dict]] = {}
  for value in values:
    for seed in seeds:
      path, flags, name = setting(args.config, args.field, value)
      workdir = os.path.join(args.workdir, name, f"seed{seed}")
      flags = [*flags, f"--config.training.seed={seed}", *args.overrides]
      runs.setdefault(value, []).append(run_one(path, workdir, flags))
      if args.select_on:
        selection.setdefault(value, []).append(score_on(path, workdir, flags, args.select_on, args.select_per_class))
  table, markdown = summarize(runs)
  header = f"{args.field} over seeds {seeds} ({args.config}); mean ± standard deviation\n\n"
  report = {"field": args.field, "seeds": seeds, "config": args.config, "table": table}
  if args.select_on:
    best, metric, means = select(selection, args.select_metric)
    scored = f"{args.select_per_class} images per class" if args.select_per_class else "all images"
    selection_table, selection_markdown = summarize(selection)
    report["selection"] = {"split": args.select_on, "per_class": args.select_per_class, "metric": metric,
                           "means": means, "chosen": best, "table": selection_table}
    others = ", ".join(f"{v}: {m:.1f}" for v, m in means.items() if v != best)
    markdown += (f"\n\nThe same runs scored on {args.select_on} ({scored}):\n\n{selection_markdown}\n\n"
                 f"Chosen on {args.select_on} by mean {metric}: **{args.field}={best}** ({means[best]:.1f}"
                 + (f"; {others}" if others else "") + "). Its row in the first table is the one to report.")
  camjax_app.write_together(args.workdir, {"ablation.md": camjax_app.text_writer(header + markdown + "\n"),
                                           "ablation.json": camjax_app.text_writer(json.dumps(report, indent=2))})
  print(header + markdown)
  return 0


def entry(argv: Sequence[str] | None = None) -> None:
  sys.exit(camjax_app.guard(lambda: main(argv)))


if __name__ == "__main__":
  entry()
