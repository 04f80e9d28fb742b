"""What the localization evaluators take in: the one metadata reader, the one min-max, the one host resizer."""

import subprocess
import sys

import cv2
import numpy as np
import pytest

from camjax.errors import UserError
from camjax.localization import maps, metadata, saved_maps


def test_input_modules_import_no_jax():
  code = ("import sys, camjax.localization.metadata, camjax.localization.maps, camjax.localization.saved_maps; "
          "sys.exit(1 if any(m == 'jax' or m.startswith('jax.') for m in sys.modules) else 0)")
  assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _split(folder, **files):
  folder.mkdir(parents=True, exist_ok=True)
  for name, text in files.items():
    (folder / f"{name}.txt").write_text(text)
  return folder


def test_reader_keeps_image_ids_order_and_skips_unlisted_lines(tmp_path):
  split = _split(tmp_path / "val", image_ids="b.jpg\na,1.jpg\n\n",
                 class_labels="a,1.jpg,3\nb.jpg,7\nz.jpg,1\n",
                 image_sizes="b.jpg,40,30\na,1.jpg,20.0,10\n",
                 localization="a,1.jpg,1,2,10.5,8\nb.jpg,0,0,9,9\nb.jpg,3,3,39,29\nz.jpg,0,0,1,1\n")
  got = metadata.read(split)
  assert got.kind == metadata.BOXES and [i.id for i in got.items] == ["b.jpg", "a,1.jpg"]  # ids may hold commas
  b, a = got.items
  assert (b.label, b.size, b.boxes) == (7, (40, 30), [(0, 0, 9, 9), (3, 3, 39, 29)])
  assert (a.label, a.size, a.boxes) == (3, (20, 10), [(1, 2, 10.5, 8)])
  # The data builders read the same items through wsol_metadata.
  from camjax.data import wsol_metadata

  assert wsol_metadata.read_split(split) == got.items and wsol_metadata.Item is metadata.Item


def test_reader_tolerates_missing_files_and_reads_mask_layout(tmp_path):
  assert metadata.read(tmp_path).items == []
  split = _split(tmp_path / "masks", image_ids="x.jpg\ny.jpg\n", localization="x.jpg,m/x0.png,m/xi.png\n"
                 "x.jpg,m/x1.png,\ny.jpg,m/y0.png,\n")
  got = metadata.read(split)
  assert got.kind == metadata.MASKS
  assert [(i.masks, i.ignore, i.size) for i in got.items] == [(["m/x0.png", "m/x1.png"], "m/xi.png", None),
                                                              (["m/y0.png"], None, None)]


@pytest.mark.parametrize("name, text", [("image_sizes", "a.jpg,448\n"), ("image_sizes", "a.jpg,44.5,3\n"),
                                        ("localization", "a.jpg,1,2,x,4\n"), ("localization", "a.jpg,1,2,nan,4\n"),
                                        ("class_labels", "a.jpg,cat\n")])
def test_malformed_line_names_file_and_line(tmp_path, name, text):
  split = _split(tmp_path, image_ids="a.jpg\n", **{name: "\n" + text})
  with pytest.raises(UserError, match=rf"{name}.txt line 2: expected id,"):
    metadata.read(split)


def test_scorer_needs_its_three_files_and_a_box_per_image(tmp_path):
  split = _split(tmp_path, image_ids="a.jpg\nb.jpg\n", image_sizes="a.jpg,8,8\nb.jpg,8,8\n",
                 localization="a.jpg,0,0,7,7\n")
  with pytest.raises(UserError, match=r"image 1 \(b.jpg\): no box"):
    saved_maps.read_metadata(str(split))
  (split / "image_sizes.txt").unlink()
  with pytest.raises(UserError, match="missing .*image_sizes.txt: --metadata must hold"):
    saved_maps.read_metadata(str(split))
  _split(split, image_sizes="a.jpg,8,8\nb.jpg,0,8\n", localization="a.jpg,0,0,7,7\nb.jpg,0,0,1,1\n")
  with pytest.raises(UserError, match=r"image 1 \(b.jpg\): size 0x8 .* not positive"):
    saved_maps.read_metadata(str(split))


def test_min_max_per_map_in_the_asked_dtype():
  stack = np.array([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]], np.float32)
  got = maps.min_max(stack)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, [[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])  # constant -> zeros
  assert maps.min_max(stack, dtype=np.float64).dtype == np.float64
  np.testing.assert_array_equal(maps.min_max(np.array([[np.nan, 1.0]])), [[0.0, 0.0]])


def test_normalize_wsol_is_the_standards_cubic_resize_then_clipped_min_max():
  # Bicubic overshoots past the input's range; the clip keeps the result in [0, 1] exactly as before.
  scoremap = np.zeros((7, 7), np.float32)
  scoremap[3, 3] = 1.0
  resized = cv2.resize(scoremap.astype(np.float64), (224, 224), interpolation=cv2.INTER_CUBIC)
  expected = np.clip((resized - resized.min()) / (resized.max() - resized.min()), 0.0, 1.0)
  got = saved_maps.normalize_wsol(scoremap)
  assert got.dtype == np.float64
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(saved_maps.normalize_wsol(np.full((224, 224), 0.3)), np.zeros((224, 224)))


def test_resize_map_is_opencv_on_the_host():
  cam = np.random.default_rng(0).random((7, 5))
  got = maps.resize_map(cam, (14, 10))
  assert got.shape == (14, 10) and got.dtype == np.float32
  np.testing.assert_array_equal(got, cv2.resize(cam.astype(np.float32), (10, 14), interpolation=cv2.INTER_LINEAR))
  np.testing.assert_array_equal(maps.resize_map(cam, (28, 20), interpolation="cubic", dtype=np.float64),
                                cv2.resize(cam, (20, 28), interpolation=cv2.INTER_CUBIC))
  np.testing.assert_array_equal(maps.resize_map(cam, (7, 5)), cam.astype(np.float32))
  with pytest.raises(UserError, match="interpolation"):
    maps.resize_map(cam, (3, 3), interpolation="lanczos")
  with pytest.raises(ValueError, match=r"\(h, w\)"):
    maps.resize_map(cam[None], (3, 3))
