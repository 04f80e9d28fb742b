"""Run every benchmark: ``python -m benchmarks.run [--only cam,localization] [--out FILE]``.

Each ``benchmarks/bench_<name>.py`` exposes ``run() -> list[dict]``; rows carry at
least ``benchmark``, ``value`` and ``unit``. Results go to a JSON file with the
machine description, and a markdown table is printed for the README.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys
import time
import traceback

from benchmarks.common import machine


def discover() -> list[str]:
  here = pathlib.Path(__file__).parent
  return sorted(p.stem[len("bench_"):] for p in here.glob("bench_*.py"))


def markdown(rows: list[dict]) -> str:
  lines = ["| benchmark | value | unit | details |", "|---|---:|---|---|"]
  for row in rows:
    details = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("benchmark", "value", "unit"))
    value = row["value"]
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    lines.append(f"| {row['benchmark']} | {shown} | {row['unit']} | {details} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
  parser.add_argument("--out", default="benchmarks/results.json")
  args = parser.parse_args(argv)
  names = [n for n in discover() if not args.only or n in args.only.split(",")]
  rows, failed = [], []
  for name in names:
    print(f"== {name}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
      module = importlib.import_module(f"benchmarks.bench_{name}")
      rows.extend(module.run())
    except Exception:  # a failing benchmark is reported, the others still run
      traceback.print_exc()
      failed.append(name)
    print(f"   {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
  result = {"machine": machine(), "rows": rows, "failed": failed}
  pathlib.Path(args.out).write_text(json.dumps(result, indent=2))
  print(f"Machine: {json.dumps(result['machine'])}\n")
  print(markdown(rows))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
