"""torchvision state dicts (VGG16, AlexNet, GoogLeNet) into the GAP backbones, both torch formats."""

import numpy as np
import pytest

from camjax import models
from camjax.weights import assign, load_pretrained
from camjax.weights import torchvision as tvw

torch = pytest.importorskip("torch")

import jax  # noqa: E402
from flax import nnx  # noqa: E402

# torchvision's layouts, written out independently of camjax's key maps.
VGG16_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
               (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512),
               (28, 512, 512)]
ALEXNET_CONVS = [(0, 3, 64, 11), (3, 64, 192, 5), (6, 192, 384, 3), (8, 384, 256, 3), (10, 256, 256, 3)]
INCEPTIONS = [("3a", 192, 64, 96, 128, 16, 32, 32), ("3b", 256, 128, 128, 192, 32, 96, 64),
              ("4a", 480, 192, 96, 208, 16, 48, 64), ("4b", 512, 160, 112, 224, 24, 64, 64),
              ("4c", 512, 128, 128, 256, 24, 64, 64), ("4d", 512, 112, 144, 288, 32, 64, 64),
              ("4e", 528, 256, 160, 320, 32, 128, 128), ("5a", 832, 256, 160, 320, 32, 128, 128),
              ("5b", 832, 384, 192, 384, 48, 128, 128)]


def _vgg16_shapes(scale=1):
  s = {}
  for i, cin, cout in VGG16_CONVS:
    cin = cin if i == 0 else cin // scale
    s[f"features.{i}.weight"] = (cout // scale, cin, 3, 3)
    s[f"features.{i}.bias"] = (cout // scale,)
  # The FC layers are skipped by the GAP model: small stand-ins keep the files small.
  s.update({"classifier.0.weight": (4, 8), "classifier.0.bias": (4,), "classifier.6.weight": (10, 4)})
  return s


def _alexnet_shapes():
  s = {}
  for i, cin, cout, k in ALEXNET_CONVS:
    s[f"features.{i}.weight"] = (cout, cin, k, k)
    s[f"features.{i}.bias"] = (cout,)
  s.update({"classifier.1.weight": (4, 8), "classifier.1.bias": (4,), "classifier.4.weight": (4, 4)})
  return s


def _basic(prefix, cin, cout, k):
  s = {f"{prefix}.conv.weight": (cout, cin, k, k)}
  for name in ("weight", "bias", "running_mean", "running_var"):
    s[f"{prefix}.bn.{name}"] = (cout,)
  s[f"{prefix}.bn.num_batches_tracked"] = ()
  return s


def _googlenet_shapes():
  s = {}
  s.update(_basic("conv1", 3, 64, 7))
  s.update(_basic("conv2", 64, 64, 1))
  s.update(_basic("conv3", 64, 192, 3))
  for name, cin, c1, c3r, c3, c5r, c5, pp in INCEPTIONS:
    p = f"inception{name}"
    s.update(_basic(f"{p}.branch1", cin, c1, 1))
    s.update(_basic(f"{p}.branch2.0", cin, c3r, 1))
    s.update(_basic(f"{p}.branch2.1", c3r, c3, 3))
    s.update(_basic(f"{p}.branch3.0", cin, c5r, 1))
    s.update(_basic(f"{p}.branch3.1", c5r, c5, 3))
    s.update(_basic(f"{p}.branch4.1", cin, pp, 1))
  s.update(_basic("aux1.conv", 512, 128, 1))
  s.update({"aux1.fc1.weight": (1024, 2048), "aux1.fc1.bias": (1024,), "fc.weight": (1000, 1024), "fc.bias": (1000,)})
  return s


def _fake(shapes, seed=0):
  g = torch.Generator().manual_seed(seed)
  sd = {}
  for k, shape in shapes.items():
    if k.endswith("num_batches_tracked"):
      sd[k] = torch.tensor(100)
    elif k.endswith("running_var"):
      sd[k] = torch.rand(shape, generator=g) + 0.5
    else:
      sd[k] = torch.randn(shape, generator=g)
  return sd


def _write(sd, path, fmt):
  torch.save(sd, path, _use_new_zipfile_serialization=(fmt == "zip"))
  return path


def _abstract(name, **kw):
  return nnx.eval_shape(lambda: models.create(name, num_classes=1000, **kw))


def _value(var):
  return np.asarray(var.get_value())


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_vgg16_full_size_backbone(tmp_path, fmt):
  sd = _fake(_vgg16_shapes())
  model = _abstract("vgg16_gap")
  load_pretrained(model, _write(sd, tmp_path / "vgg16.pth", fmt))
  np.testing.assert_array_equal(_value(model.features.conv1_1.kernel),
                                sd["features.0.weight"].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(_value(model.features.conv5_3.bias), sd["features.28.bias"].numpy())
  np.testing.assert_array_equal(_value(model.features.conv3_2.kernel),
                                sd["features.12.weight"].numpy().transpose(2, 3, 1, 0))
  assert isinstance(model.cam_conv.kernel.get_value(), jax.ShapeDtypeStruct)  # the added conv is not loaded


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_alexnet_full_size_backbone(tmp_path, fmt):
  sd = _fake(_alexnet_shapes(), seed=1)
  model = _abstract("alexnet_gap")
  load_pretrained(model, _write(sd, tmp_path / "alexnet.pth", fmt), format="torchvision_alexnet")
  np.testing.assert_array_equal(_value(model.features.conv2.kernel),
                                sd["features.3.weight"].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(_value(model.features.conv5.bias), sd["features.10.bias"].numpy())


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_googlenet_full_size_backbone(tmp_path, fmt):
  sd = _fake(_googlenet_shapes(), seed=2)
  model = _abstract("googlenet_gap")
  load_pretrained(model, _write(sd, tmp_path / "googlenet.pth", fmt))
  np.testing.assert_array_equal(_value(model.conv1.conv.kernel), sd["conv1.conv.weight"].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(_value(model.conv1.bn.mean), sd["conv1.bn.running_mean"].numpy())
  np.testing.assert_array_equal(_value(model.inception4e.branch4[1].bn.var),
                                sd["inception4e.branch4.1.bn.running_var"].numpy())
  np.testing.assert_array_equal(_value(model.inception3a.branch2[1].conv.kernel),
                                sd["inception3a.branch2.1.conv.weight"].numpy().transpose(2, 3, 1, 0))
  # The full GoogLeNet takes inception5a/5b and, at 1000 classes, the classifier too.
  full = _abstract("googlenet")
  load_pretrained(full, {k: v.numpy() for k, v in sd.items()})
  np.testing.assert_array_equal(_value(full.head.classifier.kernel), sd["fc.weight"].numpy().T)
  np.testing.assert_array_equal(_value(full.inception5b.branch1.conv.kernel),
                                sd["inception5b.branch1.conv.weight"].numpy().transpose(2, 3, 1, 0))


def test_small_vgg16_gap_loads_and_runs(tmp_path):
  model = nnx.eval_shape(lambda: models.create("vgg16_gap", num_classes=3, width_mult=1 / 16))
  sd = _fake(_vgg16_shapes(scale=16), seed=3)
  load_pretrained(model, _write(sd, tmp_path / "small.pth", "zip"), format="torchvision_vgg16")
  np.testing.assert_array_equal(_value(model.features.conv4_1.kernel),
                                sd["features.17.weight"].numpy().transpose(2, 3, 1, 0))
  # Only the backbone came from the file; give the added layers values and run the network.
  assert sorted(assign.abstract_paths(model)) == ["cam_conv.bias", "cam_conv.kernel", "head.classifier.kernel"]
  rng = np.random.default_rng(0)
  for var in (model.cam_conv.kernel, model.cam_conv.bias, model.head.classifier.kernel):
    var.set_value(jax.numpy.asarray(rng.normal(size=var.get_value().shape) * 0.01, jax.numpy.float32))
  x = rng.normal(size=(1, 32, 32, 3)).astype(np.float32)
  logits, features = nnx.jit(lambda m, x: m(x))(model, x)
  assert logits.shape == (1, 3) and features.shape == (1, 2, 2, 64)
  # conv1_1 by hand at one pixel (3x3, pad 1, ReLU) matches the network's first layer.
  k, b = sd["features.0.weight"].numpy(), sd["features.0.bias"].numpy()
  patch = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))[0:3, 0:3]
  want = np.maximum(np.einsum("hwi,oihw->o", patch, k) + b, 0)
  got = nnx.jit(lambda m, x: jax.nn.relu(m.features.conv1_1(x)))(model, x)[0, 0, 0]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_bad_keys_and_shapes_are_listed_together(tmp_path):
  shapes = _alexnet_shapes()
  shapes["features.6.weight"] = (384, 192, 5, 5)  # wrong kernel size
  del shapes["features.8.bias"]  # missing
  shapes["features.99.weight"] = (1,)  # unexpected
  path = _write(_fake(shapes), tmp_path / "bad.pth", "legacy")
  model = _abstract("alexnet_gap")
  before = model.features.conv1.kernel.get_value()
  with pytest.raises(assign.WeightMismatchError) as err:
    load_pretrained(model, path)
  msg = str(err.value)
  assert "features.6.weight" in msg and "features.8.bias" in msg and "features.99.weight" in msg
  assert "(5, 5, 192, 384)" in msg and "(3, 3, 192, 384)" in msg
  assert model.features.conv1.kernel.get_value() is before  # nothing assigned on failure


def test_wrong_format_for_model_fails_clearly():
  with pytest.raises(ValueError, match="torchvision_vgg16"):
    load_pretrained(_abstract("vgg16_gap"), {}, format="torchvision_googlenet")
  assert tvw.infer_format(_abstract("alexnet_star_gap")) == "torchvision_alexnet"


def test_file_problems_surface_before_model_questions(tmp_path):
  from camjax.errors import UserError
  from camjax.weights import torch_reader

  small = nnx.eval_shape(lambda: models.create("small_gap", num_classes=3))  # no torch weights fit it
  missing = tmp_path / "missing.pth"
  with pytest.raises(torch_reader.CheckpointNotFoundError, match=f"pretrained.path={missing} does not exist"):
    load_pretrained(small, missing)
  from camjax import weights  # the same check, cheap enough for config validation (imports no JAX)

  with pytest.raises(torch_reader.CheckpointNotFoundError, match=f"pretrained.path={missing} does not exist"):
    weights.check_pretrained_path(missing)
  data = _write(_fake(_alexnet_shapes()), tmp_path / "alexnet.pth", "zip").read_bytes()
  cut = tmp_path / "cut.pth"
  cut.write_bytes(data[: len(data) // 2])
  with pytest.raises(torch_reader.CheckpointFormatError, match=f"{cut}: truncated or corrupt"):
    load_pretrained(small, cut)
  # A readable file meets the model question next, also as one line.
  with pytest.raises(UserError, match="no torch pretrained weights fit SmallGapNet") as err:
    load_pretrained(small, tmp_path / "alexnet.pth")
  assert "\n" not in str(err.value)
