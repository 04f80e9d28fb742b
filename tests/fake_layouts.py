"""Write small fake manual downloads in the official ILSVRC / CUB / WSOL-metadata layouts.

Each writer returns what a builder should read back, so tests can compare
labels, pixel boxes and masks. Images are real JPEGs written with PIL; archives
are real tar / tgz files.
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import Iterable

import numpy as np
from PIL import Image

WNIDS = ("n01440764", "n01443537", "n01484850")
WORDS = ("tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white shark")
CORRUPT = b"\xff\xd8\xff\xe0 this is not a jpeg at all"


def jpeg_bytes(width: int, height: int, seed: int) -> bytes:
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def voc_xml(folder: str, filename: str, width: int, height: int,
            objects: Iterable[tuple[str, tuple[int, int, int, int]]]) -> bytes:
  objs = "".join(
      f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
      f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{b[0]}</xmin>\n\t\t\t<ymin>{b[1]}</ymin>\n"
      f"\t\t\t<xmax>{b[2]}</xmax>\n\t\t\t<ymax>{b[3]}</ymax>\n\t\t</bndbox>\n\t</object>\n"
      for name, b in objects)
  return (f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{filename}</filename>\n"
          f"\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n"
          f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
          f"\t<segmented>0</segmented>\n{objs}</annotation>\n").encode()


def _tar(path: str, files: dict[str, bytes], mode: str = "w") -> None:
  with tarfile.open(path, mode) as tar:
    for name in sorted(files):
      info = tarfile.TarInfo(name)
      info.size = len(files[name])
      tar.addfile(info, io.BytesIO(files[name]))


def _tar_bytes(files: dict[str, bytes]) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w") as tar:
    for name in sorted(files):
      info = tarfile.TarInfo(name)
      info.size = len(files[name])
      tar.addfile(info, io.BytesIO(files[name]))
  return buf.getvalue()


def _write(root: str, files: dict[str, bytes]) -> None:
  for name, data in files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)


def make_ilsvrc(root: str, *, archives: bool = True, bad: Iterable[str] = ()) -> dict[str, dict]:
  """A 3-class ILSVRC manual folder; returns {split: {id: {"label", "boxes", "size"}}}.

  ``bad`` may hold "corrupt" (a corrupt training JPEG), "bad_box" (a validation box
  with x1 < x0) and "missing" (a validation XML whose image is absent); the bad
  examples are left out of the returned expectations.
  """
  bad = set(bad)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "LOC_synset_mapping.txt"), "w") as f:
    f.writelines(f"{w} {d}\n" for w, d in zip(WNIDS, WORDS))
  expect: dict[str, dict] = {"train": {}, "validation": {}}
  train_imgs: dict[str, dict[str, bytes]] = {}
  train_xml: dict[str, bytes] = {}
  for label, wnid in enumerate(WNIDS):
    for k in range(3):
      name = f"{wnid}_{100 + k}"
      w, h = 40 + 8 * k + label, 30 + 4 * k
      data = jpeg_bytes(w, h, seed=label * 10 + k)
      boxes: list[tuple[int, int, int, int]] = []
      if k != 2:  # every third training image has no box file
        boxes = [(2 + k, 3, w - 5, h - 4 - k)] + ([(0, 0, 9, 9)] if k == 1 else [])
        train_xml[f"{wnid}/{name}.xml"] = voc_xml(wnid, name, w, h, [(wnid, b) for b in boxes])
      if "corrupt" in bad and label == 1 and k == 0:
        data = CORRUPT
      else:
        expect["train"][f"train/{wnid}/{name}.JPEG"] = {"label": label, "boxes": boxes, "size": (w, h)}
      train_imgs.setdefault(wnid, {})[f"{name}.JPEG"] = data
  val_imgs: dict[str, bytes] = {}
  val_xml: dict[str, bytes] = {}
  for i in range(5):
    name = f"ILSVRC2012_val_{i + 1:08d}"
    label = i % len(WNIDS)
    w, h = 48 + i, 36 + 2 * i
    boxes = [(1, 2, w - 3 - i, h - 2)] + ([(5, 6, 20, 25)] if i == 0 else [])
    if "bad_box" in bad and i == 1:
      boxes = [(30, 2, 10, 20)]
    val_xml[f"val/{name}.xml"] = voc_xml("val", name, w, h, [(WNIDS[label], b) for b in boxes])
    if "missing" in bad and i == 2:
      continue
    val_imgs[f"{name}.JPEG"] = jpeg_bytes(w, h, seed=100 + i)
    if not ("bad_box" in bad and i == 1):
      expect["validation"][f"val/{name}.JPEG"] = {"label": label, "boxes": boxes, "size": (w, h)}
  if archives:
    _tar(os.path.join(root, "ILSVRC2012_img_train.tar"),
         {f"{wnid}.tar": _tar_bytes(files) for wnid, files in train_imgs.items()})
    _tar(os.path.join(root, "ILSVRC2012_img_val.tar"), val_imgs)
    _tar(os.path.join(root, "ILSVRC2012_bbox_train_v2.tar.gz"), train_xml, "w:gz")
    _tar(os.path.join(root, "ILSVRC2012_bbox_val_v3.tgz"), val_xml, "w:gz")
  else:
    _write(os.path.join(root, "train"),
           {f"{wnid}/{n}": d for wnid, files in train_imgs.items() for n, d in files.items()})
    _write(os.path.join(root, "val"), val_imgs)
    _write(os.path.join(root, "bbox_train"), train_xml)
    _write(os.path.join(root, "bbox_val"), {k[len("val/"):]: v for k, v in val_xml.items()})
  return expect


CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")


def cub_mask(width: int, height: int, box: tuple[float, float, float, float]) -> np.ndarray:
  """A soft segmentation like CUB's: 255 inside an ellipse in the box, 102 on a ring around it, 0 elsewhere."""
  x, y, bw, bh = box
  yy, xx = np.mgrid[0:height, 0:width] + 0.5
  r = ((xx - (x + bw / 2)) / (bw / 2)) ** 2 + ((yy - (y + bh / 2)) / (bh / 2)) ** 2
  return np.where(r <= 1.0, 255, np.where(r <= 1.3, 102, 0)).astype(np.uint8)


def make_cub(root: str, *, archives: bool = True, segmentations: bool = True,
             bad: Iterable[str] = ()) -> dict[str, dict]:
  """A 3-class CUB manual folder; returns {split: {id: {"label", "box" (x, y, w, h), "size", "mask"}}}.

  ``bad`` may hold "corrupt" (a corrupt training JPEG), "bad_box" (a test box of
  negative width) and "missing" (a test image listed in images.txt but absent).
  """
  bad = set(bad)
  files: dict[str, bytes] = {}
  segs: dict[str, bytes] = {}
  lines = {k: [] for k in ("images", "labels", "boxes", "split")}
  expect: dict[str, dict] = {"train": {}, "test": {}}
  image_id = 0
  for label, cls in enumerate(CUB_CLASSES):
    for k in range(3):
      image_id += 1
      name = f"{cls.split('.')[1]}_{k:04d}_{image_id}"
      path = f"{cls}/{name}.jpg"
      w, h = 50 + 6 * k, 40 + 3 * label
      box = (3.0 + k, 4.0, 30.0 + label, 25.5 - k)
      split = "train" if k < 2 else "test"
      if "bad_box" in bad and split == "test" and label == 0:
        box = (20.0, 4.0, -8.0, 10.0)
      data = jpeg_bytes(w, h, seed=500 + image_id)
      if "corrupt" in bad and split == "train" and label == 2 and k == 1:
        data = CORRUPT
      mask = cub_mask(w, h, box if box[2] > 0 else (3, 4, 10, 10))
      lines["images"].append(f"{image_id} {path}")
      lines["labels"].append(f"{image_id} {label + 1}")
      lines["boxes"].append(f"{image_id} {box[0]} {box[1]} {box[2]} {box[3]}")
      lines["split"].append(f"{image_id} {1 if split == 'train' else 0}")
      segs[f"segmentations/{cls}/{name}.png"] = png_bytes(mask)
      if "missing" in bad and split == "test" and label == 1:
        continue
      files[f"CUB_200_2011/images/{path}"] = data
      if data is not CORRUPT and box[2] > 0:
        expect[split][path] = {"label": label, "box": box, "size": (w, h), "mask": mask}
  files["CUB_200_2011/images.txt"] = ("\n".join(lines["images"]) + "\n").encode()
  files["CUB_200_2011/image_class_labels.txt"] = ("\n".join(lines["labels"]) + "\n").encode()
  files["CUB_200_2011/bounding_boxes.txt"] = ("\n".join(lines["boxes"]) + "\n").encode()
  files["CUB_200_2011/train_test_split.txt"] = ("\n".join(lines["split"]) + "\n").encode()
  files["CUB_200_2011/classes.txt"] = "".join(f"{i + 1} {c}\n" for i, c in enumerate(CUB_CLASSES)).encode()
  os.makedirs(root, exist_ok=True)
  if archives:
    _tar(os.path.join(root, "CUB_200_2011.tgz"), files, "w:gz")
    if segmentations:
      _tar(os.path.join(root, "segmentations.tgz"), segs, "w:gz")
  else:
    _write(root, files)
    if segmentations:
      _write(root, segs)
  return expect


def write_wsol_metadata(folder: str, items: Iterable[tuple[str, int, tuple[int, int],
                                                           list[tuple[float, float, float, float]]]]) -> None:
  """One WSOL-standard split folder from (id, label, (w, h), [(x0, y0, x1, y1), ...]) tuples."""
  items = list(items)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "image_ids.txt"), "w") as f:
    f.writelines(f"{i}\n" for i, _, _, _ in items)
  with open(os.path.join(folder, "class_labels.txt"), "w") as f:
    f.writelines(f"{i},{label}\n" for i, label, _, _ in items)
  with open(os.path.join(folder, "image_sizes.txt"), "w") as f:
    f.writelines(f"{i},{w},{h}\n" for i, _, (w, h), _ in items)
  with open(os.path.join(folder, "localization.txt"), "w") as f:
    f.writelines(f"{i},{b[0]},{b[1]},{b[2]},{b[3]}\n" for i, _, _, boxes in items for b in boxes)


def write_image(path: str, width: int, height: int, seed: int) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(jpeg_bytes(width, height, seed))



OPENIMAGES_CLASSES = ("0bt_c3", "0by6g")
OPENIMAGES_TEST_A = f"test/{OPENIMAGES_CLASSES[0]}/0a51958fcd523ae4.jpg"
OPENIMAGES_TEST_B = f"test/{OPENIMAGES_CLASSES[1]}/1cd9ac0169ec7df0.jpg"
OPENIMAGES_CORRUPT = f"train/{OPENIMAGES_CLASSES[1]}/10aa00000000000.jpg"


def rectangle(height: int, width: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
  """A bool (height, width) mask, True on the inclusive ``rows`` x ``cols`` rectangle."""
  a = np.zeros((height, width), bool)
  a[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
  return a


def make_openimages(root: str, *, bad: Iterable[str] = ()) -> dict[str, dict]:
  """A 2-class OpenImages30k manual folder in the standard's layout; returns {split: {id: {...}}}.

  Each expectation holds "label", "size" (w, h), "mask" and "ignore" (bool at the image size;
  empty on train). ``test`` has two 8x8 images: ``OPENIMAGES_TEST_A`` with two instances (the
  second listed with an empty ignore path, as the standard writes it) and an ignore region that
  overlaps the first; ``OPENIMAGES_TEST_B`` with one instance stored at 16x16 and an all-zero RGB
  ignore file (as the standard's). ``bad`` may hold "corrupt" (``OPENIMAGES_CORRUPT`` is not a
  JPEG) and "missing_mask" (test B's mask file is absent); bad examples are left out of the
  expectations.
  """
  bad = set(bad)
  folder = os.path.join(root, "OpenImages")  # images and masks, as the standard's zips extract
  expect: dict[str, dict] = {"train": {}, "train_fullsup": {}, "test": {}}
  lines = {s: {"image_ids.txt": [], "class_labels.txt": [], "localization.txt": []} for s in ("train", "val", "test")}

  def add(iid, label, size, seed, instances=(), ignore=None, stored=None):
    split = {"train": "train", "val": "train_fullsup", "test": "test"}[iid.split("/")[0]]
    w, h = size
    data = CORRUPT if "corrupt" in bad and iid == OPENIMAGES_CORRUPT else jpeg_bytes(w, h, seed)
    _write(folder, {iid: data})
    lines[iid.split("/")[0]]["image_ids.txt"].append(iid)
    lines[iid.split("/")[0]]["class_labels.txt"].append(f"{iid},{label}")
    stem = iid[:-len(".jpg")]
    missing = "missing_mask" in bad and iid == OPENIMAGES_TEST_B
    for k, instance in enumerate(instances):
      path = f"{stem}_m{OPENIMAGES_CLASSES[label]}_{k:08x}.png"
      if not missing:
        _write(folder, {path: png_bytes(np.where(instance if stored is None else stored[k], 255, 0))})
      lines[iid.split("/")[0]]["localization.txt"].append(f"{iid},{path},{stem + '_ignore.png' if k == 0 else ''}")
    if instances:
      _write(folder, {f"{stem}_ignore.png": png_bytes(np.repeat(np.where(ignore, 255, 0)[..., None], 3, axis=2))})
    if data is not CORRUPT and not missing:
      none = np.zeros((h, w), bool)
      expect[split][iid] = {"label": label, "size": size, "mask": np.any(instances, axis=0) if instances else none,
                            "ignore": none if ignore is None else ignore}

  for label, cls in enumerate(OPENIMAGES_CLASSES):
    for k in range(2):
      add(f"train/{cls}/{label}{k}aa00000000000.jpg", label, (12 + 2 * k, 9 + label), 700 + 10 * label + k)
    add(f"val/{cls}/{label}bb00000000000.jpg", label, (10, 10), 720 + label,
        instances=[rectangle(10, 10, (2, 6), (3, 7 - label))], ignore=rectangle(10, 10, (0, 1), (0, 9)))
  add(OPENIMAGES_TEST_A, 0, (8, 8), 730, instances=[rectangle(8, 8, (1, 3), (1, 3)), rectangle(8, 8, (5, 6), (4, 6))],
      ignore=rectangle(8, 8, (0, 2), (2, 7)))
  add(OPENIMAGES_TEST_B, 1, (8, 8), 731, instances=[rectangle(8, 8, (2, 5), (2, 5))], ignore=np.zeros((8, 8), bool),
      stored=[rectangle(16, 16, (4, 11), (4, 11))])
  for split, files in lines.items():
    split_dir = os.path.join(root, "metadata", "OpenImages", split)
    os.makedirs(split_dir, exist_ok=True)
    for name, text in [*files.items(), ("image_sizes.txt", [])]:  # image_sizes.txt ships empty
      with open(os.path.join(split_dir, name), "w") as f:
        f.writelines(f"{line}\n" for line in text)
  return expect
