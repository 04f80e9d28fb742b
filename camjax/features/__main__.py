"""Command line of camjax.features (paper Sec. 4).

Fine-grained pipeline (full image / CAM-box crop / GT-box crop, Tbl. 4):

  python -m camjax.features --config=configs/finegrained_quickstart.py --workdir=runs/finegrained_quickstart

Pattern discovery (a detector from folders of images, ranking, CAMs):

  python -m camjax.features discover --config=configs/finegrained_quickstart.py \\
      --positives=DIR --negatives=DIR --output=DIR [--rank=DIR] [--top=10]

Bad input (a misspelt config field, a backbone workdir without a checkpoint, a
missing folder) ends in one line, ``camjax: error: ...``, and exit 2.
"""

from __future__ import annotations

import json
import logging

from absl import flags
from ml_collections import config_flags

from camjax import app as camjax_app
from camjax.errors import UserError

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
camjax_app.define_verbose_flag()

COMMANDS = ("finegrained", "discover")


def _distributed() -> None:
  given = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if all(v is None for v in given):
    return
  if any(v is None for v in given):
    raise UserError("multi-process runs need all of --coordinator_address, --num_processes and --process_id")
  if FLAGS.num_processes > 1:
    import jax

    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)


def main(argv: list[str]) -> int:
  command = argv[1] if len(argv) > 1 else "finegrained"
  if len(argv) > 2 or command not in COMMANDS:
    raise UserError(f"unexpected arguments {argv[1:]}; usage: python -m camjax.features [{'|'.join(COMMANDS)}] "
                    "--config=... (config overrides are --config.FIELD=VALUE)")
  config = camjax_app.config_value()
  if config is None:
    raise UserError("--config is required (e.g. --config=configs/finegrained_quickstart.py)")
  logging.getLogger("camjax").setLevel(logging.INFO)
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)
  if command == "finegrained":
    if not FLAGS.workdir:
      raise UserError("--workdir is required (where features, boxes and finegrained.json go)")
    from camjax.features import finegrained

    finegrained.check_config(config)
    camjax_app.writable_dir(FLAGS.workdir, "--workdir")
    _distributed()
    finegrained.run(config, FLAGS.workdir)
    return 0
  if not (FLAGS.positives and FLAGS.negatives and FLAGS.output):
    raise UserError("discover needs --positives, --negatives and --output")
  from camjax.features import discovery, finegrained

  for name in ("positives", "negatives", "rank"):
    folder = getattr(FLAGS, name)
    if folder and not discovery.list_images(folder, flag=f"--{name}") and name != "rank":
      raise UserError(f"--{name}={folder} holds no images ({', '.join(discovery.IMAGE_EXTENSIONS)}); "
                      f"point --{name} to a folder of images")
  finegrained.check_backbone_workdir(config)
  camjax_app.writable_dir(FLAGS.output, "--output")
  _distributed()
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


def entry() -> None:
  camjax_app.run_absl(main)


if __name__ == "__main__":
  entry()
