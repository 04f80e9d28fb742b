"""The network zoo: parameter counts, mapping resolutions, heads, pooling variants, modes.

Full-size networks are only traced (``nnx.eval_shape`` / ``jax.eval_shape``);
the forwards that run use ``width_mult`` to shrink every width.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from camjax import models
from camjax.models import alexnet, googlenet, layers, nin, vgg
from camjax.models.layers import count_params

PUBLISHED = {"alexnet": 61_100_840, "vgg16": 138_357_544, "googlenet": 6_624_904}
GAP_NETS = ("alexnet_gap", "alexnet_star_gap", "vgg16_gap", "googlenet_gap", "googlenet", "nin")


@functools.lru_cache(maxsize=None)
def abstract(name, num_classes=1000, **kw):
  """Shape-only model (cached: tests only read it)."""
  return nnx.eval_shape(lambda: models.create(name, num_classes=num_classes, **kw))


def abstract_forward(model, size, batch=2, dtype=jnp.float32):
  graphdef, state = nnx.split(model)
  images = jax.ShapeDtypeStruct((batch, size, size, 3), dtype)
  return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, images)


def materialize(model, seed=0):
  """Abstract model -> concrete one with N(0, 1/fan_in) host-made values (no init compiles)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(seed)
    name = [k.key for k in path if hasattr(k, "key")][-1]
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
    if name in ("var", "scale"):
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.asarray(rng.normal(size=leaf.shape) * 0.1 if name == "bias" else np.zeros(leaf.shape), leaf.dtype)

  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


def abstract_call(model, fn):
  graphdef, state = nnx.split(model)
  return jax.eval_shape(lambda s: fn(nnx.merge(graphdef, s)), state)


def fc_params(model):
  return sum(count_params(getattr(model, n)) for n in ("fc6", "fc7", "fc8"))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_originals_match_published_parameter_counts(name):
  assert count_params(abstract(name)) == PUBLISHED[name]


def test_gap_parameter_counts_table():
  counts = {name: count_params(abstract(name)) for name in (*PUBLISHED, *GAP_NETS)}
  gmp = {name: count_params(abstract(name, pooling="gmp")) for name in GAP_NETS}
  assert gmp == {name: counts[name] for name in GAP_NETS}
  cam_conv = lambda cin: 9 * cin * 1024 + 1024  # noqa: E731
  # GAP net = the original's conv layers + the 1024-unit 3x3 conv + a bias-free 1024 x 1000 classifier.
  assert counts["vgg16_gap"] == PUBLISHED["vgg16"] - fc_params(abstract("vgg16")) + cam_conv(512) + 1024 * 1000
  assert counts["alexnet_gap"] == PUBLISHED["alexnet"] - fc_params(abstract("alexnet")) + cam_conv(256) + 1024 * 1000
  extra = 9 * 256 * 512 + 512 + 9 * 512 * 512 + 512
  assert counts["alexnet_star_gap"] == counts["alexnet_gap"] + extra + 9 * (512 - 256) * 1024
  g = abstract("googlenet")
  inception5 = count_params(g.inception5a) + count_params(g.inception5b) + 1024 * 1000 + 1000
  assert counts["googlenet_gap"] == PUBLISHED["googlenet"] - inception5 + cam_conv(832) + 1024 * 1000
  reduction = 1 - counts["vgg16_gap"] / counts["vgg16"]
  print("\nmodel             params (1000 classes)")
  for name, n in counts.items():
    print(f"{name:17s} {n:>12,d}")
  print(f"vgg16_gap has {reduction:.1%} fewer parameters than vgg16")
  assert 0.8 < reduction < 0.9


@pytest.mark.parametrize(
    "name, size, side, channels, ops",
    [
        ("alexnet_gap", 227, 13, 1024, alexnet.CONV5_OPS),
        ("alexnet_gap", 224, 13, 1024, alexnet.CONV5_OPS),
        ("alexnet_star_gap", 227, 13, 1024, alexnet.CONV5_OPS),
        ("alexnet", 227, 13, 256, alexnet.CONV5_OPS),
        ("vgg16_gap", 224, 14, 1024, vgg.CONV5_OPS),
        ("vgg16", 224, 14, 512, vgg.CONV5_OPS),
        ("googlenet_gap", 224, 14, 1024, googlenet.INCEPTION4E_OPS),
        ("googlenet", 224, 7, 1024, googlenet.INCEPTION4E_OPS + (layers.Op("pool", 2, 2, 0, True),)),
        ("nin", 224, 6, 1000, nin.CLASS_MAP_OPS),
        ("nin", 227, 6, 1000, nin.CLASS_MAP_OPS),
    ],
)
def test_mapping_resolution(name, size, side, channels, ops):
  logits, features = abstract_forward(abstract(name), size)
  assert logits.shape == (2, 1000)
  assert features.shape == (2, side, side, channels)
  assert layers.map_size(ops, size) == side


@pytest.mark.parametrize("name", sorted(PUBLISHED) + list(GAP_NETS[:-1]) + ["nin"])
def test_smallest_input_runs_and_one_less_fails_clearly(name):
  model = abstract(name)
  logits, _ = abstract_forward(model, model.min_size)
  assert logits.shape == (2, 1000)
  with pytest.raises(ValueError, match=f"at least {model.min_size}x{model.min_size}"):
    abstract_forward(model, model.min_size - 1)


@pytest.mark.parametrize("name, size", [("alexnet", 300), ("vgg16", 256), ("alexnet", 100), ("vgg16", 100)])
def test_fc_baselines_accept_other_sizes(name, size):
  logits, _ = abstract_forward(abstract(name), size)
  assert logits.shape == (2, 1000)


@pytest.mark.parametrize("name", ["googlenet_gap", "vgg16"])
def test_dtype_override_keeps_float32_params(name):
  model = abstract(name, dtype=jnp.bfloat16)
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
  logits, features = abstract_forward(model, 224)
  assert logits.dtype == jnp.bfloat16 and features.dtype == jnp.bfloat16


@pytest.mark.parametrize("name", GAP_NETS)
def test_unknown_pooling_raises(name):
  with pytest.raises(ValueError, match="pooling must be one of"):
    abstract(name, pooling="avg")


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_fc_baselines_reject_gmp_and_cam(name):
  with pytest.raises(ValueError, match="no meaning"):
    abstract(name, pooling="gmp")
  with pytest.raises(models.NotCamCompatible, match="Grad-CAM"):
    abstract(name).cam_weights()


@pytest.mark.parametrize("name, features, gap", [("alexnet", "conv5", "alexnet_gap or alexnet_star_gap"),
                                                 ("vgg16", "conv5_3", "vgg16_gap")])
def test_fc_baselines_name_their_features_and_gap_variants(name, features, gap):
  with pytest.raises(ValueError) as err:
    abstract(name, pooling="gmp")
  assert str(err.value) == (f"{name} has a fully connected head, so pooling='gmp' has no meaning; "
                            f"use {gap} for global max pooling")
  with pytest.raises(models.NotCamCompatible) as err:
    abstract(name).cam_weights()
  assert str(err.value) == (f"{name} has a fully connected head, so CAM does not apply; use Grad-CAM from "
                            f"camjax.saliency on its {features} features, or a GAP model such as {gap.split()[0]}")


def test_imagenet_statistics_have_one_definition():
  from camjax.data import transforms
  from camjax.models import efficientnet_lite
  from camjax.weights import torchvision

  assert efficientnet_lite.IMAGENET_MEAN is transforms.IMAGENET_MEAN
  assert efficientnet_lite.IMAGENET_STD is transforms.IMAGENET_STD
  assert torchvision.IMAGENET == (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
  for fmt in ("torchvision_vgg16", "torchvision_alexnet", "efficientnet_lite"):
    assert torchvision.INPUT_NORMALIZATION[fmt] is torchvision.IMAGENET


def test_unknown_name_lists_the_zoo():
  with pytest.raises(ValueError) as err:
    models.create("resnet_gap", num_classes=10)
  for name in ("alexnet", "alexnet_gap", "alexnet_star_gap", "vgg16", "vgg16_gap", "googlenet", "googlenet_gap", "nin"):
    assert name in str(err.value)


@pytest.mark.parametrize("name, bias", [("googlenet", True), ("googlenet_gap", False), ("vgg16_gap", False)])
def test_cam_weights_shapes(name, bias):
  model = abstract(name, num_classes=7)
  kernel, b = abstract_call(model, lambda m: m.cam_weights())
  assert kernel.shape == (1024, 7) and b.shape == (7,)
  assert (model.head.classifier.bias is not None) == bias
  flipped = abstract(name, num_classes=7, use_bias=not bias)
  assert (flipped.head.classifier.bias is not None) == (not bias)


def test_torchvision_layout_names_and_shapes():
  """Module paths and kernel shapes that a torchvision state-dict key map relies on."""
  g = nnx.state(abstract("googlenet"))
  flat = {"/".join(map(str, k)): v.shape for k, v in nnx.to_flat_state(g)}
  assert flat["conv1/conv/kernel"] == (7, 7, 3, 64)
  assert flat["inception3a/branch3/1/conv/kernel"] == (3, 3, 16, 32)  # torchvision's 3x3 "5x5" branch
  assert flat["inception4e/branch4/1/conv/kernel"] == (1, 1, 528, 128)
  assert flat["inception5b/branch2/1/bn/scale"] == (384,)
  assert flat["head/classifier/kernel"] == (1024, 1000)
  assert vgg.TORCH_NAMES["conv5_3"] == "features.28" and vgg.TORCH_NAMES["fc8"] == "classifier.6"
  v = abstract("vgg16")
  assert v.features.conv5_3.kernel.shape == (3, 3, 512, 512) and v.fc6.kernel.shape == (25088, 4096)
  a = abstract("alexnet")
  assert a.features.conv2.kernel.shape == (5, 5, 64, 192) and a.fc6.kernel.shape == (9216, 4096)


def test_pool_helpers_match_torch():
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).normal(size=(2, 13, 11, 3)).astype(np.float32)
  tx = torch.from_numpy(x).permute(0, 3, 1, 2)
  for window, stride, pad in ((3, 2, 0), (3, 1, 1), (2, 2, 0)):
    ref = torch.nn.functional.max_pool2d(tx, window, stride, pad, ceil_mode=True).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(np.asarray(layers.max_pool(jnp.asarray(x), window, stride, pad, True)), ref)
  for out in ((6, 6), (4, 5)):
    ref = torch.nn.functional.adaptive_avg_pool2d(tx, out).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(layers.adaptive_avg_pool(jnp.asarray(x), out)), ref, rtol=1e-5, atol=1e-6)
  flat = np.asarray(layers.flatten_chw(jnp.asarray(x)))
  np.testing.assert_array_equal(flat, tx.reshape(2, -1).numpy())


def test_non_overlapping_max_pool_matches_torch_in_values_and_gradients():
  """VGG's 2x2/2 pool takes the strided-slice path (odd sides are cropped, as torch's floor mode does)."""
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).normal(size=(2, 13, 11, 3)).astype(np.float32)
  tx = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_(True)
  ref = torch.nn.functional.max_pool2d(tx, 2, 2)
  weights = np.random.default_rng(1).normal(size=ref.shape).astype(np.float32)
  (ref * torch.from_numpy(weights)).sum().backward()
  y, vjp = jax.vjp(lambda v: layers.max_pool(v, 2, 2), jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(y), ref.detach().permute(0, 2, 3, 1).numpy())
  (grad,) = vjp(jnp.asarray(weights.transpose(0, 2, 3, 1)))
  np.testing.assert_array_equal(np.asarray(grad), tx.grad.permute(0, 2, 3, 1).numpy())


def test_gmp_and_gap_share_params_and_differ_in_output():
  images = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 64, 64, 3)), jnp.float32)
  gap = models.create("alexnet_gap", num_classes=5, pooling="gap", width_mult=1 / 16, use_bias=True)
  gmp = models.create("alexnet_gap", num_classes=5, pooling="gmp", width_mult=1 / 16, use_bias=True)
  for a, b in zip(jax.tree.leaves(nnx.state(gap, nnx.Param)), jax.tree.leaves(nnx.state(gmp, nnx.Param))):
    np.testing.assert_array_equal(a, b)
  forward = nnx.jit(lambda m, x: m(x))
  (la, fa), (lb, fb) = forward(gap, images), forward(gmp, images)
  np.testing.assert_array_equal(fa, fb)
  kernel, bias = map(np.asarray, gap.cam_weights())
  fa, fb = np.asarray(fa, np.float64), np.asarray(fb, np.float64)
  np.testing.assert_allclose(la, fa.mean(axis=(1, 2)) @ kernel + bias, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(lb, fb.max(axis=(1, 2)) @ kernel + bias, rtol=1e-4, atol=1e-5)
  assert not np.allclose(la, lb)


def test_nin_class_maps_dropout_and_identity_cam():
  images = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 64, 64, 3)), jnp.float32)
  model = materialize(abstract("nin", num_classes=4, width_mult=1 / 16))
  forward = nnx.jit(lambda m, x: m(x))
  model.train()
  (t1, _), (t2, _) = forward(model, images), forward(model, images)
  assert not np.allclose(t1, t2)  # fresh dropout masks
  model.eval()
  (e1, maps), (e2, _) = forward(model, images), forward(model, images)
  np.testing.assert_array_equal(e1, e2)
  assert maps.shape == (2, 1, 1, 4)  # 64 px: 14 -> 7 -> 3 -> 1
  kernel, bias = map(np.asarray, model.cam_weights())
  np.testing.assert_array_equal(kernel, np.eye(4))
  np.testing.assert_allclose(e1, np.asarray(maps).mean(axis=(1, 2)) @ kernel + bias, rtol=1e-6)


def test_googlenet_gap_runs_in_train_and_eval():
  model = materialize(abstract("googlenet_gap", num_classes=3, width_mult=1 / 16))
  images = jnp.asarray(np.random.default_rng(3).uniform(size=(4, 64, 64, 3)), jnp.float32)
  forward = nnx.jit(lambda m, x: m(x))
  before = np.asarray(model.conv1.bn.mean[...])
  model.train()
  train_logits, features = forward(model, images)
  assert features.shape == (4, 4, 4, 64)  # 64 px: 32 -> 16 -> 8 -> 4 (pool4 removed)
  assert not np.allclose(before, model.conv1.bn.mean[...])  # running statistics moved
  model.eval()
  e1, _ = forward(model, images)
  e2, _ = forward(model, images)
  np.testing.assert_array_equal(e1, e2)
  assert not np.allclose(train_logits, e1)  # batch statistics vs running averages
  assert np.isfinite(np.asarray(e1)).all() and np.std(np.asarray(e1)) > 0


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_fc_baselines_run_with_dropout_in_train_only(name):
  model = materialize(abstract(name, num_classes=3, width_mult=1 / 16))
  images = jnp.asarray(np.random.default_rng(4).uniform(size=(2, 64, 64, 3)), jnp.float32)
  forward = nnx.jit(lambda m, x: m(x))
  model.train()
  t1, features = forward(model, images)
  t2, _ = forward(model, images)
  assert features.shape == ((2, 3, 3, 16) if name == "alexnet" else (2, 4, 4, 32))
  assert not np.allclose(t1, t2)
  model.eval()
  np.testing.assert_array_equal(forward(model, images)[0], forward(model, images)[0])


def test_small_gap_per_stage_blocks_and_plain_last_block():
  model = models.create("small_gap", num_classes=3, widths=(4, 8, 8), blocks_per_stage=(1, 2, 3), last_batch_norm=False)
  assert len(model.blocks) == 6
  assert [b.norm is None for b in model.blocks] == [False] * 5 + [True]
  assert model.blocks[-1].conv.bias is not None  # a plain conv keeps its bias
  logits, features = model(jnp.ones((1, 32, 32, 3)))
  assert logits.shape == (1, 3) and features.shape == (1, 8, 8, 8)
  with pytest.raises(ValueError, match="blocks_per_stage"):
    models.create("small_gap", num_classes=3, widths=(4, 8), blocks_per_stage=(1, 2, 3))
