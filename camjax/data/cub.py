"""``cub200_2011``: Caltech-UCSD Birds-200-2011 from the user's manual download.

Configs:
- ``boxes`` (default): image, label (200 classes, names from ``classes.txt``),
  the bird's box, the official train/test split. No ``mask`` feature.
- ``masks``: the same plus ``mask`` from ``segmentations.tgz`` (binarized at 50%
  of the annotation scale); needs that archive. Kept as its own config because
  a TFDS feature set is fixed per config, so records with and without masks can
  not share one.
- ``wsol``: the WSOL evaluation standard's splits (train, train_fullsup = CUBV2,
  test) from ``metadata/CUB``; no masks.

``bounding_boxes.txt`` gives ``x y width height`` in pixels; the box covers
``[x, x + width)``, so the inclusive pixel box is
``(round(x), round(y), round(x + width) - 1, round(y + height) - 1)``, rounding
half up.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from camjax.data import examples, records, wsol_metadata
from camjax.data.archives import Source
from camjax.data.bad_data import BadExample
from camjax.errors import MissingFileError

ARCHIVE = "CUB_200_2011.tgz"
SEGMENTATIONS = "segmentations.tgz"
# What the official layout reads from an extracted CUB_200_2011/ folder (the WSOL layout only the first).
FOLDER_FILES = ("classes.txt", "images.txt", "image_class_labels.txt", "bounding_boxes.txt", "train_test_split.txt",
                "images/")

_INSTRUCTIONS = """\
Put in the manual folder (default <data_dir>/downloads/manual):
  CUB_200_2011.tgz     (or its extracted CUB_200_2011/ folder) with images/, images.txt, classes.txt,
                       image_class_labels.txt, bounding_boxes.txt, train_test_split.txt
  segmentations.tgz    (or segmentations/) for config masks
Config wsol also needs metadata/CUB/{train,val,test}/ (WSOL evaluation metadata); the images they list
are looked up under CUB/<id> (e.g. the evaluation's dataset/CUB folder with CUBV2), then in the archive.
"""


def _table(data: bytes | None, name: str, ncols: int) -> dict[int, list[str]]:
  """``<image_id> <values...>`` lines -> {image_id: values}."""
  if data is None:
    raise MissingFileError(f"cub200_2011: {name} is missing from the CUB_200_2011 archive or folder")
  out = {}
  for lineno, line in enumerate(data.decode().splitlines(), 1):
    if not line.strip():
      continue
    parts = line.split(None, ncols)
    if len(parts) != ncols + 1:
      raise ValueError(f"cub200_2011: {name}:{lineno}: expected {ncols + 1} fields, got {line!r}")
    out[int(parts[0])] = parts[1:]
  return out


class CubConfig(records.LayoutConfig):
  """``layout``: "official" or "wsol"; ``masks``: add the segmentation masks (official layout only)."""

  dataset = "cub200_2011"

  def __init__(self, *, masks: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.masks = masks


class Cub2002011(records.BuilderMixin, tfds.core.GeneratorBasedBuilder):
  """CUB-200-2011 with its box, optional masks, official or WSOL splits."""

  name = "cub200_2011"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
      CubConfig(name="boxes", description="official train/test split, boxes, no masks"),
      CubConfig(name="masks", masks=True, description="official train/test split, boxes and segmentation masks"),
      CubConfig(name="wsol", layout="wsol", description="WSOL evaluation splits: train, train_fullsup (CUBV2), test"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "boxes"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                 features=examples.features(with_mask=self.builder_config.masks),
                                 supervised_keys=("image", "label"))

  def _source(self, manual: str) -> Source | None:
    return Source.find(manual, "CUB_200_2011", ARCHIVE, prefix="CUB_200_2011")

  def _metadata_dir(self, manual: str) -> str | None:
    cfg = self.builder_config
    return wsol_metadata.find_metadata_dir(cfg.metadata_dir or os.path.join(manual, "metadata"), "CUB")

  def check_manual_dir(self, manual: str) -> None:
    """Fail with one line naming what is missing from ``manual``.

    An extracted ``CUB_200_2011/`` folder is checked for the files the build
    reads; an archive is only checked to exist (listing it means reading it).
    """
    self.require_manual_files(os.fspath(manual), self._missing_files, layout="CUB")

  def _missing_files(self, manual: str) -> list[str]:
    missing = []
    source = self._source(manual)
    if source is None:
      missing.append(f"{ARCHIVE} or CUB_200_2011/")
    elif source.is_dir:
      wsol = self.builder_config.layout == "wsol"
      needed = FOLDER_FILES[:1] if wsol else FOLDER_FILES
      missing += [f"CUB_200_2011/{name}" for name in needed if not os.path.exists(os.path.join(source.path, name))]
    if self.builder_config.masks and Source.find(manual, "segmentations", SEGMENTATIONS,
                                                 prefix="segmentations") is None:
      missing.append(f"{SEGMENTATIONS} or segmentations/ (or use config boxes)")
    if self.builder_config.layout == "wsol" and self._metadata_dir(manual) is None:
      missing.append("metadata/CUB/{train,val,test}/image_ids.txt")
    return missing

  def _split_generators(self, dl_manager):
    manual = os.fspath(dl_manager.manual_dir)
    self.check_manual_dir(manual)
    source = self._source(manual)
    texts = source.read_small(["classes.txt", "images.txt", "image_class_labels.txt", "bounding_boxes.txt",
                               "train_test_split.txt"])
    classes = _table(texts.get("classes.txt"), "classes.txt", 1)
    names = [classes[i][0] for i in sorted(classes)]
    self.info.features["label"].names = names
    if self.builder_config.layout == "wsol":
      meta = self._metadata_dir(manual)
      return {split: self._generate_wsol(split, os.path.join(meta, wsol_metadata.SPLIT_FOLDERS[split]), manual,
                                         source, len(names))
              for split in wsol_metadata.available_splits(meta)}

    paths = _table(texts.get("images.txt"), "images.txt", 1)
    labels = _table(texts.get("image_class_labels.txt"), "image_class_labels.txt", 1)
    boxes = _table(texts.get("bounding_boxes.txt"), "bounding_boxes.txt", 4)
    is_train = _table(texts.get("train_test_split.txt"), "train_test_split.txt", 1)
    masks = None
    if self.builder_config.masks:
      seg = Source.find(manual, "segmentations", SEGMENTATIONS, prefix="segmentations")
      masks = dict(seg.iter_files(suffixes=(".png",)))
    items = {}
    for image_id, (path,) in paths.items():
      split = "train" if is_train.get(image_id, ["0"])[0] == "1" else "test"
      items.setdefault(split, {})[path] = image_id
    meta = dict(labels=labels, boxes=boxes, masks=masks, num_classes=len(names))
    return {split: self._generate(split, source, items.get(split, {}), **meta) for split in ("train", "test")}

  def _generate_examples(self, **kwargs):
    """Unused: ``_split_generators`` returns one generator per split directly."""
    raise NotImplementedError

  def _generate(self, split, source, items, *, labels, boxes, masks, num_classes):
    seen = set()
    for rel, data in source.iter_files({f"images/{p}" for p in items}):
      path = rel[len("images/"):]
      seen.add(path)
      image_id = items[path]

      def make(data=data, path=path, image_id=image_id):
        if image_id not in labels:
          raise BadExample("bad_label", "no line in image_class_labels.txt")
        label = int(labels[image_id][0]) - 1
        box = []
        if image_id in boxes:
          x, y, w, h = (float(v) for v in boxes[image_id])
          box = [(x, y, x + w - 1, y + h - 1)]
        mask = None
        if masks is not None:
          mask = masks.get(os.path.splitext(path)[0] + ".png")
          if mask is None:
            raise BadExample("missing_file", f"no segmentation {os.path.splitext(path)[0]}.png")
        return records.checked_example(data, label, box, path, num_classes=num_classes, mask=mask)

      rec = self._emit(split, path, make)
      if rec is not None:
        yield path, rec
    for path in sorted(set(items) - seen):
      self._report_bad(split, path, BadExample("missing_file", f"listed in images.txt but not in {source.path}"))

  def _generate_wsol(self, split, split_dir, manual, source, num_classes):
    """Images found under the image root first (listed order), then the rest streamed from the archive."""
    root = self.builder_config.image_root or os.path.join(manual, "CUB")
    listed = wsol_metadata.read_split(split_dir)

    def emit(item, data):
      make = lambda: records.checked_example(data, item.label, item.boxes, item.id, num_classes=num_classes,
                                             declared_size=item.size)
      return self._emit(split, item.id, make)

    rest = {}
    for item in listed:
      path = os.path.join(root, item.id)
      if not os.path.isfile(path):
        rest[f"images/{item.id}"] = item
        continue
      with open(path, "rb") as f:
        rec = emit(item, f.read())
      if rec is not None:
        yield item.id, rec
    seen = set()
    for rel, data in (source.iter_files(set(rest)) if rest else ()):
      seen.add(rel)
      rec = emit(rest[rel], data)
      if rec is not None:
        yield rest[rel].id, rec
    for rel in sorted(set(rest) - seen):
      self._report_bad(split, rest[rel].id, BadExample("missing_file", f"not found under {root} nor in {source.path}"))
