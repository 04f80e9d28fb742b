"""The split metadata of the WSOL evaluation standard (Choe et al., CVPR 2020): one reader for every caller.

A split folder (``metadata/ILSVRC/val``, ``metadata/CUB/test``, a ``--metadata`` directory) holds:

- ``image_ids.txt``: one image id per line, a path relative to the image root;
- ``class_labels.txt``: ``id,label`` (label an integer class index);
- ``image_sizes.txt``: ``id,width,height`` in pixels;
- ``localization.txt``: ``id,x0,y0,x1,y1`` per box (several lines for several boxes,
  inclusive pixel coordinates of the original image) or, for mask data sets,
  ``id,mask_path,ignore_path`` per instance mask (the ignore path may be empty).

The data set builders (``camjax.data.wsol_metadata``) and the saved-map scorer
(``camjax.localization.saved_maps``) both read through ``read``; each checks what it
needs on top (the scorer: every image has a size and a box or mask).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Iterator

from camjax.errors import UserError

IMAGE_IDS, CLASS_LABELS, IMAGE_SIZES, LOCALIZATION = (
    "image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")
FILES = (IMAGE_IDS, CLASS_LABELS, IMAGE_SIZES, LOCALIZATION)
BOXES, MASKS = "boxes", "masks"


@dataclasses.dataclass
class Item:
  """One listed image: its label, declared size (or None), pixel boxes, and mask paths for mask data sets."""

  id: str
  label: int | None = None
  size: tuple[int, int] | None = None  # (width, height)
  boxes: list[tuple[float, float, float, float]] = dataclasses.field(default_factory=list)
  masks: list[str] = dataclasses.field(default_factory=list)  # instance masks, relative to a mask root
  ignore: str | None = None  # the ignore mask, relative to a mask root


@dataclasses.dataclass
class Split:
  """The items of one split folder in ``image_ids.txt`` order and whether it annotates boxes or masks."""

  directory: str
  items: list[Item]
  kind: str = BOXES  # BOXES or MASKS


def _lines(path: str) -> Iterator[tuple[int, str]]:
  """(line number, stripped line) of the non-blank lines; nothing when the file is absent."""
  if not os.path.isfile(path):
    return
  try:
    with open(path) as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"cannot read {path} ({e}); the metadata files are comma-separated text") from e
  for lineno, line in enumerate(text.split("\n"), 1):  # text mode: \r\n and \r arrive as \n
    if line.strip():
      yield lineno, line.strip()


def _fields(path: str, lineno: int, line: str, n: int, layout: str) -> list[str]:
  """The id and ``n`` values; ids may themselves hold commas, so the values are split off from the right."""
  parts = line.rsplit(",", n)
  if len(parts) != n + 1:
    raise UserError(f"{path} line {lineno}: expected {layout}; got {line}")
  return parts


def _numbers(path: str, lineno: int, line: str, values: list[str], layout: str, *, integers: bool) -> list[float]:
  try:
    numbers = [float(v) for v in values]
  except ValueError:
    numbers = [math.nan]
  if not all(math.isfinite(v) and (not integers or v.is_integer()) for v in numbers):
    raise UserError(f"{path} line {lineno}: expected {layout}; got {line}")
  return numbers


def localization_kind(split_dir: str | os.PathLike) -> str:
  """``masks`` when the first line of ``localization.txt`` has three fields (id,mask,ignore); else ``boxes``."""
  first = next(_lines(os.path.join(os.fspath(split_dir), LOCALIZATION)), None)
  return MASKS if first is not None and first[1].count(",") == 2 else BOXES


def read(split_dir: str | os.PathLike, *, labels: bool = True) -> Split:
  """Every file of one split folder; a missing file contributes nothing, a malformed line fails naming file and line.

  Lines about ids that ``image_ids.txt`` does not list are checked but not kept. ``labels=False``
  skips ``class_labels.txt`` (scoring saved maps does not need it).
  """
  split_dir = os.fspath(split_dir)
  path = lambda name: os.path.join(split_dir, name)  # noqa: E731
  ids = [line for _, line in _lines(path(IMAGE_IDS))]
  by_id = {i: Item(i) for i in ids}
  kind = localization_kind(split_dir)

  if labels:
    layout = "id,label (an integer class index)"
    for lineno, line in _lines(path(CLASS_LABELS)):
      image_id, *values = _fields(path(CLASS_LABELS), lineno, line, 1, layout)
      (label,) = _numbers(path(CLASS_LABELS), lineno, line, values, layout, integers=True)
      if image_id in by_id:
        by_id[image_id].label = int(label)
  layout = "id,width,height (integers)"
  for lineno, line in _lines(path(IMAGE_SIZES)):
    image_id, *values = _fields(path(IMAGE_SIZES), lineno, line, 2, layout)
    width, height = _numbers(path(IMAGE_SIZES), lineno, line, values, layout, integers=True)
    if image_id in by_id:
      by_id[image_id].size = (int(width), int(height))
  layout = "id,mask_path,ignore_path" if kind == MASKS else "id,x0,y0,x1,y1 (numbers)"
  for lineno, line in _lines(path(LOCALIZATION)):
    if kind == MASKS:
      image_id, mask, ignore = _fields(path(LOCALIZATION), lineno, line, 2, layout)
      if image_id in by_id:
        by_id[image_id].masks.append(mask)
        if ignore:
          by_id[image_id].ignore = ignore
    else:
      image_id, *values = _fields(path(LOCALIZATION), lineno, line, 4, layout)
      box = _numbers(path(LOCALIZATION), lineno, line, values, layout, integers=False)
      if image_id in by_id:
        by_id[image_id].boxes.append(tuple(box))
  return Split(split_dir, [by_id[i] for i in ids], kind)
