"""GAP vs GMP (or any config field) over several seeds: one command, one table.

  python -m camjax.ablation --config=configs/quickstart.py --workdir=runs/ablation \\
      --field=model.pooling --values=gap,gmp --seeds=0,1,2

Each (value, seed) pair is a full ``camjax.main --mode=train_and_eval`` run in
its own subdirectory (a finished run is reused, so an interrupted ablation
resumes). The table of means and standard deviations is printed and written to
``WORKDIR/ablation.md`` and ``WORKDIR/ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Sequence

import numpy as np

METRICS = ("classification_top1", "gt_known_loc", "top1_loc", "MaxBoxAcc", "MaxBoxAccV2", "PxAP")


def run_one(config: str, workdir: str, overrides: Sequence[str]) -> dict:
  """Train and evaluate one setting in a subprocess (fresh JAX state); returns its metrics.json."""
  metrics = os.path.join(workdir, "metrics.json")
  if not os.path.exists(metrics):
    cmd = [sys.executable, "-m", "camjax.main", f"--config={config}", f"--workdir={workdir}",
           "--mode=train_and_eval", "--config.report.enabled=True", "--config.eval.baseline=True", *overrides]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
  with open(metrics) as f:
    return json.load(f)


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
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--field", default="model.pooling", help="config field to vary")
  parser.add_argument("--values", default="gap,gmp")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("overrides", nargs="*", help="extra --config.x=y flags passed to every run (after --)")
  args = parser.parse_args(argv)
  values = [v for v in args.values.split(",") if v]
  seeds = [int(s) for s in args.seeds.split(",") if s]
  if not values or not seeds:
    parser.error("--values and --seeds need at least one entry each")
  runs: dict[str, list[dict]] = {}
  for value in values:
    for seed in seeds:
      workdir = os.path.join(args.workdir, f"{args.field.replace('.', '_')}={value}", f"seed{seed}")
      flags = [f"--config.{args.field}={value}", f"--config.training.seed={seed}", *args.overrides]
      runs.setdefault(value, []).append(run_one(args.config, workdir, flags))
  table, markdown = summarize(runs)
  header = f"{args.field} over seeds {seeds} ({args.config}); mean ± standard deviation\n\n"
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "ablation.md"), "w") as f:
    f.write(header + markdown + "\n")
  with open(os.path.join(args.workdir, "ablation.json"), "w") as f:
    json.dump({"field": args.field, "seeds": seeds, "config": args.config, "table": table}, f, indent=2)
  print(header + markdown)
  return 0


if __name__ == "__main__":
  sys.exit(main())
