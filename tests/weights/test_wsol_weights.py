"""torchvision ResNet50 / Inception v3 / VGG16 files into the WSOL backbones and the full networks."""

import math

import numpy as np
import pytest
from flax import nnx

from camjax import models
from camjax.weights import assign, load_pretrained, torch_reader
from camjax.weights import torchvision as tvw

torch = pytest.importorskip("torch")

# torchvision's layouts, written out independently of camjax's modules and key maps. The totals below
# were read off torchvision 0.29's resnet50() and inception_v3(aux_logits=True) state dicts.
RESNET50_KEYS, RESNET50_PARAMS = 320, 25_557_032
INCEPTION_V3_KEYS, INCEPTION_V3_PARAMS = 580, 27_161_264
RESNET50_LAYERS = ((64, 3), (128, 4), (256, 6), (512, 3))  # (planes, blocks)
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


def _bn(prefix, c):
  s = {f"{prefix}.{name}": (c,) for name in ("weight", "bias", "running_mean", "running_var")}
  s[f"{prefix}.num_batches_tracked"] = ()
  return s


def _resnet50_shapes():
  s = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
  cin = 64
  for i, (planes, blocks) in enumerate(RESNET50_LAYERS):
    for b in range(blocks):
      p = f"layer{i + 1}.{b}"
      s.update({f"{p}.conv1.weight": (planes, cin, 1, 1), **_bn(f"{p}.bn1", planes),
                f"{p}.conv2.weight": (planes, planes, 3, 3), **_bn(f"{p}.bn2", planes),
                f"{p}.conv3.weight": (4 * planes, planes, 1, 1), **_bn(f"{p}.bn3", 4 * planes)})
      if b == 0:
        s.update({f"{p}.downsample.0.weight": (4 * planes, cin, 1, 1), **_bn(f"{p}.downsample.1", 4 * planes)})
      cin = 4 * planes
  s.update({"fc.weight": (1000, 2048), "fc.bias": (1000,)})
  return s


def _basic(prefix, cin, cout, kh, kw=None):
  return {f"{prefix}.conv.weight": (cout, cin, kh, kh if kw is None else kw), **_bn(f"{prefix}.bn", cout)}


def _units(prefix, rows):
  s = {}
  for name, *shape in rows:
    s.update(_basic(f"{prefix}.{name}", *shape))
  return s


def _inception_v3_shapes():
  s = _units("", [("Conv2d_1a_3x3", 3, 32, 3), ("Conv2d_2a_3x3", 32, 32, 3), ("Conv2d_2b_3x3", 32, 64, 3),
                  ("Conv2d_3b_1x1", 64, 80, 1), ("Conv2d_4a_3x3", 80, 192, 3)])
  s = {k[1:]: v for k, v in s.items()}
  for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
    s.update(_units(name, [("branch1x1", cin, 64, 1), ("branch5x5_1", cin, 48, 1), ("branch5x5_2", 48, 64, 5),
                           ("branch3x3dbl_1", cin, 64, 1), ("branch3x3dbl_2", 64, 96, 3),
                           ("branch3x3dbl_3", 96, 96, 3), ("branch_pool", cin, pool, 1)]))
  s.update(_units("Mixed_6a", [("branch3x3", 288, 384, 3), ("branch3x3dbl_1", 288, 64, 1),
                               ("branch3x3dbl_2", 64, 96, 3), ("branch3x3dbl_3", 96, 96, 3)]))
  for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
    s.update(_units(name, [("branch1x1", 768, 192, 1), ("branch7x7_1", 768, c7, 1), ("branch7x7_2", c7, c7, 1, 7),
                           ("branch7x7_3", c7, 192, 7, 1), ("branch7x7dbl_1", 768, c7, 1),
                           ("branch7x7dbl_2", c7, c7, 7, 1), ("branch7x7dbl_3", c7, c7, 1, 7),
                           ("branch7x7dbl_4", c7, c7, 7, 1), ("branch7x7dbl_5", c7, 192, 1, 7),
                           ("branch_pool", 768, 192, 1)]))
  s.update(_units("AuxLogits", [("conv0", 768, 128, 1), ("conv1", 128, 768, 5)]))
  s.update({"AuxLogits.fc.weight": (1000, 768), "AuxLogits.fc.bias": (1000,)})
  s.update(_units("Mixed_7a", [("branch3x3_1", 768, 192, 1), ("branch3x3_2", 192, 320, 3),
                               ("branch7x7x3_1", 768, 192, 1), ("branch7x7x3_2", 192, 192, 1, 7),
                               ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3)]))
  for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
    s.update(_units(name, [("branch1x1", cin, 320, 1), ("branch3x3_1", cin, 384, 1),
                           ("branch3x3_2a", 384, 384, 1, 3), ("branch3x3_2b", 384, 384, 3, 1),
                           ("branch3x3dbl_1", cin, 448, 1), ("branch3x3dbl_2", 448, 384, 3),
                           ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1),
                           ("branch_pool", cin, 192, 1)]))
  s.update({"fc.weight": (1000, 2048), "fc.bias": (1000,)})
  return s


def _params(shapes):
  return sum(math.prod(v) for k, v in shapes.items() if not k.endswith(("running_mean", "running_var", "tracked")))


def test_fake_layouts_are_torchvisions():
  """The hand-written layouts hold as many tensors and parameters as torchvision's state dicts."""
  r, i = _resnet50_shapes(), _inception_v3_shapes()
  assert (len(r), _params(r)) == (RESNET50_KEYS, RESNET50_PARAMS)
  assert (len(i), _params(i)) == (INCEPTION_V3_KEYS, INCEPTION_V3_PARAMS)


def _fake(shapes, seed):
  """Float32 values (positive running variances), as torch tensors ready for ``torch.save``."""
  rng = np.random.default_rng(seed)
  sd = {}
  for k, shape in shapes.items():
    if k.endswith("num_batches_tracked"):
      sd[k] = torch.tensor(100)
    elif k.endswith("running_var"):
      sd[k] = torch.from_numpy(rng.uniform(0.5, 1.5, size=shape).astype(np.float32))
    else:
      sd[k] = torch.from_numpy(rng.standard_normal(size=shape, dtype=np.float32))
  return sd


def _abstract(name, num_classes=1000, **kw):
  return nnx.eval_shape(lambda: models.create(name, num_classes=num_classes, **kw))


def _hwio(sd, key):
  return sd[key].numpy().transpose(2, 3, 1, 0)


def _value(var):
  return np.asarray(var.get_value())


def _unloaded(model):
  """Parameters and BatchNorm statistics the file did not fill (the RNG streams are not weights)."""
  return sorted(p for p in assign.abstract_paths(model) if "rngs" not in p.split("."))


def test_resnet50_file_into_both_resnets(tmp_path):
  sd = _fake(_resnet50_shapes(), seed=0)
  path = tmp_path / "resnet50-fake.pth"
  torch.save(sd, path)
  wsol = _abstract("resnet50_wsol", num_classes=200)
  assert tvw.infer_format(wsol) == "torchvision_resnet50"
  with pytest.raises(ValueError, match="takes torchvision_resnet50 weights"):
    load_pretrained(wsol, path, format="torchvision_inception_v3")
  load_pretrained(wsol, path)
  assert _unloaded(wsol) == ["head.classifier.bias", "head.classifier.kernel"]  # 200 classes: fc is not reused
  np.testing.assert_array_equal(_value(wsol.conv1.kernel), _hwio(sd, "conv1.weight"))
  np.testing.assert_array_equal(_value(wsol.layer3[0].downsample[0].kernel), _hwio(sd, "layer3.0.downsample.0.weight"))
  np.testing.assert_array_equal(_value(wsol.layer4[2].bn3.var), sd["layer4.2.bn3.running_var"].numpy())
  np.testing.assert_array_equal(_value(wsol.layer2[1].conv2.kernel), _hwio(sd, "layer2.1.conv2.weight"))
  # The full network at 1000 classes takes fc too, and nothing stays unloaded.
  full = _abstract("resnet50")
  state = torch_reader.load_state_dict(str(path))
  load_pretrained(full, state)
  assert _unloaded(full) == []
  np.testing.assert_array_equal(_value(full.head.classifier.kernel), sd["fc.weight"].numpy().T)
  np.testing.assert_array_equal(_value(full.head.classifier.bias), sd["fc.bias"].numpy())
  # A key the model lacks and a key the file lacks are both reported, and nothing is assigned.
  bad = dict(state)
  bad["layer5.0.conv1.weight"] = bad.pop("layer2.1.bn2.running_var")
  before = wsol.conv1.kernel.get_value()
  with pytest.raises(assign.WeightMismatchError, match="layer5.0.conv1.weight") as err:
    load_pretrained(wsol, bad)
  assert "layer2.1.bn2.running_var" in str(err.value)
  assert wsol.conv1.kernel.get_value() is before


def test_inception_v3_file_into_both_inceptions(tmp_path):
  sd = _fake(_inception_v3_shapes(), seed=1)
  path = tmp_path / "inception_v3_google-fake.pth"
  torch.save(sd, path, _use_new_zipfile_serialization=False)
  wsol = _abstract("inceptionv3_wsol", num_classes=200)
  assert tvw.infer_format(wsol) == "torchvision_inception_v3"
  load_pretrained(wsol, path)
  # Mixed_7*, AuxLogits and fc are skipped; the layers the standard adds keep their initialisation.
  assert _unloaded(wsol) == ["SPG_A3_1b.conv.bias", "SPG_A3_1b.conv.kernel", "SPG_A3_2b.conv.bias",
                             "SPG_A3_2b.conv.kernel", "head.classifier.bias", "head.classifier.kernel"]
  np.testing.assert_array_equal(_value(wsol.Conv2d_1a_3x3.conv.kernel), _hwio(sd, "Conv2d_1a_3x3.conv.weight"))
  np.testing.assert_array_equal(_value(wsol.Mixed_6a.branch3x3.conv.kernel),
                                _hwio(sd, "Mixed_6a.branch3x3.conv.weight"))
  np.testing.assert_array_equal(_value(wsol.Mixed_6e.branch7x7dbl_5.conv.kernel),
                                _hwio(sd, "Mixed_6e.branch7x7dbl_5.conv.weight"))
  np.testing.assert_array_equal(_value(wsol.Mixed_5b.branch_pool.bn.mean),
                                sd["Mixed_5b.branch_pool.bn.running_mean"].numpy())
  full = _abstract("inceptionv3")
  load_pretrained(full, torch_reader.load_state_dict(str(path)))
  assert _unloaded(full) == []  # AuxLogits is not built; its keys are skipped
  np.testing.assert_array_equal(_value(full.Mixed_7c.branch3x3dbl_3b.conv.kernel),
                                _hwio(sd, "Mixed_7c.branch3x3dbl_3b.conv.weight"))
  np.testing.assert_array_equal(_value(full.head.classifier.kernel), sd["fc.weight"].numpy().T)


def test_vgg16_file_into_vgg16_wsol(tmp_path):
  """Without pool4 the standard re-indexes the file's conv keys; camjax names conv layers, so nothing moves."""
  shapes = {}
  cin = 3
  for index, width in zip(VGG16_CONVS, VGG16_WIDTHS):
    shapes[f"features.{index}.weight"] = (width // 16, cin, 3, 3)
    shapes[f"features.{index}.bias"] = (width // 16,)
    cin = width // 16
  shapes.update({"classifier.0.weight": (4, 8), "classifier.6.weight": (10, 4), "classifier.6.bias": (10,)})
  sd = _fake(shapes, seed=2)
  path = tmp_path / "vgg16-fake.pth"
  torch.save(sd, path)
  model = _abstract("vgg16_wsol", width_mult=1 / 16)
  assert tvw.infer_format(model) == "torchvision_vgg16"
  load_pretrained(model, path)
  assert _unloaded(model) == ["cam_conv.bias", "cam_conv.kernel", "head.classifier.bias", "head.classifier.kernel"]
  np.testing.assert_array_equal(_value(model.features.conv5_1.kernel), _hwio(sd, "features.24.weight"))
  np.testing.assert_array_equal(_value(model.features.conv4_3.bias), sd["features.21.bias"].numpy())


def test_input_normalisation():
  assert tvw.INPUT_NORMALIZATION["torchvision_resnet50"] is tvw.IMAGENET
  assert tvw.INPUT_NORMALIZATION["torchvision_inception_v3"] == ((0.5,) * 3, (0.5,) * 3)  # TF-ported weights
