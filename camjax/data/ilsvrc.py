"""``ilsvrc2012_loc``: ImageNet (ILSVRC 2012) localization from the user's manual download.

Config ``official`` (default) reads the official files; config ``wsol`` reads the
split lists of the WSOL evaluation standard. Records follow
``camjax.data.records``; label names are WordNet ids in the order of the synset
list (the devkit's ``LOC_synset_mapping.txt``), the original JPEG bytes are
stored unchanged, ids are paths relative to the data set root
(``train/n01440764/n01440764_10026.JPEG``, ``val/ILSVRC2012_val_00000001.JPEG``).

Box coordinates of the XML files are taken as inclusive pixel coordinates, as
the WSOL evaluation metadata takes them, and normalized by the image size the
XML states; a box may touch ``x = width`` (1-based files) and is clipped.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any

import tensorflow_datasets as tfds

from camjax.data import examples, records, wsol_metadata
from camjax.data.archives import Source
from camjax.data.bad_data import BadExample

SYNSET_FILES = ("LOC_synset_mapping.txt", "synsets.txt")
IMAGE_SUFFIXES = (".JPEG", ".jpeg", ".jpg", ".JPG")

_INSTRUCTIONS = """\
Put in the manual folder (default <data_dir>/downloads/manual):
  LOC_synset_mapping.txt           one class a line, "n01440764 tench, Tinca tinca"; line order = label order
  ILSVRC2012_img_train.tar         (tar of per-synset tars) or train/<wnid>/*.JPEG
  ILSVRC2012_img_val.tar           or val/*.JPEG
  ILSVRC2012_bbox_train_v2.tar.gz  or bbox_train/**/*.xml  (optional: training images without a file get no boxes)
  ILSVRC2012_bbox_val_v3.tgz       or bbox_val/**/*.xml    (gives the validation labels and boxes)
Config wsol also needs metadata/ILSVRC/{train,val,test}/ (WSOL evaluation metadata) and the images
they list under ILSVRC/<id> or <id> (train/, val/, and ImageNetV2 as val2/), extracted.
"""


def read_synsets(path: str) -> tuple[list[str], list[str]]:
  """(wnids, descriptions) from ``n01440764 tench, Tinca tinca`` lines (a bare wnid per line also works)."""
  wnids, words = [], []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      wnid, _, desc = line.partition(" ")
      if not (wnid.startswith("n") and wnid[1:].isdigit()):
        raise ValueError(f"{path}:{lineno}: expected '<wnid> <description>', got {line!r}")
      wnids.append(wnid)
      words.append(desc.strip())
  if len(set(wnids)) != len(wnids):
    raise ValueError(f"{path}: a WordNet id is listed twice")
  return wnids, words


def parse_xml(data: bytes) -> tuple[tuple[int, int] | None, list[tuple[str, tuple[float, float, float, float]]]]:
  """PASCAL-VOC style annotation -> ((width, height) or None, [(wnid, (x0, y0, x1, y1)), ...])."""
  root = ET.fromstring(data)
  size = None
  w, h = root.findtext("size/width"), root.findtext("size/height")
  if w and h:
    size = (int(float(w)), int(float(h)))
  objects = []
  for obj in root.iter("object"):
    bb = obj.find("bndbox")
    if bb is None:
      continue
    box = tuple(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    objects.append(((obj.findtext("name") or "").strip(), box))
  return size, objects


def _stem(name: str) -> str:
  return os.path.splitext(os.path.basename(name))[0]


def _read_annotations(source: Source | None) -> dict[str, Any]:
  """Image stem -> parsed XML (or the BadExample its parse raised)."""
  out: dict[str, Any] = {}
  if source is None:
    return out
  for rel, data in source.iter_files(suffixes=(".xml",), nested=True):
    try:
      out[_stem(rel)] = parse_xml(data)
    except (ET.ParseError, TypeError, ValueError) as e:
      out[_stem(rel)] = BadExample("bad_annotation", f"{rel}: {e}")
  return out


class IlsvrcConfig(records.LayoutConfig):
  """``layout``: "official" (train, validation) or "wsol" (train, train_fullsup, test from WSOL metadata).

  For "wsol", ``metadata_dir`` and ``image_root`` default to ``<manual>/metadata``
  and ``<manual>/ILSVRC`` then ``<manual>``; a config with other paths needs its own name.
  """

  dataset = "ilsvrc2012_loc"


class Ilsvrc2012Loc(records.BuilderMixin, tfds.core.GeneratorBasedBuilder):
  """ILSVRC 2012 images with every ground-truth box, from the manual download."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
      IlsvrcConfig(name="official", layout="official", description="official train (boxes where given) and validation"),
      IlsvrcConfig(name="wsol", layout="wsol",
                   description="WSOL evaluation splits: train, train_fullsup (ImageNetV2), test"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "official"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=__doc__, features=examples.features(with_mask=False),
                                 supervised_keys=("image", "label"))

  # ---------------------------------------------------------------- manual files

  def _synset_file(self, manual: str) -> str | None:
    for name in SYNSET_FILES:
      if os.path.isfile(os.path.join(manual, name)):
        return os.path.join(manual, name)
    return None

  def _metadata_dir(self, manual: str) -> str | None:
    cfg = self.builder_config
    return wsol_metadata.find_metadata_dir(cfg.metadata_dir or os.path.join(manual, "metadata"), "ILSVRC")

  def _image_roots(self, manual: str) -> list[str]:
    cfg = self.builder_config
    return [cfg.image_root] if cfg.image_root else [os.path.join(manual, "ILSVRC"), manual]

  def check_manual_dir(self, manual: str) -> None:
    """Fail with one line naming what is missing from ``manual``."""
    self.require_manual_files(os.fspath(manual), self._missing_files, layout="ImageNet")

  def _missing_files(self, manual: str) -> list[str]:
    missing = []
    if self._synset_file(manual) is None:
      missing.append("LOC_synset_mapping.txt")
    if self.builder_config.layout == "official":
      if Source.find(manual, "train", "ILSVRC2012_img_train.tar") is None:
        missing.append("ILSVRC2012_img_train.tar or train/")
      if Source.find(manual, "val", "ILSVRC2012_img_val.tar") is None:
        missing.append("ILSVRC2012_img_val.tar or val/")
      if Source.find(manual, "bbox_val", "ILSVRC2012_bbox_val_v3.tgz") is None:
        missing.append("ILSVRC2012_bbox_val_v3.tgz or bbox_val/")
    elif self._metadata_dir(manual) is None:
      missing.append("metadata/ILSVRC/{train,val,test}/image_ids.txt")
    return missing

  def _split_generators(self, dl_manager):
    manual = os.fspath(dl_manager.manual_dir)
    self.check_manual_dir(manual)
    wnids, _ = read_synsets(self._synset_file(manual))
    self.info.features["label"].names = wnids
    index = {w: i for i, w in enumerate(wnids)}
    if self.builder_config.layout == "wsol":
      meta = self._metadata_dir(manual)
      return {split: self._generate_wsol(split, os.path.join(meta, wsol_metadata.SPLIT_FOLDERS[split]), manual,
                                         len(wnids))
              for split in wsol_metadata.available_splits(meta)}
    return {
        "train": self._generate_train(manual, index),
        "validation": self._generate_val(manual, index),
    }

  # ---------------------------------------------------------------- generators

  def _generate_examples(self, **kwargs):
    """Unused: ``_split_generators`` returns one generator per split directly."""
    raise NotImplementedError

  def _boxes(self, ann: Any) -> tuple[tuple[int, int] | None, list]:
    if ann is None:
      return None, []
    if isinstance(ann, BadExample):
      raise ann
    size, objects = ann
    return size, [box for _, box in objects]

  def _generate_train(self, manual: str, index: dict[str, int]):
    annotations = _read_annotations(Source.find(manual, "bbox_train", "ILSVRC2012_bbox_train_v2.tar.gz"))
    source = Source.find(manual, "train", "ILSVRC2012_img_train.tar")
    for rel, data in source.iter_files(suffixes=IMAGE_SUFFIXES, nested=True):
      if not rel.endswith(IMAGE_SUFFIXES):
        continue
      wnid = rel.split("/")[0]
      example_id = f"train/{rel}"

      def make(data=data, wnid=wnid, rel=rel, example_id=example_id):
        if wnid not in index:
          raise BadExample("bad_label", f"synset {wnid!r} is not in the synset list")
        size, boxes = self._boxes(annotations.get(_stem(rel)))
        return records.checked_example(data, index[wnid], boxes, example_id, num_classes=len(index), declared_size=size)

      rec = self._emit("train", example_id, make)
      if rec is not None:
        yield example_id, rec

  def _generate_val(self, manual: str, index: dict[str, int]):
    annotations = _read_annotations(Source.find(manual, "bbox_val", "ILSVRC2012_bbox_val_v3.tgz"))
    source = Source.find(manual, "val", "ILSVRC2012_img_val.tar")
    wanted = {f"{stem}.JPEG": stem for stem in annotations}
    seen = set()
    for rel, data in source.iter_files(set(wanted)):
      seen.add(rel)
      example_id = f"val/{rel}"

      def make(data=data, rel=rel, example_id=example_id):
        ann = annotations[wanted[rel]]
        size, boxes = self._boxes(ann)
        names = {name for name, _ in ann[1]}
        if len(names) != 1:
          raise BadExample("bad_label", f"annotation names {sorted(names)}: need exactly one class")
        wnid = names.pop()
        if wnid not in index:
          raise BadExample("bad_label", f"synset {wnid!r} is not in the synset list")
        return records.checked_example(data, index[wnid], boxes, example_id, num_classes=len(index), declared_size=size)

      rec = self._emit("validation", example_id, make)
      if rec is not None:
        yield example_id, rec
    for rel in sorted(set(wanted) - seen):
      self._report_bad("validation", f"val/{rel}",
                       BadExample("missing_file", f"annotated but not found in {source.path}"))

  def _generate_wsol(self, split: str, split_dir: str, manual: str, num_classes: int):
    roots = self._image_roots(manual)
    for item in wsol_metadata.read_split(split_dir):

      def make(item=item):
        for root in roots:
          path = os.path.join(root, item.id)
          if os.path.isfile(path):
            with open(path, "rb") as f:
              data = f.read()
            break
        else:
          raise BadExample("missing_file", f"not found under {' or '.join(roots)}")
        return records.checked_example(data, item.label, item.boxes, item.id, num_classes=num_classes,
                                       declared_size=item.size)

      rec = self._emit(split, item.id, make)
      if rec is not None:
        yield item.id, rec
