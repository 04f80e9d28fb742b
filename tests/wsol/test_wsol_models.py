"""The WSOL architectures (ADL, ACoL, SPG) on small_gap and the standard's backbones.

small_gap runs: a jitted train-mode forward and loss gradient per architecture,
the ADL key through ``ModelDef``, the class-map hook. The full-size backbones
are only traced: parameter counts against the reference definitions and map
sizes at 224 px.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from camjax import cam, models
from camjax.models import layers, vgg
from camjax.models.base import NotCamCompatible
from camjax.models.layers import count_params
from camjax.train.state import ModelDef
from camjax.weights import load_pretrained
from camjax.wsol import acol, spg
from test_models import materialize

SMALL = dict(widths=(4, 8), blocks_per_stage=1)
IMAGES = jax.device_put(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32))
LABELS = jnp.asarray([2, 0])


@functools.lru_cache(maxsize=None)
def small(architecture, **kw):
  """A tiny small_gap of ``architecture`` with host-made values (same parameters for every architecture's trunk)."""
  return nnx.eval_shape(lambda: models.create("small_gap", num_classes=3, architecture=architecture, **SMALL, **kw))


def _loss(model, images, labels, architecture):
  if architecture == "acol":
    return acol.acol_loss(model.wsol_outputs(images, labels), labels)
  if architecture == "spg":
    return spg.spg_loss(model.wsol_outputs(images, labels), labels)
  return optax.softmax_cross_entropy_with_integer_labels(model(images)[0], labels).mean()


@pytest.mark.parametrize("architecture", acol.ARCHITECTURES)
def test_small_gap_trains_and_evaluates_in_every_architecture(architecture):
  model = materialize(small(architecture))
  model_def = ModelDef(model)
  params, stats, other = model_def.split(model)

  @jax.jit
  def step(params, stats, other):
    def loss_fn(p):
      net = model_def.merge(p, stats, other, train=True)
      return _loss(net, IMAGES, LABELS, architecture)
    return jax.value_and_grad(loss_fn)(params)

  loss, grads = step(params, stats, other)
  assert np.isfinite(float(loss)) and float(loss) > 0
  flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(grads)[0]}
  assert all(np.isfinite(g).all() for g in flat.values())
  # Every layer the method adds takes part in its loss (SPG's score maps, both ACoL branches).
  for path, g in flat.items():
    if "kernel" in path:
      assert np.abs(g).max() > 0, path
  logits, features = nnx.jit(lambda m, x: m(x))(model_def.merge(params, stats, other, train=False), IMAGES)
  assert logits.shape == (2, 3) and features.shape == (2, 8, 8, 8)
  assert hasattr(model, "wsol_outputs") == (architecture in ("acol", "spg"))
  assert hasattr(model, "class_maps") == (architecture == "acol")


def test_small_gap_architectures_share_the_trunk_and_add_the_standards_layers():
  paths = {a: {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(small(a), nnx.Param))}
           for a in acol.ARCHITECTURES}
  trunk = {p for p in paths["cam"] if not p.startswith("head/")}
  assert paths["adl"] == paths["cam"]  # ADL has no parameters
  assert all(trunk <= paths[a] for a in acol.ARCHITECTURES)
  assert {p.split("/")[1] for p in paths["acol"] - trunk} == {"classifier_A", "classifier_B"}
  assert {p.split("/")[1] for p in paths["spg"] - paths["cam"]} == {"SPG_B_1a", "SPG_B_2a", "SPG_B_shared", "SPG_C"}
  shapes = {"/".join(map(str, k)): v.shape for k, v in nnx.to_flat_state(nnx.state(small("spg"), nnx.Param))}
  assert shapes["head/SPG_B_1a/conv/kernel"] == (3, 3, 4, 8)  # reads the end of the first stage (4 channels)
  assert shapes["head/SPG_B_shared/score/kernel"] == (1, 1, 8, 1)
  assert [d.threshold for d in small("adl").adl] == [0.9, 0.9] and small("adl").adl_blocks == (0, 1)


def test_adl_is_the_identity_in_eval_and_draws_from_the_models_state_in_train():
  cam_net, adl_net = materialize(small("cam")), materialize(small("adl"))
  cam_net.eval()
  adl_net.eval()
  forward = nnx.jit(lambda m, x: m(x))
  for got, want in zip(forward(adl_net, IMAGES), forward(cam_net, IMAGES)):
    np.testing.assert_array_equal(got, want)
  adl_net.train()
  model_def = ModelDef(adl_net)
  copy = model_def.merge(*model_def.split(adl_net), train=True)
  train_forward = nnx.jit(lambda m, x: m(x)[0])
  first, second = train_forward(adl_net, IMAGES), train_forward(adl_net, IMAGES)
  np.testing.assert_array_equal(train_forward(copy, IMAGES), first)
  np.testing.assert_array_equal(train_forward(copy, IMAGES), second)
  # The draws move on with the stream: some of 12 calls differ from the eval output (the importance map
  # alone, or a drop, both change the features).
  outputs = [np.asarray(train_forward(adl_net, IMAGES)) for _ in range(12)]
  assert len({o.tobytes() for o in outputs}) > 1


def test_class_map_hook_serves_acol_maps_and_cam_for_the_rest():
  ids = jnp.asarray([[0, 1, 2]] * 2)
  hook = nnx.jit(lambda m, x, i: (m(x), cam.class_maps(m, m(x)[1], i)))
  net = materialize(small("acol"))
  out = cam.class_activation_maps(net, IMAGES, class_ids=ids, upsample=False)
  net.eval()
  (_, features), maps = hook(net, IMAGES, ids)
  np.testing.assert_allclose(out.maps, maps, rtol=1e-6)
  np.testing.assert_allclose(maps, nnx.jit(lambda m, f, i: m.head.class_maps(f, i))(net, features, ids), rtol=1e-6)
  assert np.asarray(maps).min() >= 0 and np.allclose(np.asarray(maps).max(axis=(2, 3)), 1.0)  # max of normalised maps
  with pytest.raises(NotCamCompatible, match="class_maps"):
    cam.cam_weights(net)
  for architecture in ("cam", "spg"):
    other = materialize(small(architecture))
    other.eval()
    (logits, features), maps = hook(other, IMAGES, ids)
    kernel, bias = cam.cam_weights(other)
    np.testing.assert_allclose(maps, cam.maps_from_features(features, kernel, ids), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(maps).mean(axis=(2, 3)) + np.asarray(bias), logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw, message", [
    (dict(architecture="has"), r"architecture must be one of \('cam', 'acol', 'spg', 'adl'\), got 'has'"),
    (dict(architecture="spg", widths=(8,)), "give widths two or more entries"),
    (dict(adl_drop_rate=-1.0), r"adl_drop_rate must be a number in \[0, 1\]"),
])
def test_small_gap_rejects_bad_architecture_values_with_one_line(kw, message):
  with pytest.raises(ValueError, match=message):
    models.create("small_gap", num_classes=3, **{**SMALL, **kw})


# The standard's backbones, traced only.

# wsolevaluation's wsol.vgg16 / resnet50 / inception_v3(architecture_type, num_classes=...) counted once with torch
# (sum of p.numel() over model.parameters(); the same with and without large_feature_map). ADL adds no parameter.
REFERENCE_PARAMS = {
    ("vgg16_wsol", "acol", 1000): 45_080_336, ("vgg16_wsol", "acol", 200): 43_440_336,
    ("vgg16_wsol", "spg", 1000): 29_387_562, ("vgg16_wsol", "spg", 200): 28_977_162,
    ("vgg16_wsol", "adl", 1000): 20_459_304, ("vgg16_wsol", "adl", 200): 19_639_304,
    ("resnet50_wsol", "acol", 1000): 82_185_232, ("resnet50_wsol", "acol", 200): 80_545_232,
    ("resnet50_wsol", "spg", 1000): 63_310_890, ("resnet50_wsol", "spg", 200): 61_671_690,
    ("resnet50_wsol", "adl", 1000): 25_557_032, ("resnet50_wsol", "adl", 200): 23_917_832,
    ("inceptionv3_wsol", "acol", 1000): 44_050_096, ("inceptionv3_wsol", "acol", 200): 42_410_096,
    ("inceptionv3_wsol", "spg", 1000): 38_454_986, ("inceptionv3_wsol", "spg", 200): 37_634_986,
    ("inceptionv3_wsol", "adl", 1000): 26_507_976, ("inceptionv3_wsol", "adl", 200): 25_687_976,
}


@functools.lru_cache(maxsize=None)
def abstract(name, architecture, num_classes=1000, **kw):
  """Shape-only model (cached: the count and shape tests share the 1000-class ones)."""
  return nnx.eval_shape(lambda: models.create(name, num_classes=num_classes, architecture=architecture, **kw))


@pytest.mark.parametrize("name, architecture, num_classes", sorted(REFERENCE_PARAMS))
def test_parameter_counts_equal_the_reference_definitions(name, architecture, num_classes):
  assert count_params(abstract(name, architecture, num_classes)) == REFERENCE_PARAMS[name, architecture, num_classes]


def _traced(model, size=224):
  """Shapes of the eval forward's features and, for ACoL and SPG, of wsol_outputs and class maps, in one trace."""
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((1,), jnp.int32)
  model.eval()  # the shapes of train mode, traced without BatchNorm's batch statistics
  graphdef, state = nnx.split(model)

  def run(state, images, labels):
    net = nnx.merge(graphdef, state)
    features = net(images)[1]
    out = {"features": features}
    if net.architecture == "acol":
      out["class_maps"] = cam.class_maps(net, features, labels[:, None])
    if net.architecture in ("acol", "spg"):
      out.update(net.wsol_outputs(images, labels))
    return out

  return {k: v.shape for k, v in jax.eval_shape(run, state, images, labels).items()}


def _expected_shapes(architecture, side, channels, classes=1000):
  """The sides the reference definitions give at 224 px (hooked in torch): every map at the CAM map's side."""
  if architecture == "acol":
    return {"features": (1, side, side, channels), "class_maps": (1, 1, side, side), "logits": (1, classes),
            "logits_b": (1, classes), "maps_a": (1, side, side, classes), "maps_b": (1, side, side, classes)}
  if architecture == "spg":
    maps = {k: (1, side, side) for k in ("logits_b1", "logits_b2", "logits_c")}
    return {"features": (1, side, side, channels), "logits": (1, classes), "attention": (1, 224, 224),
            "fused_attention": (1, 224, 224), **maps}
  return {"features": (1, side, side, channels)}


# (name, architecture) -> channels of the features the head reads. ADL multiplies maps by a map of their size, so
# the ResNet and Inception ADL nets have the CAM nets' shapes (test_wsol_backbones); VGG's has its own layout.
FEATURE_CHANNELS = {("vgg16_wsol", "acol"): 512, ("vgg16_wsol", "spg"): 512, ("vgg16_wsol", "adl"): 1024,
                    ("resnet50_wsol", "acol"): 2048, ("resnet50_wsol", "spg"): 2048,
                    ("inceptionv3_wsol", "acol"): 768, ("inceptionv3_wsol", "spg"): 1024}


@pytest.mark.parametrize("name, architecture", sorted(FEATURE_CHANNELS))
def test_map_sizes_at_224_px_are_the_standards(name, architecture):
  """28x28 by a traced forward, as the reference definitions give (hooked in torch). Without ``large_feature_map``
  (14x14) VGG's layouts are checked below; ResNet and Inception keep their CAM nets' spatial path."""
  want = _expected_shapes(architecture, 28, FEATURE_CHANNELS[name, architecture])
  assert _traced(abstract(name, architecture)) == want


def _standard_vgg16_config(architecture, large_feature_map):
  """The standard's configs_dict entries for VGG16, written out (widths, "M" 2x2/2, "M1" 3x3/2/1, "M2" 3x3/1/1, "A")."""
  head = [64, 64, "M", 128, 128, "M", 256, 256, 256]
  four, five = [512] * 3, [512] * 3
  return {
      ("cam", True): head + ["M"] + four + five,
      ("cam", False): head + ["M"] + four + ["M"] + five,
      ("acol", True): [64, 64, "M1", 128, 128, "M1", 256, 256, 256, "M1"] + four + ["M2"] + five + ["M2"],
      ("acol", False): [64, 64, "M1", 128, 128, "M1", 256, 256, 256, "M1"] + four + ["M1"] + five + ["M2"],
      ("adl", True): head + ["M", "A"] + four + ["A"] + five + ["A"],
      ("adl", False): head + ["M", "A"] + four + ["A", "M"] + five + ["A"],
      # SPG's config ends at pool3; conv4_x and conv5_x are its SPG_A_1 / SPG_A_2, with a 3x3/2 pad 1 max pool
      # between them without large_feature_map.
      ("spg", True): head + ["M"] + four + five,
      ("spg", False): head + ["M"] + four + ["M1"] + five,
  }[architecture, large_feature_map]


@pytest.mark.parametrize("architecture", acol.ARCHITECTURES)
@pytest.mark.parametrize("large_feature_map", [True, False])
def test_vgg16_layouts_are_the_standards_configs(architecture, large_feature_map):
  widths = dict(zip(vgg._conv_names(), (w for stage in vgg.VGG16_STAGES for w in stage)))
  layout = vgg.vgg16_layout(architecture, pool4=not large_feature_map)
  assert [widths.get(e, e) for e in layout] == _standard_vgg16_config(architecture, large_feature_map)
  model = abstract("vgg16_wsol", architecture, large_feature_map=large_feature_map)
  assert model.features.layout == layout
  assert layers.map_size(model.backbone_ops, 224) == (28 if large_feature_map else 14)


@pytest.mark.parametrize("architecture, added", [
    ("acol", ["head.classifier_A", "head.classifier_B"]),
    ("spg", ["SPG_A_3.0", "SPG_A_3.1", "head.SPG_B_1a", "head.SPG_B_2a", "head.SPG_B_shared", "head.SPG_C",
             "head.classifier"]),
    ("adl", ["cam_conv", "head.classifier"]),
])
def test_torchvision_vgg16_file_loads_into_every_architecture(tmp_path, architecture, added):
  """The conv names stay: the standard's renames (features.17 -> SPG_A_1.0, ADL's shifted indices) are not needed."""
  torch = pytest.importorskip("torch")
  from test_wsol_weights import VGG16_CONVS, VGG16_WIDTHS, _fake, _hwio, _unloaded, _value

  shapes, cin = {}, 3
  for index, width in zip(VGG16_CONVS, VGG16_WIDTHS):
    shapes[f"features.{index}.weight"], shapes[f"features.{index}.bias"] = (width // 16, cin, 3, 3), (width // 16,)
    cin = width // 16
  sd = _fake(shapes, seed=3)
  torch.save(sd, tmp_path / "vgg16-fake.pth")
  model = abstract("vgg16_wsol", architecture, 10, width_mult=1 / 16)
  load_pretrained(model, tmp_path / "vgg16-fake.pth")
  assert sorted({".".join(p.split(".")[:-1][:2]) for p in _unloaded(model)}) == added  # layers, not leaves
  np.testing.assert_array_equal(_value(model.features.conv4_1.kernel), _hwio(sd, "features.17.weight"))
  np.testing.assert_array_equal(_value(model.features.conv5_3.bias), sd["features.28.bias"].numpy())


def _sixteenth(shapes):
  """A torchvision layout at 1/16 of every width but the RGB input, as ``width_mult=1/16`` builds it."""
  def scale(key, shape):
    if key.startswith("fc.") or key.endswith("tracked"):
      return shape if key.endswith("tracked") or key == "fc.bias" else (shape[0], shape[1] // 16)
    if len(shape) == 4:
      return (shape[0] // 16, shape[1] if shape[1] == 3 else shape[1] // 16, *shape[2:])
    return (shape[0] // 16,)
  return {k: scale(k, v) for k, v in shapes.items()}


@pytest.mark.parametrize("architecture, head, added", [
    # ACoL has no head.classifier for load_pretrained's 1000-way check: its head is left out by hand.
    ("acol", False, ["head.classifier_A", "head.classifier_B"]),
    ("spg", None, ["head.SPG_B_1a", "head.SPG_B_2a", "head.SPG_B_shared", "head.SPG_C", "head.classifier"]),
])
def test_torchvision_resnet50_file_loads_into_acol_and_spg(architecture, head, added):
  """Blocks keep torchvision's paths: the standard's renames (layer3.0 -> SPG_A1.0) and ADL's shifts are not needed."""
  pytest.importorskip("torch")
  from test_wsol_weights import _fake, _resnet50_shapes, _unloaded, _value

  sd = {k: v.numpy() for k, v in _fake(_sixteenth(_resnet50_shapes()), seed=4).items()}
  model = abstract("resnet50_wsol", architecture, 10, width_mult=1 / 16)
  load_pretrained(model, sd, head=head)
  assert sorted({".".join(p.split(".")[:-1][:2]) for p in _unloaded(model)}) == added
  np.testing.assert_array_equal(_value(model.layer3[0].conv2.kernel), sd["layer3.0.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(_value(model.layer4[2].bn3.var), sd["layer4.2.bn3.running_var"])


@pytest.mark.parametrize("architecture, added", [
    ("acol", ["head.classifier_A", "head.classifier_B"]),
    ("spg", ["SPG_A3_1b.conv", "SPG_A3_2b.conv", "head.SPG_B_1a", "head.SPG_B_2a", "head.SPG_B_shared", "head.SPG_C",
             "head.classifier"]),
])
def test_torchvision_inception_v3_file_loads_into_acol_and_spg(architecture, added):
  pytest.importorskip("torch")
  from test_wsol_weights import _fake, _inception_v3_shapes, _unloaded, _value

  shapes = {k: v for k, v in _inception_v3_shapes().items() if not k.startswith(("AuxLogits", "Mixed_7", "fc."))}
  sd = {k: v.numpy() for k, v in _fake(_sixteenth(shapes), seed=5).items()}
  model = abstract("inceptionv3_wsol", architecture, 10, width_mult=1 / 16)
  load_pretrained(model, sd)
  assert sorted({".".join(p.split(".")[:-1][:2]) for p in _unloaded(model)}) == added
  np.testing.assert_array_equal(_value(model.Mixed_6d.branch7x7_2.conv.kernel),
                                sd["Mixed_6d.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
