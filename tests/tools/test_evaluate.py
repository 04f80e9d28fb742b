"""camjax.evaluate on a tiny metadata directory written here (WSOL standard layout)."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from camjax.tools import evaluate
from camjax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def _mask_dataset(tmp_path, images):
  """Mask metadata for ``images``: {image_id: (map, [instance masks], ignore mask or None)}."""
  meta = tmp_path / "meta"
  masks = tmp_path / "masks"
  meta.mkdir()
  (masks / "m").mkdir(parents=True)
  (meta / "image_ids.txt").write_text("".join(f"{image_id}\n" for image_id in images))
  (meta / "image_sizes.txt").write_text("".join(f"{image_id},224,224\n" for image_id in images))
  rows = []
  for n, (image_id, (_, instances, ignore)) in enumerate(images.items()):
    ignore_name = ""
    if ignore is not None:
      ignore_name = f"m/{n}_ignore.png"
      cv2.imwrite(str(masks / ignore_name), ignore)
    for k, instance in enumerate(instances):
      cv2.imwrite(str(masks / f"m/{n}_{k}.png"), instance)
      rows.append(f"{image_id},m/{n}_{k}.png,{ignore_name if k == 0 else ''}\n")
  (meta / "localization.txt").write_text("".join(rows))
  np.savez(tmp_path / "maps.npz", **{image_id: m for image_id, (m, _, _) in images.items()})
  return meta, masks, tmp_path / "maps.npz"


def _image_c():
  # Two instance masks (columns 0..55 and 168..223) and an ignore box over columns 56..139;
  # columns 140..167 are background.
  left = np.zeros((224, 224), np.uint8)
  left[:, :56] = 255
  right = np.zeros((224, 224), np.uint8)
  right[:, 168:] = 255
  ignore = np.zeros((224, 224), np.uint8)
  ignore[:, 56:140] = 255
  # Foreground 1.0 except rows 0-1 (0.0); background 0.5 except rows 0-1 (0.0); the ignored
  # columns are 0.9 and count nowhere. 112 fg columns: 24864 px at 1.0 and 224 at 0.0;
  # background: 6216 px at 0.5 and 56 at 0.0.
  m = np.full((224, 224), 0.5)
  m[:, :56] = 1.0
  m[:, 168:] = 1.0
  m[:, 56:140] = 0.9
  m[:2, :] = 0.0
  return m, [left, right], ignore


def test_pxap_from_mask_metadata(tmp_path):
  meta, masks, npz = _mask_dataset(tmp_path, {"val/x/c.jpg": _image_c()})
  # Walking down, the first step has precision 1 and recall 24864/25088; the 0.5 bin adds no
  # recall; the bottom bin adds recall 224/25088 at precision 25088/31360 = 0.8.
  res = evaluate.evaluate(str(npz), str(meta), "wsol", mask_root=str(masks))["results"]
  assert res["PxAP"] == pytest.approx(100 * (24864 + 0.8 * 224) / 25088)


def test_pxap_scores_an_image_with_an_empty_mask(tmp_path):
  # Image d has an all-zero mask: its 50176 pixels are background, half at 1.0 (rows 0..111),
  # half at 0.0. Pooled with image c, the top step has tp 24864 and fp 25088 (precision
  # 24864/49952, recall 24864/25088); the 0.5 bin adds no recall; the bottom bin adds recall
  # 224/25088 at precision 25088/(25088 + 25088 + 6216 + 56 + 25088) = 25088/81536.
  d = np.zeros((224, 224))
  d[:112] = 1.0
  images = {"val/x/c.jpg": _image_c(), "val/x/d.jpg": (d, [np.zeros((224, 224), np.uint8)], None)}
  meta, masks, npz = _mask_dataset(tmp_path, images)
  res = evaluate.evaluate(str(npz), str(meta), "wsol", mask_root=str(masks))["results"]
  expected = 100 * (24864 / 49952 * 24864 / 25088 + 25088 / 81536 * 224 / 25088)
  assert res["PxAP"] == pytest.approx(expected) and res["num_images"] == 2
  # The same from pooled NumPy histograms over the bin edges of docs/protocol.md.
  edges = np.append(np.arange(0, 1, 0.01), [1, 2, 3])
  c, (left, right), ignore = _image_c()
  fg_c = (left > 0) | (right > 0)
  bg_c = ~fg_c & ~(ignore > 0)
  fg_hist = np.histogram(c[fg_c], edges)[0]
  bg_hist = np.histogram(c[bg_c], edges)[0] + np.histogram(d, edges)[0]
  tp, fp = fg_hist[::-1].cumsum(), bg_hist[::-1].cumsum()
  recall = tp / tp[-1]
  keep = (tp + fp)[1:] > 0
  pooled = 100 * np.sum((tp[1:] / np.maximum(tp + fp, 1)[1:] * np.diff(recall))[keep])
  assert res["PxAP"] == pytest.approx(pooled)


# ---------------------------------------------------------------------------------------
# The command: one "camjax: error:" line and exit 2 for every input the user can fix.


def _cli(*args, timeout=120):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("CAMJAX_VERBOSE", None)
  return subprocess.run([sys.executable, "-m", "camjax.evaluate", *map(str, args)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _assert_user_error(proc, *fragments):
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("camjax: error: "), proc.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  return lines[0]


def _break(case, meta, npy):
  """Spoil one input of the box dataset; returns the fragments the error line must hold."""
  a, b = IDS
  if case == "missing image_sizes.txt":
    os.remove(meta / "image_sizes.txt")
    return ["image_sizes.txt", "--metadata must hold image_ids.txt, image_sizes.txt and localization.txt"]
  if case == "nan map":
    np.save(npy / (a + ".npy"), np.full((7, 7), np.nan, np.float32))
    return [a, "NaN"]
  if case == "3-D map":
    np.save(npy / (b + ".npy"), np.zeros((2, 7, 7), np.float32))
    return [b, "2-D float"]
  if case == "integer map":
    np.save(npy / (b + ".npy"), np.zeros((7, 7), np.int32))
    return [b, "2-D float"]
  if case == "missing map":
    os.remove(npy / (b + ".npy"))
    return [b, "no map"]
  if case == "box outside the image":
    (meta / "localization.txt").write_text(f"{a},21,41,448,201\n{b},0,0,11,11\n")
    return [a, "21,41,448,201", "448x448"]
  if case == "impossible box":
    (meta / "localization.txt").write_text(f"{a},21,41,101,201\n{b},30,0,11,11\n")
    return [b, "x1 < x0"]
  if case == "bad size line":
    (meta / "image_sizes.txt").write_text(f"{a},448,448\n{b},448\n")
    return ["image_sizes.txt line 2"]
  raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing image_sizes.txt", "nan map", "3-D map", "integer map", "missing map",
                                  "box outside the image", "impossible box", "bad size line"])
def test_command_reports_bad_input_on_one_line_naming_the_image(dataset, case):
  meta, npy, _ = dataset
  fragments = _break(case, meta, npy)
  _assert_user_error(_cli("--scoremaps", npy, "--metadata", meta, "--num-workers", 1), *fragments)


def test_command_reports_bad_boxes_under_the_paper_protocol_too(dataset):
  meta, npy, _ = dataset
  fragments = _break("box outside the image", meta, npy)
  _assert_user_error(_cli("--scoremaps", npy, "--metadata", meta, "--protocol", "paper"), *fragments)


def test_command_reports_missing_paths_and_bad_flags(dataset, tmp_path):
  meta, npy, _ = dataset
  _assert_user_error(_cli("--scoremaps", tmp_path / "nowhere", "--metadata", meta), "--scoremaps", "nowhere",
                     "does not exist")
  _assert_user_error(_cli("--scoremaps", npy, "--metadata", tmp_path / "nometa"), "--metadata", "nometa")
  _assert_user_error(_cli("--scoremaps", npy, "--metadata", meta, "--iou-thresholds", "a,b"), "--iou-thresholds")
  _assert_user_error(_cli("--metadata", meta), "--scoremaps")


def test_output_is_checked_before_scoring_and_kept_when_a_run_fails(dataset, tmp_path):
  meta, npy, _ = dataset
  args = ("--scoremaps", npy, "--metadata", meta, "--num-workers", 1)
  proc = _cli(*args, "--output", tmp_path / "missing" / "r.json")
  _assert_user_error(proc, "--output", "does not exist")
  assert proc.stdout == ""  # nothing was scored
  _assert_user_error(_cli(*args, "--output", tmp_path), "--output", "is a directory")
  if os.geteuid() != 0:  # root may write anywhere
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _assert_user_error(_cli(*args, "--output", locked / "r.json"), "--output", "cannot be written")
  out = tmp_path / "r.json"
  out.write_text("the previous run\n")
  np.save(npy / (IDS[1] + ".npy"), np.full((7, 7), np.inf, np.float32))
  _assert_user_error(_cli(*args, "--output", out), IDS[1], "Inf")
  assert out.read_text() == "the previous run\n"
  assert sorted(os.listdir(tmp_path)) == sorted(["meta", "maps", "maps.npz", "r.json"]
                                                + (["locked"] if os.geteuid() != 0 else []))


def test_command_writes_its_output_whole(dataset, tmp_path):
  meta, npy, _ = dataset
  out = tmp_path / "r.json"
  out.write_text("the previous run\n")
  proc = _cli("--scoremaps", npy, "--metadata", meta, "--num-workers", 1, "--output", out)
  assert proc.returncode == 0, proc.stderr
  assert json.loads(out.read_text())["results"]["MaxBoxAccV2"] == 50.0
  assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_command_reports_a_split_without_foreground(tmp_path):
  empty = np.zeros((224, 224), np.uint8)
  m = np.zeros((224, 224))
  m[:10] = 1.0
  meta, masks, npz = _mask_dataset(tmp_path, {"val/x/e.jpg": (m, [empty], None), "val/x/f.jpg": (m, [empty], None)})
  _assert_user_error(_cli("--scoremaps", npz, "--metadata", meta, "--mask-root", masks), "PxAP is undefined")
  os.remove(masks / "m" / "1_0.png")
  _assert_user_error(_cli("--scoremaps", npz, "--metadata", meta, "--mask-root", masks), "val/x/f.jpg",
                     "cannot read mask")


def test_user_errors_are_value_errors_for_library_callers(dataset):
  meta, npy, _ = dataset
  os.remove(npy / (IDS[1] + ".npy"))
  with pytest.raises(UserError, match=r"image 1 \(val/n02/b.JPEG\): no map"):
    evaluate.evaluate(str(npy), str(meta), "wsol", num_workers=1)
