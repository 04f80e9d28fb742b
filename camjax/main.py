"""camjax entry point: train, evaluate, or both, on 1 device to a multi-host pod.

  python -m camjax.main --config=configs/quickstart.py --workdir=runs/quickstart
  python -m camjax.main --config=configs/googlenet_gap.py --workdir=runs/g \
      --mode=train_and_eval --config.optimizer.lr=0.001

Every host of a multi-host run executes the same command. ``jax.distributed``
is initialised from ``--coordinator_address/--num_processes/--process_id`` or,
when those are absent, from the TPU / SLURM environment JAX detects itself.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import Any

from absl import flags
from ml_collections import config_flags

from camjax import app as camjax_app
from camjax.errors import ConfigError, UserError

MODES = ("train", "eval", "train_and_eval", "cam")
DTYPES = ("float32", "bfloat16")
EVAL_PROTOCOLS = ("paper", "wsol")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and reports.")
flags.DEFINE_enum("mode", None, MODES, "What to do (default: the config's `mode` field, else train).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
flags.DEFINE_multi_string("images", None, "--mode=cam: image files or directories (figures, cams.json in --workdir).")
flags.DEFINE_bool("verbose_orbax", False, "Show orbax's INFO logs.")
camjax_app.define_verbose_flag()

# Set to 1 by launch/tpu_pod.sh: call jax.distributed.initialize() and let JAX find its peers.
DISTRIBUTED_ENV = "CAMJAX_DISTRIBUTED"
# The config of the run that started the workdir (see run_config_path).
CONFIG_FILE = "config.json"


def validate_config(config: Any, *, num_devices: int | None = None, mode: str = "train",
                    local_devices: int | None = None) -> None:
  """Fail at start, with one line saying what to change, on a config that cannot work.

  ``local_devices`` (the devices of one process) checks that the model axis stays inside
  a process: each process reads its own rows of the batch, so processes must not share a
  data-parallel row.
  """
  from camjax import models
  from camjax.models.base import POOLINGS

  if config.model.name not in models.names():
    raise ConfigError(f"unknown model {config.model.name!r}; set --config.model.name to one of: "
                      f"{', '.join(models.names())}")
  if config.model.pooling not in POOLINGS:
    raise ConfigError(f"model.pooling={config.model.pooling!r} is not one of {POOLINGS}; "
                      "set --config.model.pooling=gap or gmp")
  if config.model.dtype not in DTYPES:
    raise ConfigError(f"model.dtype={config.model.dtype!r}; set --config.model.dtype to one of {DTYPES}")
  if config.model.num_classes < 1:
    raise ConfigError(f"model.num_classes={config.model.num_classes}; set it to the number of classes")
  from camjax.wsol.training import check_method

  check_method(config)  # before config.json is written
  unknown = set(config.eval.protocols) - set(EVAL_PROTOCOLS)
  if unknown:
    raise ConfigError(f"eval.protocols has {sorted(unknown)}; use a subset of {EVAL_PROTOCOLS}")
  e = config.eval
  if e.samples_per_class < 0:
    raise ConfigError(f"eval.samples_per_class={e.samples_per_class}; give 0 (the whole split) or the number of "
                      "images per class to score")
  if e.samples_per_class and config.data.name == "synthetic":
    raise ConfigError("eval.samples_per_class needs a real data set (the synthetic set is sized by "
                      "eval.max_examples); set --config.eval.samples_per_class=0")
  d = config.data
  if mode != "train" and d.name == "synthetic" and d.eval_split == d.train_split and not d.num_train_examples:
    raise ConfigError(f"data.eval_split={d.eval_split!r}: the synthetic training split is endless; score another "
                      "split or bound it with --config.data.num_train_examples")
  if os.path.isabs(e.output_subdir) or ".." in e.output_subdir.split(os.sep):
    raise ConfigError(f"eval.output_subdir={e.output_subdir!r}; give a folder name inside the workdir "
                      "(or '' for the workdir itself)")
  t = config.training
  if t.global_batch_size < 1:
    raise ConfigError(f"training.global_batch_size={t.global_batch_size}; set it to a positive number")
  if mode != "eval":
    if t.num_steps <= 0 and t.num_epochs <= 0:
      raise ConfigError("set --config.training.num_steps or --config.training.num_epochs to a positive value")
    if t.log_every < 1 or t.checkpoint_every < 1:
      raise ConfigError("training.log_every and training.checkpoint_every must be >= 1")
  if num_devices is not None:
    from camjax.train import sharding

    data, _ = sharding.mesh_shape(config.mesh.data, config.mesh.model, num_devices, local_devices=local_devices)
    sharding.per_device_batch(t.global_batch_size, data, grad_accum_steps=t.grad_accum_steps)
    if mode != "train":
      sharding.per_device_batch(config.eval.batch_size, data, field="eval.batch_size")
  if mode != "eval":
    from camjax.train.checkpoint import pretrained_format

    if pretrained_format(config) == "torchvision":  # a camjax checkpoint is checked when it is read
      from camjax import weights

      weights.check_pretrained_path(config.pretrained.path)
  data_sets = _data_set_names()
  if config.data.name not in data_sets:
    raise ConfigError(f"unknown data set {config.data.name!r}; set --config.data.name to one of: "
                      f"{', '.join(data_sets)}")
  if config.data.name in ("ilsvrc2012_loc", "cub200_2011", "openimages30k"):
    _check_manual_data(config)


def _data_set_names() -> list[str]:
  from camjax import data
  from camjax.train.data import SYNTHETIC

  return [*data.builder_names(), SYNTHETIC]


def _check_manual_data(config: Any) -> None:
  """ImageNet and CUB come from the user's download: unless a prepared copy exists, name what is missing."""
  from camjax import data

  data_dir = os.path.expanduser(config.data.data_dir or data.default_data_dir())
  manual = os.path.expanduser(config.data.manual_dir or data.default_manual_dir(data_dir))
  try:
    builder = data.get_builder(config.data.name, data_dir, config.data.builder_config or None)
  except ValueError as e:
    raise ConfigError(f"{e}; set --config.data.builder_config") from e
  if (builder.data_path / "dataset_info.json").exists():
    return
  if not os.path.isdir(manual):
    raise ConfigError(f"data set {config.data.name} is not prepared in {data_dir} and its manual download dir "
                      f"{manual} does not exist; download it and set --config.data.manual_dir")
  try:
    builder.check_manual_dir(manual)
  except FileNotFoundError as e:
    raise ConfigError(f"data set {config.data.name} is not prepared in {data_dir} and its download is incomplete: "
                      f"{e}; complete it or set --config.data.manual_dir") from e


def distributed_args(coordinator_address: str | None, num_processes: int | None,
                     process_id: int | None, environ: dict | None = None) -> dict | None:
  """Arguments for ``jax.distributed.initialize``, or None for a single-process run."""
  environ = os.environ if environ is None else environ
  if coordinator_address or num_processes or process_id is not None:
    if not (coordinator_address and num_processes and process_id is not None):
      raise ConfigError("multi-process runs need all of --coordinator_address, --num_processes and --process_id")
    if num_processes == 1:
      return None
    return {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
  if cluster_detected(environ):
    return {}  # jax finds the cluster (TPU pod, SLURM, Open MPI) by itself
  return None


def cluster_detected(environ: dict) -> bool:
  """True when the environment describes a job of several processes that JAX can join by itself."""
  def count(name: str) -> int:
    try:
      return int(environ.get(name, "1"))
    except ValueError:
      return 1

  if environ.get(DISTRIBUTED_ENV, "") not in ("", "0"):
    return True
  if "," in environ.get("TPU_WORKER_HOSTNAMES", "") or environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  if "SLURM_PROCID" in environ and count("SLURM_NTASKS") > 1:
    return True
  return count("OMPI_COMM_WORLD_SIZE") > 1


def _setup_logging(verbose_orbax: bool) -> None:
  from absl import logging as absl_logging

  if not verbose_orbax:
    absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("camjax").setLevel(logging.INFO)


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the checkpoints already in ``workdir`` (orbax step folders), oldest first; [] for a new run."""
  from camjax import train

  directory = train.checkpoint_dir(workdir)
  try:
    names = os.listdir(directory)
  except (FileNotFoundError, NotADirectoryError):
    return []
  return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def run_config_path(workdir: str, mode: str, steps: list[int], now: datetime.datetime | None = None) -> str:
  """Where this run's config goes.

  ``config.json`` is the config of the run that started the workdir from step
  0; a resumed or evaluation run never replaces it (a refused resume points the
  user to it) and records its own config beside it:
  ``config.resume-<step>-<UTC time>.json`` or ``config.eval-<UTC time>.json``.
  """
  if not steps and mode != "eval":
    return os.path.join(workdir, CONFIG_FILE)
  stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
  name = f"config.eval-{stamp}" if mode == "eval" else f"config.resume-{steps[-1]}-{stamp}"
  path = os.path.join(workdir, f"{name}.json")
  n = 1
  while os.path.exists(path):  # two runs in the same second
    n += 1
    path = os.path.join(workdir, f"{name}-{n}.json")
  return path


def run(config: Any, workdir: str, mode: str) -> dict:
  """Train and/or evaluate; returns the evaluation results (empty for --mode=train).

  Nothing is written before the config is validated and the workdir is known
  to be writable.
  """
  import jax

  from camjax import train

  validate_config(config, num_devices=jax.device_count(), local_devices=jax.local_device_count(), mode=mode)
  if mode != "eval" or os.path.exists(workdir):
    camjax_app.writable_dir(workdir, "--workdir")
  steps = checkpoint_steps(workdir)
  if mode == "eval" and not steps:
    raise ConfigError(f"no checkpoint in {train.checkpoint_dir(workdir)} to evaluate; train first "
                      "(--mode=train or --mode=train_and_eval) or fix --workdir")
  record = None
  if jax.process_index() == 0:
    record = run_config_path(workdir, mode, steps)
    camjax_app.write_together(os.path.dirname(record) or ".",
                              {os.path.basename(record): camjax_app.text_writer(config.to_json_best_effort(indent=2))})
  try:
    return _train_and_eval(config, workdir, mode)
  except UserError:
    # A refused resume (a checkpoint of another config) or evaluation produced nothing with this config.
    if record is not None and os.path.basename(record) != CONFIG_FILE and checkpoint_steps(workdir) == steps:
      os.remove(record)
    raise


def _train_and_eval(config: Any, workdir: str, mode: str) -> dict:
  import jax

  from camjax import train

  results: dict = {}
  if mode in ("train", "train_and_eval"):
    result = train.train(config, workdir)
    if result.preempted:
      return {"preempted_at_step": result.step}
  else:
    result = train.restore_for_eval(config, workdir)
  if mode in ("eval", "train_and_eval"):
    from camjax.evaluation import loop as eval_loop

    output = os.path.join(workdir, config.eval.output_subdir) if config.eval.output_subdir else workdir
    if jax.process_index() == 0:
      os.makedirs(output, exist_ok=True)
    results = eval_loop.evaluate(result, config, output)
    if config.report.enabled:
      from camjax import report

      summary = report.write(result, config, output, results)
      if jax.process_index() == 0:
        print(report.format_table(summary))
  return results


def cam_on_images(config: Any, images: list[str], output: str, *, overrides: Any = None) -> int:
  """``--mode=cam``: top-k CAMs, boxes, figures and cams.json for the user's images, as camjax.cam_images writes."""
  from camjax.tools import cam_images

  if not images:
    raise UserError("--mode=cam needs --images=FILE_OR_DIR (repeat the flag for more)")
  records = cam_images.run(config, images, output, overrides=overrides)
  print(cam_images.summary_table(records, output))
  return 0


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; config overrides are --config.FIELD=VALUE")
  config = camjax_app.config_value()
  if config is None or FLAGS.workdir is None:
    raise UserError("both --config and --workdir are required, e.g. --config=configs/quickstart.py --workdir=runs/q")
  _setup_logging(FLAGS.verbose_orbax)
  from camjax.train import NonFiniteLossError

  try:
    dist = distributed_args(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    import jax

    if dist is not None:
      jax.distributed.initialize(**dist)
    mode = FLAGS.mode or config.get("mode", "train")
    if mode not in MODES:
      raise ConfigError(f"mode={mode!r}; set --mode or --config.mode to one of {MODES}")
    if mode == "cam":
      return cam_on_images(config, FLAGS.images or [], FLAGS.workdir, overrides=FLAGS["config"].override_values)
    if FLAGS.images:
      raise UserError(f"--images is for --mode=cam; this run's mode is {mode}")
    results = run(config, FLAGS.workdir, mode)
  except NonFiniteLossError as e:
    print(f"camjax: stopped: {e}", file=sys.stderr)
    return 3
  if results and not config.report.enabled:
    print(json.dumps(results, indent=2, default=str))  # with a report, its table was printed instead
  return 0


def entry() -> None:
  camjax_app.run_absl(main)


if __name__ == "__main__":
  entry()
