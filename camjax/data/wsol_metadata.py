"""Where the WSOL evaluation standard's split metadata (Choe et al., CVPR 2020) lives in a data set folder.

A split folder (``metadata/ILSVRC/val``, ``metadata/CUB/test``, ...) holds ``image_ids.txt``,
``class_labels.txt``, ``image_sizes.txt`` and ``localization.txt``; the files are read by
``camjax.localization.metadata``, the one reader the saved-map scorer uses too.

The standard's split folders are ``train``, ``val`` (the held-out fully
supervised split for tuning thresholds: ImageNetV2 / CUBV2) and ``test``; camjax
names them ``train``, ``train_fullsup`` and ``test``.
"""

from __future__ import annotations

import os

from camjax.localization import metadata
from camjax.localization.metadata import FILES, Item

__all__ = ["FILES", "Item", "SPLIT_FOLDERS", "available_splits", "find_metadata_dir", "read_split"]

SPLIT_FOLDERS = {"train": "train", "train_fullsup": "val", "test": "test"}


def find_metadata_dir(root: str | os.PathLike, dataset: str) -> str | None:
  """``root/<dataset>`` (wsolevaluation layout ``metadata/ILSVRC``) or ``root`` itself: whichever has split folders."""
  for cand in (os.path.join(root, dataset), os.fspath(root)):
    if any(os.path.isfile(os.path.join(cand, folder, "image_ids.txt")) for folder in SPLIT_FOLDERS.values()):
      return cand
  return None


def available_splits(metadata_dir: str | os.PathLike) -> list[str]:
  """camjax split names whose folder has an ``image_ids.txt``."""
  return [s for s, folder in SPLIT_FOLDERS.items()
          if os.path.isfile(os.path.join(metadata_dir, folder, metadata.IMAGE_IDS))]


def read_split(split_dir: str | os.PathLike) -> list[Item]:
  """The items of one split folder in ``image_ids.txt`` order; a malformed line fails naming file and line."""
  return metadata.read(split_dir).items
