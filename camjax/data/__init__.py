"""camjax data sets: TFDS builders stored as ArrayRecord, read back with ``tfds.data_source``.

Importing this package registers the builders ``camjax_shapes`` (built in, no
download), ``ilsvrc2012_loc``, ``cub200_2011`` and ``openimages30k`` (from the
user's manual download). ``prepare`` builds a data set once and returns its builder;
``prepare_from_config`` does it for the data set a config names (the synthetic
one included); ``builder.as_data_source(split)`` then gives random access to
records in the schema of ``camjax.data.examples``.

One module per idea: ``examples`` (the record schema), ``boxes`` (box
conventions), ``bad_data`` (the bad-data error and log), ``records`` (the checks
every builder runs), ``pipeline`` (grain batches), ``synthetic`` (the on-the-fly
test set).
"""

from __future__ import annotations

import os
from typing import Any

from camjax.data import records
from camjax.data.bad_data import BadDataError, read_bad_examples
from camjax.data.boxes import normalized_to_pixel, pixel_to_normalized
from camjax.data.synthetic import SYNTHETIC
from camjax.errors import UserError

DATA_DIR_ENV = "CAMJAX_DATA_DIR"


def default_data_dir() -> str:
  """``$CAMJAX_DATA_DIR`` if set, else ``~/tensorflow_datasets`` (the TFDS default)."""
  return os.path.expanduser(os.environ.get(DATA_DIR_ENV) or os.path.join("~", "tensorflow_datasets"))


def default_manual_dir(data_dir: str | None = None) -> str:
  """Where manual downloads (ILSVRC, CUB, OpenImages) are looked for unless told: ``<data_dir>/downloads/manual``."""
  return os.path.join(os.path.expanduser(data_dir or default_data_dir()), "downloads", "manual")


def builder_names() -> list[str]:
  return ["camjax_shapes", "ilsvrc2012_loc", "cub200_2011", "openimages30k"]


def _builder_class(name: str):

  classes = {"camjax_shapes": shapes.CamjaxShapes, "ilsvrc2012_loc": ilsvrc.Ilsvrc2012Loc,
             "cub200_2011": cub.Cub2002011, "openimages30k": openimages.OpenImages30k}
  if name not in classes:
    raise UserError(f"unknown data set {name!r}; known: {', '.join(builder_names())}")
  return classes[name]


def get_builder(name: str, data_dir: str | None = None, config: Any = None, *, on_bad_data: str | None = None):
  """The builder of ``name`` (``"camjax_shapes"`` or ``"camjax_shapes/px64"``) without preparing it."""
  if "/" in name:
    if config is not None:
      raise ValueError(f"give the config either in the name ({name!r}) or as config=, not both")
    name, config = name.split("/", 1)
  cls = _builder_class(name)
  if isinstance(config, str) and config not in cls.builder_configs:
    raise UserError(f"{name} has no config {config!r}; configs: {', '.join(cls.builder_configs)}")
  kwargs: dict[str, Any] = {"data_dir": os.path.expanduser(data_dir or default_data_dir()), "config": config}
  if on_bad_data is not None:
    kwargs["on_bad_data"] = on_bad_data
  return cls(**kwargs)


def prepare(name: str = "camjax_shapes", data_dir: str | None = None, config: Any = None, *,
            manual_dir: str | None = None, on_bad_data: str | None = None):
  """Build ``name`` into ``data_dir`` unless it is already there; return its builder.

  ``config`` is a config name or a ``BuilderConfig`` object (a config with another
  seed or size must have its own name). ``manual_dir`` holds the user's downloads
  for ILSVRC, CUB and OpenImages (default ``<data_dir>/downloads/manual``). ``on_bad_data``:
  "skip" or "fail" for every split; None means skip on train, fail elsewhere.
  Never touches the network: prepared data are only read from ``data_dir``.
  """
  import tensorflow_datasets as tfds

  data_dir = os.path.expanduser(data_dir or default_data_dir())
  builder = get_builder(name, data_dir, config, on_bad_data=on_bad_data)
  if not (builder.data_path / "dataset_info.json").exists():
    manual_dir = os.path.expanduser(manual_dir or default_manual_dir(data_dir))
    if hasattr(builder, "check_manual_dir"):
      builder.check_manual_dir(manual_dir)
    dl_config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    builder.download_and_prepare(file_format="array_record", download_config=dl_config)
  return builder


def prepare_from_config(config: Any) -> Any:
  """The data set ``config.data`` names, prepared: its TFDS builder, or the synthetic set (nothing to build).

  Either gives ``as_data_source(split)``; ``label_names`` gives its class names.
  The one place a config's data settings become ``prepare`` arguments.
  """
  d = config.data
  if d.name == SYNTHETIC:
    from camjax.data.synthetic import SyntheticData

    return SyntheticData.from_config(config)
  return prepare(d.name, d.data_dir or None, d.builder_config or None, manual_dir=d.manual_dir or None,
                 on_bad_data=d.on_bad_data)


def label_names(dataset: Any) -> list[str]:
  """Class names of a prepared data set (``prepare`` or ``prepare_from_config``); [] when it has none."""
  names = getattr(dataset, "label_names", None)
  if names is None:
    names = dataset.info.features["label"].names
  return list(names)


__all__ = [
    "BadDataError", "SYNTHETIC", "builder_names", "default_data_dir", "default_manual_dir", "get_builder",
    "label_names", "normalized_to_pixel", "pixel_to_normalized", "prepare", "prepare_from_config",
    "read_bad_examples", "records",
]

# Register the builders with TFDS so tfds.data_source("camjax_shapes/...", ...) finds them.
from camjax.data import cub, ilsvrc, openimages, shapes  # noqa: E402,F401
