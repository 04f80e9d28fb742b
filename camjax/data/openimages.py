"""``openimages30k``: OpenImages30k of the WSOL evaluation standard (Choe et al., CVPR 2020), from the user's download.

100 classes of OpenImages V5, curated by the standard with pixel masks instead of
boxes. Its splits (``metadata/OpenImages/{train,val,test}``) become camjax's
``train``, ``train_fullsup`` (the standard's ``val``) and ``test``.

Records follow ``camjax.data.examples`` with no boxes, plus two masks at the
image's original size, both uint8 (H, W, 1) with values 0 or 255:

- ``mask``: the union of the image's instance masks (``localization.txt`` lists
  ``id,mask_path,ignore_path`` per instance);
- ``ignore``: the standard's ignore region as listed (boxes of groups of objects
  whose pixels are not annotated). PxAP leaves out its pixels outside the
  foreground (``camjax.localization.PxapAccumulator``).

``train`` has no pixel annotation: its masks are empty, as one TFDS config stores
the same features in every split. A mask pixel is foreground when its grey value
is above 0, as the standard thresholds the 0..255 mask at 0.5. A mask stored at
another size than its image (same aspect ratio) is resized to it by nearest
neighbour; one of another aspect ratio is bad data.

The evaluation pipeline batches one mask per record; ``IgnoreRegions`` reads the
ignore regions of the same records by index, through the same geometry.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from camjax.data import examples, records, subsample, transforms, wsol_metadata
from camjax.data.bad_data import BadExample
from camjax.localization import metadata

NAME = "openimages30k"
IGNORE = "ignore"  # the record key of the ignore region
METADATA = "OpenImages"  # the standard's metadata/<name> folder and image folder
_ASPECT_TOLERANCE = 0.02  # relative difference of mask and image aspect ratios still taken as the same picture

_INSTRUCTIONS = """\
Put in the manual folder (default <data_dir>/downloads/manual), as the WSOL evaluation standard's
OpenImages_images.zip and OpenImages_annotations.zip extract:
  OpenImages/{train,val,test}/<class>/<id>.jpg                  images (the image root)
  OpenImages/{val,test}/<class>/<id>_m<class>_<hash>.png        instance masks (the mask root, default the image root)
  OpenImages/{val,test}/<class>/<id>_ignore.png                 ignore regions
  metadata/OpenImages/{train,val,test}/                         image_ids.txt, class_labels.txt, localization.txt
"""


class OpenImagesConfig(records.LayoutConfig):
  """The standard's layout; ``metadata_dir``, ``image_root`` and ``mask_root`` default to the manual folder's."""

  dataset = NAME

  def __init__(self, *, mask_root: str | None = None, **kwargs):
    super().__init__(layout="wsol", **kwargs)
    self.mask_root = mask_root


def _features() -> tfds.features.FeaturesDict:
  spec = dict(examples.features(with_mask=True).items())
  spec[IGNORE] = tfds.features.Image(shape=(None, None, 1), dtype=np.uint8, encoding_format="png")
  return tfds.features.FeaturesDict(spec)


def _class_names(splits: list[metadata.Split]) -> list[str]:
  """Class names from the image paths (``<split>/<class>/<id>.jpg``): the folder of each label's first image."""
  folders: dict[int, str] = {}
  for split in splits:
    for item in split.items:
      parts = item.id.split("/")
      if item.label is not None and item.label >= 0 and len(parts) >= 3:
        folders.setdefault(item.label, parts[-2])
  count = max(folders, default=-1) + 1
  return [folders.get(label, f"class_{label}") for label in range(count)]


def _read_mask(root: str, relative: str, height: int, width: int) -> np.ndarray:
  """Foreground (grey value > 0) of one mask file, at the image's size; ``BadExample`` if it cannot be."""
  path = os.path.join(root, relative)
  if not os.path.isfile(path):
    raise BadExample("missing_file", f"no mask file {path}")
  try:
    with Image.open(path) as img:
      grey = np.asarray(img.convert("L"))
  except Exception as e:  # PIL raises many types for broken files
    raise BadExample("corrupt_mask", f"cannot decode mask {relative} ({type(e).__name__}: {e})") from None
  if grey.shape != (height, width):
    mask_h, mask_w = grey.shape
    if abs(mask_w * height - width * mask_h) > _ASPECT_TOLERANCE * width * mask_h:
      raise BadExample("corrupt_mask", f"mask {relative} is {mask_w}x{mask_h}, the image {width}x{height}: "
                       "not the same aspect ratio")
    grey = np.asarray(Image.fromarray(grey).resize((width, height), Image.NEAREST))
  return grey > 0


def _png(mask: np.ndarray) -> bytes:
  return records.encode_png(np.where(mask, 255, 0).astype(np.uint8))


class OpenImages30k(records.BuilderMixin, tfds.core.GeneratorBasedBuilder):
  """OpenImages30k with its foreground masks and ignore regions, in the standard's splits."""

  name = NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [OpenImagesConfig(name="wsol", description="WSOL evaluation splits: train, train_fullsup, test")]
  DEFAULT_BUILDER_CONFIG_NAME = "wsol"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=__doc__, features=_features(),
                                 supervised_keys=("image", "label"))

  def _roots(self, manual: str) -> tuple[str | None, str, str]:
    """(metadata folder or None, image root, mask root)."""
    cfg = self.builder_config
    meta = wsol_metadata.find_metadata_dir(cfg.metadata_dir or os.path.join(manual, "metadata"), METADATA)
    images = cfg.image_root or os.path.join(manual, METADATA)
    return meta, images, cfg.mask_root or images

  def check_manual_dir(self, manual: str) -> None:
    """Fail with one line naming what is missing from ``manual``."""
    self.require_manual_files(os.fspath(manual), self._missing_files, layout="OpenImages")

  def _missing_files(self, manual: str) -> list[str]:
    meta, images, masks = self._roots(manual)
    missing = []
    if meta is None:
      missing.append(f"metadata/{METADATA}/{{train,val,test}}/image_ids.txt")
    if not os.path.isdir(images):
      missing.append(f"{images}/ (images as {{train,val,test}}/<class>/<id>.jpg)")
    elif masks != images and not os.path.isdir(masks):
      missing.append(f"{masks}/ (the mask root)")
    return missing

  def _split_generators(self, dl_manager):
    manual = os.fspath(dl_manager.manual_dir)
    self.check_manual_dir(manual)
    meta, images, masks = self._roots(manual)
    splits = {name: metadata.read(os.path.join(meta, wsol_metadata.SPLIT_FOLDERS[name]))
              for name in wsol_metadata.available_splits(meta)}
    names = _class_names(list(splits.values()))
    self.info.features["label"].names = names
    return {name: self._generate(name, split, images, masks, len(names)) for name, split in splits.items()}

  def _generate_examples(self, **kwargs):
    """Unused: ``_split_generators`` returns one generator per split directly."""
    raise NotImplementedError

  def _generate(self, split: str, listed: metadata.Split, image_root: str, mask_root: str, num_classes: int):
    annotated = listed.kind == metadata.MASKS
    for item in listed.items:
      rec = self._emit(split, item.id, lambda item=item: self._record(item, image_root, mask_root, num_classes,
                                                                      annotated))
      if rec is not None:
        yield item.id, rec

  @staticmethod
  def _record(item: metadata.Item, image_root: str, mask_root: str, num_classes: int,
              annotated: bool) -> dict[str, Any]:
    path = os.path.join(image_root, item.id)
    if not os.path.isfile(path):
      raise BadExample("missing_file", f"no image file {path}")
    with open(path, "rb") as f:
      image, height, width = records.check_image(f.read())
    if item.label is None or not 0 <= item.label < num_classes:
      raise BadExample("bad_label", f"label {item.label!r} not in [0, {num_classes}) (class_labels.txt)")
    if annotated and not item.masks:
      raise BadExample("bad_mask", "no mask listed in localization.txt")
    foreground = np.zeros((height, width), bool)
    for relative in item.masks:
      foreground |= _read_mask(mask_root, relative, height, width)
    ignore = _read_mask(mask_root, item.ignore, height, width) if item.ignore else np.zeros_like(foreground)
    rec = examples.stored_record(image, item.label, [], height, width, item.id, mask=_png(foreground))
    rec[IGNORE] = _png(ignore)
    return rec


class IgnoreRegions:
  """The ignore regions of a split's records, by index, at the geometry of the evaluation batches.

  The eval pipeline batches each record's foreground ``mask``; this reads the
  same records' ``ignore`` (decoding nothing else) and moves it through the same
  transform (``mode`` "resize" or "resize_crop" to ``image_size``), so the two
  stay pixel-aligned. Call with the batch's ``index`` values: bool (n, S, S).
  """

  def __init__(self, source: Any, *, image_size: int, mode: str = "resize"):
    if mode not in ("resize", "resize_crop"):
      raise ValueError(f"mode must be 'resize' or 'resize_crop', got {mode!r}")
    self.source = source
    self.image_size = int(image_size)
    self.mode = mode

  @classmethod
  def for_eval(cls, config: Any) -> "IgnoreRegions | None":
    """The eval split's ignore regions, or None when the config's data set has none."""
    from camjax import data

    dataset = data.prepare_from_config(config)
    info = getattr(dataset, "info", None)
    if info is None or IGNORE not in info.features:
      return None
    source = subsample.partly_decoded(dataset, config.data.eval_split, decode=(IGNORE,))
    return cls(source, image_size=config.data.image_size, mode=config.data.eval_mode)

  def __call__(self, indices: Any) -> np.ndarray:
    out = np.zeros((len(indices), self.image_size, self.image_size), bool)
    for row, index in enumerate(np.asarray(indices).reshape(-1)):
      ignore = np.ascontiguousarray(np.asarray(self.source[int(index)][IGNORE])[..., 0])
      out[row] = self._transform(ignore) > 127
    return out

  def _transform(self, ignore: np.ndarray) -> np.ndarray:
    # The transforms resample an image beside the mask; the ignore region stands in for it (only the
    # nearest-neighbour mask is kept), so no pixel is decoded that is not needed.
    ex = transforms.Example(ignore, np.zeros((0, 4), np.int64), ignore)
    if self.mode == "resize":
      return transforms.resize(ex, self.image_size).mask
    return transforms.resize_center_crop(ex, self.image_size).mask
