"""Pattern discovery with localizable deep features (Zhou et al. 2016, Sec. 4.2).

A linear SVM on GAP features separates a folder of positive images from a
folder of negatives; it then ranks a folder of images by detector score, and
its weights, used as a CAM kernel, show where in each top-ranked image the
pattern is.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

import numpy as np
from flax import nnx
from PIL import Image

from camjax import cam, viz
from camjax.features.extraction import array_batches, extract_features, model_pooling
from camjax.features.linear import LinearHeadModel, select_and_fit

log = logging.getLogger("camjax.features")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
RANKING_FILE = "ranking.json"


def list_images(folder: str) -> list[str]:
  """Image files directly inside ``folder``, sorted by name."""
  if not os.path.isdir(folder):
    raise ValueError(f"image folder {folder!r} does not exist; pass an existing directory")
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
  return [os.path.join(folder, n) for n in names]


def load_images(paths: Sequence[str], image_size: int, mean, std) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
  """(normalized float32 (N, S, S, 3), uint8 (N, S, S, 3), kept paths, unreadable paths).

  Each image is resized straight to S x S (the evaluation 'resize' mode).
  """
  from camjax.data import transforms as T

  floats, raw, kept, bad = [], [], [], []
  for path in paths:
    try:
      with Image.open(path) as im:
        image = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported and skipped
      log.warning("skipping unreadable image %s (%s)", path, e)
      bad.append(path)
      continue
    ex = T.resize(T.Example(image, np.zeros((0, 4), np.int64)), int(image_size))
    raw.append(ex.image)
    floats.append(T.normalize(ex.image, mean, std))
    kept.append(path)
  size = int(image_size)
  if not kept:
    return np.zeros((0, size, size, 3), np.float32), np.zeros((0, size, size, 3), np.uint8), kept, bad
  return np.stack(floats), np.stack(raw), kept, bad


def _features(model, images, batch_size):
  labels = np.zeros((images.shape[0],), np.int64)
  return extract_features(model, array_batches(images, labels, batch_size), keep_logits=False).features


def discover(
    model: nnx.Module,
    *,
    positives: str,
    negatives: str,
    output: str,
    rank: str | None = None,
    image_size: int,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    top: int = 10,
    C_grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    threshold: float = 0.2,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
  """Train the detector, rank, write CAMs of the ``top`` images and ``ranking.json`` to ``output``."""
  from camjax.features.finegrained import box_from_cam

  pos_x, _, pos_paths, pos_bad = load_images(list_images(positives), image_size, mean, std)
  neg_x, _, neg_paths, neg_bad = load_images(list_images(negatives), image_size, mean, std)
  if len(pos_paths) < 1 or len(neg_paths) < 1:
    raise ValueError(f"need at least one readable positive and one negative image, got {len(pos_paths)} in "
                     f"{positives} and {len(neg_paths)} in {negatives}")
  pooling = model_pooling(model)
  x = np.concatenate([_features(model, pos_x, batch_size), _features(model, neg_x, batch_size)])
  y = np.concatenate([np.ones(len(pos_paths), np.int64), np.zeros(len(neg_paths), np.int64)])
  enough = min(len(pos_paths), len(neg_paths)) >= 5
  sel = select_and_fit(x, y, num_classes=2, loss="svm", grid=tuple(C_grid) if enough else (1.0,), seed=seed)
  clf = sel.classifier
  # The "positive" column of the one-vs-rest SVM is the detector.
  kernel, bias = clf.kernel[:, 1:2], clf.bias[1:2]

  if rank:
    rank_x, rank_raw, rank_paths, rank_bad = load_images(list_images(rank), image_size, mean, std)
    truth = [None] * len(rank_paths)
  else:
    rank_paths = pos_paths + neg_paths
    rank_x, rank_raw, _, _ = load_images(rank_paths, image_size, mean, std)
    truth = [True] * len(pos_paths) + [False] * len(neg_paths)
    rank_bad = []
  scores = (_features(model, rank_x, batch_size) @ kernel + bias)[:, 0] if len(rank_paths) else np.zeros(0)
  order = np.argsort(-scores, kind="stable")

  os.makedirs(output, exist_ok=True)
  head = LinearHeadModel(model, kernel, bias, pooling=pooling)
  top_rows = order[: max(0, int(top))]
  ranking = []
  pictures = []
  maps = None
  if top_rows.size:
    out = cam.class_activation_maps(head, rank_x[top_rows], class_ids=np.zeros(top_rows.size, np.int32),
                                    upsample=True)
    maps = np.asarray(out.upsampled)[:, 0]
  for position, row in enumerate(order):
    entry = {"rank": position + 1, "file": os.path.abspath(rank_paths[row]), "score": float(scores[row])}
    if truth[row] is not None:
      entry["positive"] = bool(truth[row])
    if maps is not None and position < top_rows.size:
      stem = f"{position + 1:04d}_{os.path.splitext(os.path.basename(rank_paths[row]))[0]}"
      box = box_from_cam(maps[position], threshold)
      np.save(os.path.join(output, stem + "_cam.npy"), maps[position].astype(np.float32))
      picture = viz.draw_boxes(viz.overlay(rank_raw[row], maps[position]), box[None], width=1)
      viz.save_png(picture, os.path.join(output, stem + "_cam.png"))
      pictures.append(picture)
      entry.update(cam=stem + "_cam.npy", overlay=stem + "_cam.png", box=[int(v) for v in box])
    ranking.append(entry)
  result = {
      "detector": {"loss": "svm", "C": sel.best_C, "C_selected_on": sel.val_source,
                   "train_accuracy": clf.accuracy(x, y), "num_positives": len(pos_paths),
                   "num_negatives": len(neg_paths), "pooling": pooling},
      "unreadable": pos_bad + neg_bad + rank_bad,
      "ranked_folder": os.path.abspath(rank) if rank else "positives + negatives",
      "ranking": ranking,
  }
  if truth and truth[0] is not None and ranking:
    k = min(len(pos_paths), len(ranking))
    result["precision_at_num_positives"] = float(np.mean([r["positive"] for r in ranking[:k]]))
  if pictures:
    captions = [f"#{r['rank']} {r['score']:.2f}" for r in ranking[:len(pictures)]]
    viz.save_png(viz.image_grid(pictures, captions=captions), os.path.join(output, "top_cams.png"))
    result["figure"] = "top_cams.png"
  np.savez(os.path.join(output, "detector.npz"), kernel=kernel.astype(np.float32), bias=bias.astype(np.float32))
  with open(os.path.join(output, RANKING_FILE), "w") as fh:
    json.dump(result, fh, indent=2)
  return result
