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

from camjax import cam
from camjax.report import figures as viz
from camjax.errors import UserError
from camjax.features.extraction import extract_features, model_pooling
from camjax.features.linear import LinearHeadModel, select_and_fit

log = logging.getLogger("camjax.features")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
RANKING_FILE = "ranking.json"


def list_images(folder: str, flag: str = "image folder") -> list[str]:
  """Image files directly inside ``folder``, sorted by name; ``flag`` names the folder in the error."""
  if not os.path.isdir(folder):
    raise UserError(f"{flag}={folder} is not a directory; pass an existing folder of images")
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
  return [os.path.join(folder, n) for n in names]


class FolderSource:
  """Image files as records ``{"image", "label", "bboxes", "id"}`` for the evaluation pipeline.

  Going through ``camjax.data.pipeline.eval_batches`` gives folder images
  exactly the resizing and normalization the backbone saw in evaluation.
  An unreadable file raises, so the pipeline counts it and skips it.
  """

  def __init__(self, paths: Sequence[str], label: int = 0):
    self.paths = list(paths)
    self.label = int(label)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict[str, Any]:
    with Image.open(self.paths[index]) as im:
      image = np.asarray(im.convert("RGB"))
    return {"image": image, "label": self.label, "bboxes": np.zeros((0, 4), np.float32),
            "id": os.path.basename(self.paths[index])}


def resized_uint8(path: str, image_size: int) -> np.ndarray:
  """The image as the evaluation 'resize' mode shows it, for pictures."""
  from camjax.data import transforms as T

  with Image.open(path) as im:
    image = np.asarray(im.convert("RGB"))
  return T.resize(T.Example(image, np.zeros((0, 4), np.int64)), int(image_size)).image


def _detector_maps(head: nnx.Module, batches) -> dict[int, np.ndarray]:
  """Upsampled CAM of the detector (class 0 of ``head``) per example index."""
  from camjax.train import sharding
  from camjax.features.extraction import default_mesh, device_batches, replicate_model

  mesh = default_mesh()
  replicate_model(head, mesh)
  maps = {}
  for on_device, host in device_batches(batches, mesh):
    images = on_device["image"]
    out = cam.class_activation_maps(head, images, class_ids=np.zeros(images.shape[0], np.int32), upsample=True)
    up = sharding.to_host(out.upsampled)
    for r in np.flatnonzero(np.asarray(host["valid"]).astype(bool)):
      maps[int(host["index"][r])] = up[r, 0]
  return maps


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
    eval_mode: str = "resize",
    top: int = 10,
    C_grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    threshold: float = 0.2,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
  """Train the detector, rank, write CAMs of the ``top`` images and ``ranking.json`` to ``output``.

  ``image_size``, ``mean``, ``std`` and ``eval_mode`` are the backbone's
  evaluation preprocessing (its config's data section).
  """
  from camjax.data import pipeline
  from camjax.features.finegrained import box_from_cam

  def batches(source):
    return pipeline.eval_batches(source, global_batch_size=int(batch_size), image_size=int(image_size),
                                 mode=eval_mode, mean=tuple(mean), std=tuple(std), max_boxes=1, on_bad_data="skip")

  def features(paths):
    fs = extract_features(model, batches(FolderSource(paths)), keep_logits=False)
    return fs.features, [paths[i] for i in fs.indices]

  pos_x, pos_paths = features(list_images(positives))
  neg_x, neg_paths = features(list_images(negatives))
  unreadable = (sorted(set(list_images(positives)) - set(pos_paths))
                + sorted(set(list_images(negatives)) - set(neg_paths)))
  if len(pos_paths) < 1 or len(neg_paths) < 1:
    raise UserError(f"need at least one readable positive and one negative image, got {len(pos_paths)} in "
                     f"{positives} and {len(neg_paths)} in {negatives}")
  pooling = model_pooling(model)
  x = np.concatenate([pos_x, neg_x])
  y = np.concatenate([np.ones(len(pos_paths), np.int64), np.zeros(len(neg_paths), np.int64)])
  enough = min(len(pos_paths), len(neg_paths)) >= 5
  sel = select_and_fit(x, y, num_classes=2, loss="svm", grid=tuple(C_grid) if enough else (1.0,), seed=seed)
  clf = sel.classifier
  # The "positive" column of the one-vs-rest SVM is the detector.
  kernel, bias = clf.kernel[:, 1:2], clf.bias[1:2]

  if rank:
    rank_x, rank_paths = features(list_images(rank))
    unreadable += sorted(set(list_images(rank)) - set(rank_paths))
    truth = [None] * len(rank_paths)
  else:
    rank_x, rank_paths = x, pos_paths + neg_paths
    truth = [True] * len(pos_paths) + [False] * len(neg_paths)
  scores = (rank_x @ kernel + bias)[:, 0]
  order = np.argsort(-scores, kind="stable")

  os.makedirs(output, exist_ok=True)
  head = LinearHeadModel(model, kernel, bias, pooling=pooling)
  top_rows = order[: max(0, int(top))]
  maps = _detector_maps(head, batches(FolderSource([rank_paths[r] for r in top_rows]))) if top_rows.size else {}
  ranking = []
  pictures = []
  for position, row in enumerate(order):
    entry = {"rank": position + 1, "file": os.path.abspath(rank_paths[row]), "score": float(scores[row])}
    if truth[row] is not None:
      entry["positive"] = bool(truth[row])
    if position in maps:
      stem = f"{position + 1:04d}_{os.path.splitext(os.path.basename(rank_paths[row]))[0]}"
      box = box_from_cam(maps[position], threshold)
      np.save(os.path.join(output, stem + "_cam.npy"), maps[position].astype(np.float32))
      picture = viz.draw_boxes(viz.overlay(resized_uint8(rank_paths[row], image_size), maps[position]),
                               box[None], width=1)
      viz.save_png(picture, os.path.join(output, stem + "_cam.png"))
      pictures.append(picture)
      entry.update(cam=stem + "_cam.npy", overlay=stem + "_cam.png", box=[int(v) for v in box])
    ranking.append(entry)
  result = {
      "detector": {"loss": "svm", "C": sel.best_C, "C_selected_on": sel.val_source,
                   "train_accuracy": clf.accuracy(x, y), "num_positives": len(pos_paths),
                   "num_negatives": len(neg_paths), "pooling": pooling},
      "unreadable": unreadable,
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
