"""camjax.evaluate on a tiny metadata directory written here (WSOL standard layout)."""

import json
import os

import cv2
import numpy as np
import pytest

from camjax import evaluate

IDS = ["val/n01/a.JPEG", "val/n02/b.JPEG"]


def _block(y0, x0, y1, x1):
  m = np.zeros((224, 224))
  m[y0:y1 + 1, x0:x1 + 1] = 1.0
  return m


@pytest.fixture
def dataset(tmp_path):
  meta = tmp_path / "meta"
  meta.mkdir()
  (meta / "image_ids.txt").write_text("\n".join(IDS) + "\n")
  (meta / "class_labels.txt").write_text(f"{IDS[0]},0\n{IDS[1]},1\n")
  (meta / "image_sizes.txt").write_text(f"{IDS[0]},448,448\n{IDS[1]},448,448\n")
  # Image a: one box, scaled by 224 / 448 with truncation -> (10, 20, 50, 100).
  # Image b: two boxes -> (0, 0, 5, 5) and (100, 100, 150, 150).
  (meta / "localization.txt").write_text(
      f"{IDS[0]},21,41,101,201\n{IDS[1]},0,0,11,11\n{IDS[1]},200,200,301,301\n")
  # Maps already at 224 and in [0, 1] with min 0 and max 1, so resizing and min-max
  # normalization leave them unchanged. a: block cols 10..49, rows 20..99 -> WSOL box
  # (10, 20, 50, 100), IoU 1. b: block far from both boxes -> IoU 0 at every threshold.
  maps = {IDS[0]: _block(20, 10, 99, 49), IDS[1]: _block(180, 180, 220, 220)}
  npy = tmp_path / "maps"
  for image_id, m in maps.items():
    path = npy / (image_id + ".npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, m.astype(np.float32))
  npz = tmp_path / "maps.npz"
  np.savez(npz, **maps)
  return meta, npy, npz


def test_scale_box_truncates():
  assert evaluate.scale_box((21, 41, 447, 335), 448, 336) == (10, 27, 223, 223)


def test_wsol_from_npy_directory_and_npz(dataset, tmp_path):
  meta, npy, npz = dataset
  out = tmp_path / "r.json"
  assert evaluate.main(["--scoremaps", str(npy), "--metadata", str(meta), "--protocol", "wsol",
                        "--output", str(out), "--num-workers", "1"]) == 0
  saved = json.loads(out.read_text())
  res = saved["results"]
  assert res["MaxBoxAcc@30"] == res["MaxBoxAcc@50"] == res["MaxBoxAcc@70"] == 50.0
  assert res["MaxBoxAccV2"] == 50.0 and res["num_images"] == 2
  assert saved["settings"]["multi_contour"] is True
  res_npz = evaluate.evaluate(str(npz), str(meta), "wsol", multi_contour=False, num_workers=1)["results"]
  assert res_npz["MaxBoxAcc"] == 50.0 and "MaxBoxAccV2" not in res_npz


def test_paper_protocol_gt_known(dataset):
  meta, npy, _ = dataset
  res = evaluate.evaluate(str(npy), str(meta), "paper")["results"]
  assert res["gt_known_loc_acc"] == 50.0  # image a matches its box in original pixels, b does not


def test_missing_map_names_the_image(dataset, tmp_path):
  meta, npy, _ = dataset
  os.remove(npy / (IDS[1] + ".npy"))
  with pytest.raises(ValueError, match=r"image 1 \(val/n02/b.JPEG\): no map"):
    evaluate.evaluate(str(npy), str(meta), "wsol", num_workers=1)


def test_nan_map_names_the_image(dataset):
  meta, npy, _ = dataset
  np.save(npy / (IDS[0] + ".npy"), np.full((7, 7), np.nan, np.float32))
  with pytest.raises(ValueError, match=r"image 0 \(val/n01/a.JPEG\): map contains NaN"):
    evaluate.evaluate(str(npy), str(meta), "wsol", num_workers=1)


def test_pxap_from_mask_metadata(tmp_path):
  meta = tmp_path / "meta"
  masks = tmp_path / "masks"
  (masks / "m").mkdir(parents=True)
  meta.mkdir()
  image_id = "val/x/c.jpg"
  (meta / "image_ids.txt").write_text(image_id + "\n")
  (meta / "image_sizes.txt").write_text(f"{image_id},224,224\n")
  # Two instance masks (columns 0..55 and 168..223) and an ignore box over columns 56..139;
  # columns 140..167 are background.
  left = np.zeros((224, 224), np.uint8)
  left[:, :56] = 255
  right = np.zeros((224, 224), np.uint8)
  right[:, 168:] = 255
  ignore = np.zeros((224, 224), np.uint8)
  ignore[:, 56:140] = 255
  for name, img in (("l.png", left), ("r.png", right), ("i.png", ignore)):
    cv2.imwrite(str(masks / "m" / name), img)
  (meta / "localization.txt").write_text(f"{image_id},m/l.png,m/i.png\n{image_id},m/r.png,\n")
  # Foreground 1.0 except rows 0-1 (0.0); background 0.5 except rows 0-1 (0.0); the ignored
  # columns are 0.9 and count nowhere. 112 fg columns: 24864 px at 1.0 and 224 at 0.0;
  # background: 6216 px at 0.5 and 56 at 0.0. Walking down, the first step has precision 1
  # and recall 24864/25088; the 0.5 bin adds no recall; the bottom bin adds recall
  # 224/25088 at precision 25088/31360 = 0.8. PxAP = 100 * (24864 + 0.8 * 224) / 25088.
  m = np.full((224, 224), 0.5)
  m[:, :56] = 1.0
  m[:, 168:] = 1.0
  m[:, 56:140] = 0.9
  m[:2, :] = 0.0
  np.savez(tmp_path / "maps.npz", **{image_id: m})
  res = evaluate.evaluate(str(tmp_path / "maps.npz"), str(meta), "wsol", mask_root=str(masks))["results"]
  assert res["PxAP"] == pytest.approx(100 * (24864 + 0.8 * 224) / 25088)
