"""Command line of camjax.features (paper Sec. 4).

Fine-grained pipeline (full image / CAM-box crop / GT-box crop, Tbl. 4):

  python -m camjax.features --config=configs/finegrained_quickstart.py --workdir=runs/finegrained_quickstart

Pattern discovery (a detector from folders of images, ranking, CAMs):

  python -m camjax.features discover --config=configs/finegrained_quickstart.py \\
      --positives=DIR --negatives=DIR --output=DIR [--rank=DIR] [--top=10]
"""

from __future__ import annotations

import json
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a camjax features config (configs/finegrained_*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Fine-grained pipeline: where features, boxes and finegrained.json go.")
flags.DEFINE_string("positives", None, "discover: folder of images that show the pattern.")
flags.DEFINE_string("negatives", None, "discover: folder of images that do not.")
flags.DEFINE_string("rank", None, "discover: folder of images to rank (default: positives + negatives).")
flags.DEFINE_string("output", None, "discover: where ranking.json and the CAMs of the top images go.")
flags.DEFINE_integer("top", 10, "discover: how many top-ranked images get CAM pictures.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")

COMMANDS = ("finegrained", "discover")


def _distributed() -> None:
  given = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if all(v is None for v in given):
    return
  if any(v is None for v in given):
    raise app.UsageError("multi-process runs need all of --coordinator_address, --num_processes and --process_id")
  if FLAGS.num_processes > 1:
    import jax

    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)


def main(argv: list[str]) -> int:
  command = argv[1] if len(argv) > 1 else "finegrained"
  if len(argv) > 2 or command not in COMMANDS:
    raise app.UsageError(f"usage: python -m camjax.features [{'|'.join(COMMANDS)}] --config=... (got {argv[1:]})")
  if FLAGS.config is None:
    raise app.UsageError("--config is required (e.g. --config=configs/finegrained_quickstart.py)")
  logging.getLogger("camjax").setLevel(logging.INFO)
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)
  config = FLAGS.config
  try:
    _distributed()
    if command == "finegrained":
      if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
      from camjax.features import finegrained

      finegrained.run(config, FLAGS.workdir)
      return 0
    if not (FLAGS.positives and FLAGS.negatives and FLAGS.output):
      raise app.UsageError("discover needs --positives, --negatives and --output")
    from camjax.features import discovery, finegrained

    config = finegrained.with_backbone_preprocessing(config)
    model, info = finegrained.load_backbone(config)
    result = discovery.discover(
        model, positives=FLAGS.positives, negatives=FLAGS.negatives, output=FLAGS.output, rank=FLAGS.rank,
        image_size=int(config.data.image_size), mean=tuple(config.data.mean), std=tuple(config.data.std),
        eval_mode=config.data.eval_mode,
        top=FLAGS.top, C_grid=tuple(config.features.C_grid), threshold=float(config.features.cam_threshold),
        batch_size=int(config.features.batch_size), seed=int(config.features.seed))
    summary = {k: v for k, v in result.items() if k != "ranking"}
    summary["backbone"] = info
    summary["top"] = result["ranking"][: FLAGS.top]
    print(json.dumps(summary, indent=2))
    return 0
  except ValueError as e:
    print(f"camjax.features: error: {e}", file=sys.stderr)
    return 2


def entry() -> None:
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  entry()
