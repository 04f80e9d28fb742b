"""The WSOL standard's backbones and torchvision's ResNet50 / Inception v3: sizes, maps, blocks, CAM.

Full-size networks are only traced (``nnx.eval_shape`` / ``jax.eval_shape``);
the forwards that run use ``width_mult`` and small inputs.
"""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from camjax import methods, models
from camjax.cam import class_activation_maps, maps_from_features
from camjax.models import inception, layers, resnet
from camjax.models.layers import count_params
from test_models import abstract_forward

# Parameter counts of the reference definitions, counted once with torch (sum of p.numel() over
# model.parameters()): torchvision 0.29's resnet50() and Inception3(aux_logits=True / False), and
# wsolevaluation's wsol.resnet50 / vgg16 / inception_v3 with architecture_type="cam" (equal with and
# without large_feature_map). torchvision's inception_v3 holds 27,161,264 with AuxLogits (3,326,696).
REFERENCE_PARAMS = {
    ("resnet50", 1000): 25_557_032,
    ("resnet50_wsol", 1000): 25_557_032,
    ("vgg16_wsol", 1000): 20_459_304,
    ("vgg16_wsol", 200): 19_639_304,
    ("inceptionv3", 1000): 27_161_264 - 3_326_696,
    ("inceptionv3_wsol", 1000): 26_507_976,
}
WSOL_NETS = ("resnet50_wsol", "vgg16_wsol", "inceptionv3_wsol")


FORWARD = nnx.jit(lambda model, images: model(images))


def abstract(name, num_classes=1000, **kw):
  """Shape-only model in eval mode (cached: tests only read it, or copy it with ``materialize``)."""
  return _abstract(name, num_classes, tuple(sorted(kw.items())))


@functools.lru_cache(maxsize=None)
def _abstract(name, num_classes, kw):
  model = nnx.eval_shape(lambda: models.create(name, num_classes=num_classes, **dict(kw)))
  model.eval()  # traced forwards read the BatchNorm statistics instead of updating them (much cheaper to trace)
  return model


def materialize(model, seed=0):
  """Abstract model -> concrete one: N(0, 1/fan_in) kernels, small biases, random positive BN statistics."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(seed)
    name = [k.key for k in path if hasattr(k, "key")][-1]
    if name == "kernel":
      return rng.normal(size=leaf.shape).astype(np.float32) / np.sqrt(np.prod(leaf.shape[:-1]))
    if name in ("var", "scale"):
      return rng.uniform(0.5, 1.5, size=leaf.shape).astype(leaf.dtype)
    if name in ("bias", "mean"):
      return (rng.normal(size=leaf.shape) * 0.1).astype(leaf.dtype)
    return np.zeros(leaf.shape, leaf.dtype)

  graphdef, state = nnx.split(model)
  # device_put: jnp.asarray of a NumPy array compiles a small program per shape.
  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(lambda p, v: jax.device_put(fill(p, v)), state))


@pytest.mark.parametrize("name, num_classes", sorted(REFERENCE_PARAMS))
def test_parameter_counts_equal_the_reference_definitions(name, num_classes):
  assert count_params(abstract(name, num_classes)) == REFERENCE_PARAMS[name, num_classes]


@pytest.mark.parametrize("name, size, side, channels", [
    ("resnet50_wsol", 224, 28, 2048),
    ("vgg16_wsol", 224, 28, 1024),
    ("inceptionv3", 299, 8, 2048),
    ("inceptionv3_wsol", 224, 28, 1024),
])
def test_feature_maps_at_the_standard_resolution(name, size, side, channels):
  """The map sides the reference definitions give (hooked in torch at 224 px, 299 for Inception v3)."""
  model = abstract(name)
  logits, features = abstract_forward(model, size, batch=1)
  assert logits.shape == (1, 1000) and features.shape == (1, side, side, channels)
  assert layers.map_size(model.backbone_ops, size) == side


@pytest.mark.parametrize("name, kw, side", [
    ("resnet50", {}, 7),  # the same forward as resnet50_wsol's with torchvision's strides
    ("inceptionv3", {}, 5),  # torchvision's Inception v3 at 224 px
    ("resnet50_wsol", {"large_feature_map": False}, 14),
    ("vgg16_wsol", {"large_feature_map": False}, 14),
    ("inceptionv3_wsol", {"large_feature_map": False}, 14),
])
def test_other_map_sides_at_224_px(name, kw, side):
  """By the spatial path alone; the forwards of these variants run in the CAM tests below."""
  model = abstract(name) if not kw else abstract(name, num_classes=5, width_mult=1 / 16, **kw)
  assert layers.map_size(model.backbone_ops, 224) == side


@pytest.mark.parametrize("name, kw, min_size", [("inceptionv3", {}, 75), ("inceptionv3_wsol", {}, 11),
                                                ("inceptionv3_wsol", {"large_feature_map": False}, 23),
                                                ("vgg16_wsol", {}, 8)])
def test_smallest_input_and_one_less(name, kw, min_size):
  model = abstract(name) if not kw else abstract(name, num_classes=5, width_mult=1 / 16, **kw)
  assert model.min_size == min_size  # 75 px is torchvision's own minimum for Inception v3
  with pytest.raises(ValueError, match=f"at least {min_size}x{min_size}"):
    abstract_forward(model, min_size - 1, batch=1)


def test_torchvision_paths_and_added_layers():
  r = nnx.state(abstract("resnet50_wsol"))
  flat = {"/".join(map(str, k)): v.shape for k, v in nnx.to_flat_state(r)}
  assert flat["layer4/0/downsample/0/kernel"] == (1, 1, 1024, 2048)
  assert flat["layer3/5/conv2/kernel"] == (3, 3, 256, 256)
  assert flat["head/classifier/bias"] == (1000,)
  i = {"/".join(map(str, k)): v.shape for k, v in nnx.to_flat_state(nnx.state(abstract("inceptionv3_wsol")))}
  assert i["Mixed_6e/branch7x7dbl_5/conv/kernel"] == (1, 7, 192, 192)
  assert i["SPG_A3_2b/conv/kernel"] == (3, 3, 1024, 1024)
  assert not any(k.startswith("Mixed_7") for k in i)
  assert abstract("vgg16_wsol").head.classifier.bias is not None  # the standard's fc has a bias
  # The standard's three dropouts act on maps (before each added conv and the class conv); torchvision's
  # Inception v3 drops the pooled vector.
  wsol = abstract("inceptionv3_wsol")
  assert [d.rate for d in wsol.dropouts] == [0.5] * 3 and wsol.head.dropout is None
  assert abstract("inceptionv3").head.dropout.rate == 0.5


def _set(var, value):
  var.set_value(jax.device_put(np.asarray(value, np.float32)))


def _torch_conv_bn(F, x, w, bn, stride=1, padding=0, eps=1e-5):
  gamma, beta, mean, var = bn
  return F.batch_norm(F.conv2d(x, w, stride=stride, padding=padding), mean, var, gamma, beta, False, 0.0, eps)


def _random_conv_bn(rng, conv, bn):
  """Fill a camjax conv + BatchNorm with random values; return the same as torch tensors (OIHW weight)."""
  import torch

  k = rng.normal(size=conv.kernel.get_value().shape).astype(np.float32) * 0.3
  stats = [rng.uniform(0.5, 1.5, size=bn.scale.get_value().shape), rng.normal(size=bn.bias.get_value().shape) * 0.1,
           rng.normal(size=bn.mean.get_value().shape) * 0.1, rng.uniform(0.5, 1.5, size=bn.var.get_value().shape)]
  stats = [s.astype(np.float32) for s in stats]
  _set(conv.kernel, k)
  for name, value in zip(("scale", "bias", "mean", "var"), stats):
    _set(getattr(bn, name), value)
  return torch.from_numpy(k.transpose(3, 2, 0, 1).copy()), tuple(torch.from_numpy(s) for s in stats)


def test_bottleneck_matches_torch_functional_ops():
  """A downsampling Bottleneck (stride in the 3x3 conv, 1x1/2 shortcut) against torch's conv and batch_norm."""
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  rng = np.random.default_rng(0)
  block = nnx.eval_shape(lambda: resnet.Bottleneck(12, 4, stride=2, rngs=nnx.Rngs(0)))  # every value set below
  block.eval()
  w1, bn1 = _random_conv_bn(rng, block.conv1, block.bn1)
  w2, bn2 = _random_conv_bn(rng, block.conv2, block.bn2)
  w3, bn3 = _random_conv_bn(rng, block.conv3, block.bn3)
  wd, bnd = _random_conv_bn(rng, block.downsample[0], block.downsample[1])
  x = rng.normal(size=(2, 9, 9, 12)).astype(np.float32)
  tx = torch.from_numpy(x).permute(0, 3, 1, 2)
  y = F.relu(_torch_conv_bn(F, tx, w1, bn1))
  y = F.relu(_torch_conv_bn(F, y, w2, bn2, stride=2, padding=1))
  y = _torch_conv_bn(F, y, w3, bn3)
  want = F.relu(y + _torch_conv_bn(F, tx, wd, bnd, stride=2)).permute(0, 2, 3, 1).numpy()
  got = np.asarray(FORWARD(block, x))
  assert got.shape == (2, 5, 5, 16)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_wsol_mixed_6a_and_branch_pools_match_torch():
  """The standard's Mixed_6a (stride 1, padding 1: the map keeps its size) and the padded 3x3 average pool."""
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  rng = np.random.default_rng(1)
  block = nnx.eval_shape(lambda: inception.InceptionB(6, c=lambda n: max(1, n // 32), stride=1, padding=1,
                                                      rngs=nnx.Rngs(0)))
  block.eval()
  params = {name: _random_conv_bn(rng, getattr(block, name).conv, getattr(block, name).bn)
            for name in ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")}
  x = rng.normal(size=(2, 7, 7, 6)).astype(np.float32)
  tx = torch.from_numpy(x).permute(0, 3, 1, 2)
  unit = lambda t, name, **kw: F.relu(_torch_conv_bn(F, t, *params[name], eps=1e-3, **kw))  # noqa: E731
  d = unit(unit(unit(tx, "branch3x3dbl_1"), "branch3x3dbl_2", padding=1), "branch3x3dbl_3", padding=1)
  want = torch.cat([unit(tx, "branch3x3", padding=1), d, F.max_pool2d(tx, 3, 1, 1)], 1).permute(0, 2, 3, 1).numpy()
  got = np.asarray(FORWARD(block, x))
  assert got.shape == (2, 7, 7, 12 + 3 + 6)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  pooled = np.asarray(jax.jit(inception.avg_pool_3x3)(x))
  np.testing.assert_allclose(pooled, F.avg_pool2d(tx, 3, 1, 1).permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, kw, size, side", [
    ("resnet50_wsol", {"large_feature_map": False}, 64, 4),
    ("vgg16_wsol", {}, 32, 4),
    ("inceptionv3_wsol", {"large_feature_map": False}, 64, 4),
])
def test_cam_identity_and_the_standards_cam(name, kw, size, side):
  """logits = mean(CAM) + bias; the standard's CAM is the same map scaled (ResNet, VGG) or shifted (Inception)."""
  model = materialize(abstract(name, num_classes=5, width_mult=1 / 16, **kw))
  images = jax.device_put(np.random.default_rng(2).uniform(size=(2, size, size, 3)).astype(np.float32))
  logits, features = FORWARD(model, images)
  kernel, bias = model.cam_weights()
  every_class = np.tile(np.arange(5, dtype=np.int32), (2, 1))
  maps = np.asarray(jax.jit(maps_from_features)(features, kernel, every_class), np.float64)
  kernel, bias = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
  assert maps.shape == (2, 5, side, side)
  np.testing.assert_allclose(logits, maps.mean(axis=(2, 3)) + bias, rtol=1e-4, atol=1e-5)
  f = np.asarray(features, np.float64)
  if name == "inceptionv3_wsol":  # its class map is a 1x1 conv with bias
    standard = np.einsum("bhwk,kc->bchw", f, kernel) + bias[None, :, None, None]
    np.testing.assert_allclose(standard, maps + bias[None, :, None, None], rtol=1e-4, atol=1e-5)
  else:  # ResNetCam / VggCam: mean over channels of w_c * f
    standard = (f[:, None] * kernel.T[None, :, None, None, :]).mean(-1)
    np.testing.assert_allclose(standard * f.shape[-1], maps, rtol=1e-4, atol=1e-5)


def test_cam_and_methods_run_unchanged_on_vgg16_wsol():
  """camjax.cam gives the same maps; HiResCAM at cam_conv (pre-ReLU, so its gradient is 0 where the ReLU is off)
  is CAM / (h*w), as at the pooled layer of any GAP network."""
  model = materialize(abstract("vgg16_wsol", num_classes=5, width_mult=1 / 16))
  images = jax.device_put(np.random.default_rng(2).uniform(size=(2, 32, 32, 3)).astype(np.float32))
  ids = np.asarray([1, 3], np.int32)
  out = class_activation_maps(model, images, class_ids=ids, upsample=False)
  _, bias = model.cam_weights()
  chosen = np.asarray(out.logits)[[0, 1], [1, 3]]
  np.testing.assert_allclose(chosen, np.asarray(out.maps)[:, 0].mean(axis=(1, 2)) + np.asarray(bias)[[1, 3]],
                             rtol=1e-4, atol=1e-5)
  hires, logits = methods.hires_cam(model, images, layer="cam_conv", class_ids=ids, relu=False)
  np.testing.assert_allclose(logits, out.logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(hires), np.asarray(out.maps) / 16, rtol=1e-3, atol=1e-6)
