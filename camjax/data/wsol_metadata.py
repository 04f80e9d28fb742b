"""Read the split metadata of the WSOL evaluation standard (Choe et al., CVPR 2020).

A split folder (``metadata/ILSVRC/val``, ``metadata/CUB/test``, ...) holds:

- ``image_ids.txt``: one image id per line, a path relative to the image root;
- ``class_labels.txt``: ``id,label`` (label an integer class index);
- ``image_sizes.txt``: ``id,width,height``;
- ``localization.txt``: ``id,x0,y0,x1,y1`` per box, several lines for several
  boxes, inclusive pixel coordinates of the original image.

The standard's split folders are ``train``, ``val`` (the held-out fully
supervised split for tuning thresholds: ImageNetV2 / CUBV2) and ``test``; camjax
names them ``train``, ``train_fullsup`` and ``test``.
"""

from __future__ import annotations

import dataclasses
import os

SPLIT_FOLDERS = {"train": "train", "train_fullsup": "val", "test": "test"}
FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")


@dataclasses.dataclass
class Item:
  """One listed image: its label, declared size (or None) and pixel boxes."""

  id: str
  label: int | None = None
  size: tuple[int, int] | None = None  # (width, height)
  boxes: list[tuple[float, float, float, float]] = dataclasses.field(default_factory=list)


def find_metadata_dir(root: str | os.PathLike, dataset: str) -> str | None:
  """``root/<dataset>`` (wsolevaluation layout ``metadata/ILSVRC``) or ``root`` itself, whichever holds split folders."""
  for cand in (os.path.join(root, dataset), os.fspath(root)):
    if any(os.path.isfile(os.path.join(cand, folder, "image_ids.txt")) for folder in SPLIT_FOLDERS.values()):
      return cand
  return None


def available_splits(metadata_dir: str | os.PathLike) -> list[str]:
  """camjax split names whose folder has an ``image_ids.txt``."""
  return [s for s, folder in SPLIT_FOLDERS.items() if os.path.isfile(os.path.join(metadata_dir, folder, "image_ids.txt"))]


def _lines(path: str) -> list[str]:
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [ln.strip() for ln in f if ln.strip()]


def read_split(split_dir: str | os.PathLike) -> list[Item]:
  """The items of one split folder in ``image_ids.txt`` order; a malformed line fails naming file and line."""
  split_dir = os.fspath(split_dir)
  ids = _lines(os.path.join(split_dir, "image_ids.txt"))
  items = {i: Item(i) for i in ids}

  def parse(name: str, n: int):
    path = os.path.join(split_dir, name)
    for lineno, line in enumerate(_lines(path), 1):
      parts = line.rsplit(",", n)
      if len(parts) != n + 1:
        raise ValueError(f"{path}:{lineno}: expected id and {n} comma-separated values, got {line!r}")
      item = items.get(parts[0])
      if item is None:
        continue  # listed there but not in image_ids.txt: not part of the split
      try:
        yield item, [float(v) for v in parts[1:]]
      except ValueError:
        raise ValueError(f"{path}:{lineno}: values must be numbers, got {line!r}") from None

  for item, (label,) in parse("class_labels.txt", 1):
    item.label = int(label)
  for item, (w, h) in parse("image_sizes.txt", 2):
    item.size = (int(w), int(h))
  for item, box in parse("localization.txt", 4):
    item.boxes.append(tuple(box))
  return [items[i] for i in ids]
