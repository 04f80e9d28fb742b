"""VGG16 family: the fully connected original, VGGnet-GAP (CAM paper, Sec. 3.1) and the WSOL standard's VGG16.

The 13 conv layers (3x3 pad 1, ReLU, no BatchNorm) are torchvision's ``vgg16``
in the same order and shapes, so torchvision weights map one to one (see
``TORCH_NAMES``; kernels transpose OIHW -> HWIO, (out, in) -> (in, out)).
The baseline's ``fc6`` reads the pooled map flattened in NCHW order, as torch does
(``camjax.models.heads.FcHead``). The WSOL methods change only what sits
between the conv layers (``vgg16_layout``) and what follows conv5_3, so every
architecture keeps the conv names and torchvision's weights.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
from flax import nnx

from camjax.models.conv import Conv
from camjax.models.heads import FcHead, GapHead
from camjax.models.inception import avg_pool_3x3
from camjax.models.layers import CONV_INIT, Op, check_images, max_pool, scaled
from camjax.models.registry import register
from camjax.wsol import acol, adl, spg

# (stage, widths); a 2x2/2 max pool follows every stage (pool5 only in the baseline).
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _conv_names() -> list[str]:
  return [f"conv{s + 1}_{i + 1}" for s, stage in enumerate(VGG16_STAGES) for i in range(len(stage))]


def _torch_names() -> dict[str, str]:
  names, index = {}, 0
  for s, stage in enumerate(VGG16_STAGES):
    for i in range(len(stage)):
      names[f"conv{s + 1}_{i + 1}"] = f"features.{index}"
      index += 2  # conv, ReLU
    index += 1  # max pool
  names.update(fc6="classifier.0", fc7="classifier.3", fc8="classifier.6")
  return names


TORCH_NAMES = _torch_names()
CONV5_OPS = tuple(Op("pool", 2, 2) for _ in range(4))  # pool1..pool4; the 3x3 pad 1 convs keep size
# The WSOL standard's max pools by its config names: (window, stride, padding).
POOLS = {"M": (2, 2, 0), "M1": (3, 2, 1), "M2": (3, 1, 1)}


def vgg16_layout(architecture: str = "cam", pool4: bool = True) -> tuple[str, ...]:
  """The WSOL standard's VGG16 config for ``architecture``: conv names, pools (``POOLS``) and ``"A"`` (ADL).

  ``pool4=False`` is its 28x28 config (``large_feature_map``). cam: 2x2/2
  pools before stages 2-5 (none before stage 5 without pool4); adl: the same
  with ADL after pool3, after conv4_3 and after conv5_3; acol: 3x3/2 pad 1
  pools ("M1"), a 3x3/1 pad 1 pool ("M2") in place of a dropped pool4 and
  after conv5_3; spg: 2x2/2 pools before stages 2-4 and a 3x3/2 pad 1 pool
  before stage 5 (none without pool4).
  """
  early = "M1" if architecture == "acol" else "M"
  if pool4:
    fourth = "M" if architecture in ("cam", "adl") else "M1"
  else:
    fourth = "M2" if architecture == "acol" else None
  names = iter(_conv_names())
  layout = []
  for s, stage in enumerate(VGG16_STAGES):
    if s in (1, 2, 3):
      layout.append(early)
    if architecture == "adl" and s in (3, 4):
      layout.append("A")
    if s == 4 and fourth:
      layout.append(fourth)
    layout.extend(next(names) for _ in stage)
  layout.extend({"acol": ["M2"], "adl": ["A"]}.get(architecture, []))
  return tuple(layout)


def layout_ops(layout: Sequence[str]) -> tuple[Op, ...]:
  """The resolution-changing layers of a layout (its pools; the 3x3 pad 1 convs keep the size)."""
  return tuple(Op("pool", *POOLS[entry]) for entry in layout if entry in POOLS)


class VGG16Features(nnx.Module):
  """conv1_1..conv5_3 with ReLU and what ``layout`` puts between them; returns the last layer's map.

  The default layout is pool1..pool4 (pool1..pool3 without ``pool4``); a WSOL
  layout (``vgg16_layout``) may hold other pools and ADL layers (``adl``).
  """

  def __init__(self, *, width_mult: float = 1.0, in_channels: int = 3, pool4: bool = True,
               layout: Sequence[str] | None = None, adl_drop_rate: float = adl.DROP_RATE,
               adl_threshold: float = adl.THRESHOLD, dtype: Any = None, rngs: nnx.Rngs):
    self.layout = vgg16_layout("cam", pool4) if layout is None else tuple(layout)
    cin = in_channels
    for name, width in zip(_conv_names(), (w for stage in VGG16_STAGES for w in stage)):
      width = scaled(width, width_mult)
      conv = nnx.Conv(cin, width, (3, 3), padding=1, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs)
      setattr(self, name, conv)
      cin = width
    self.out_channels = cin
    if "A" in self.layout:
      self.adl = nnx.List([adl.ADL(adl_drop_rate, adl_threshold, rngs=rngs) for e in self.layout if e == "A"])

  def __call__(self, x: jax.Array, start: int = 0, stop: int | None = None) -> jax.Array:
    """Runs ``layout[start:stop]`` (the whole stack by default)."""
    for i, entry in enumerate(self.layout[start:stop], start):
      if entry in POOLS:
        x = max_pool(x, *POOLS[entry])
      elif entry == "A":
        x = self.adl[self.layout[:i].count("A")](x)
      else:
        x = nnx.relu(getattr(self, entry)(x))
    return x


@register("vgg16_gap")
class VGG16Gap(GapHead):
  """VGGnet-GAP: conv1_1..conv5_3 with pool5 and the FC layers removed (224 px -> 14x14),
  then a 3x3/1 pad 1 conv with 1024 units + ReLU, global pooling and a linear classifier.

  ``pooling="gmp"`` gives global max pooling; ``use_bias`` switches the classifier
  bias (off by default); ``width_mult`` scales every width.
  """

  name = "vgg16_gap"
  features_class = VGG16Features
  backbone_ops = CONV5_OPS


@register("vgg16_wsol")
class VGG16Wsol(acol.ArchitectureSwitch, GapHead):
  """The WSOL standard's VGG16 (its ``VggCam``): VGGnet-GAP with a classifier bias, and pool4 removed
  with ``large_feature_map`` (default; 224 px -> 28x28, else 14x14 as vgg16_gap).

  conv1_1..conv5_3 -> 3x3/1 pad 1 conv to 1024 units (``cam_conv``, the
  standard's ``conv6``) + ReLU -> global pooling -> linear with bias. The
  standard's CAM is the channel mean of ``w_c * f``: camjax's CAM divided by
  1024, the same map after min-max normalisation.

  ``architecture`` builds the standard's other VGG16s (``camjax.wsol``), each
  with its own layout of pools (``vgg16_layout``):

  - ``"adl"``: ADL after pool3, conv4_3 and conv5_3, then as ``"cam"``;
  - ``"acol"``: ACoL's pools, a 3x3/1 pad 1 average pool after the last one,
    then two branches (3x3 conv 1024, 3x3 conv 1024, 1x1 conv to the classes)
    as ``head`` in place of ``cam_conv`` and the classifier;
  - ``"spg"``: conv4_x (the standard's ``SPG_A_1``) -> ``SPG_B_1a``, conv5_x
    (``SPG_A_2``) -> ``SPG_B_2a``, two 3x3 convs to 512 (``SPG_A_3``) give
    ``features`` for the classifier (``SPG_A4``) and ``SPG_C``.

  Map sizes are those of ``"cam"``: 28x28 at 224 px, 14x14 without ``large_feature_map``.
  """

  name = "vgg16_wsol"
  default_use_bias = True

  def __init__(self, *, large_feature_map: bool = True, architecture: str = "cam", acol_threshold: float = 0.7,
               adl_drop_rate: float = 0.75, adl_threshold: float = 0.9, num_classes: int, pooling: str = "gap",
               use_bias: bool | None = None, width_mult: float = 1.0, dtype: Any = None, rngs: nnx.Rngs,
               **kwargs: Any):
    self.architecture = acol.check_architecture(architecture, acol_threshold=acol_threshold,
                                                adl_drop_rate=adl_drop_rate, adl_threshold=adl_threshold)
    self.large_feature_map = bool(large_feature_map)
    self.layout = vgg16_layout(architecture, pool4=not self.large_feature_map)
    self.backbone_ops = layout_ops(self.layout)
    self.adl_args = (adl_drop_rate, adl_threshold)
    if architecture in ("acol", "spg"):
      self.cam_width = None  # their own layers follow conv5_3
    super().__init__(num_classes=num_classes, pooling=pooling, use_bias=use_bias, width_mult=width_mult, dtype=dtype,
                     rngs=rngs, **kwargs)
    # GapHead built the CAM head; ACoL and SPG replace it with theirs.
    cin, width = self.features.out_channels, scaled(512, width_mult)
    if architecture == "acol":
      self.head = acol.AcolHead(cin, num_classes, hidden=(scaled(1024, width_mult),) * 2, threshold=acol_threshold,
                                pooling=pooling, dtype=dtype, rngs=rngs)
    elif architecture == "spg":
      self.head = spg.SpgHead(width, num_classes, taps=(cin, cin), width=width, c_width=width, pooling=pooling,
                              use_bias=self.default_use_bias if use_bias is None else use_bias, dtype=dtype, rngs=rngs)

  def _build_backbone(self, width_mult: float, in_channels: int, dtype: Any, rngs: nnx.Rngs) -> int:
    drop_rate, threshold = self.adl_args
    self.features = VGG16Features(width_mult=width_mult, in_channels=in_channels, layout=self.layout,
                                  adl_drop_rate=drop_rate, adl_threshold=threshold, dtype=dtype, rngs=rngs)
    if self.architecture != "spg":
      return self.features.out_channels
    width = scaled(512, width_mult)
    self.SPG_A_3 = nnx.List([
        Conv(cin, width, (3, 3), padding=1, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs)
        for cin in (self.features.out_channels, width)])
    return width

  def _spg_tail(self, x: jax.Array) -> jax.Array:
    for conv in self.SPG_A_3:
      x = nnx.relu(conv(x))
    return x

  def _backbone(self, x: jax.Array) -> jax.Array:
    x = self.features(x)
    if self.architecture == "acol":
      return avg_pool_3x3(x)
    if self.architecture == "spg":
      return self._spg_tail(x)
    return x

  def _wsol_outputs(self, images: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    check_images(images, self.min_size, self.name)
    if self.architecture == "acol":
      return self.head.outputs(self._backbone(images), labels)
    split = self.layout.index("conv5_1")  # SPG_B_1a reads conv4_3 (after its pool without large_feature_map)
    tap1 = self.features(images, stop=split)
    tap2 = self.features(tap1, start=split)
    features = self._spg_tail(tap2)
    return self.head.outputs(tap1, tap2, features, labels, images.shape[1:3])


@register("vgg16")
class VGG16(FcHead):
  """The original VGG16 (configuration D) with its fully connected head.

  pool5 -> adaptive average pool to 7x7 (identity at 224 px) -> fc6 4096 ->
  ReLU -> dropout -> fc7 4096 -> ReLU -> dropout -> fc8; 138,357,544
  parameters for 1000 classes. Returns ``(logits, conv5_3 map after ReLU,
  before pool5)``. Not CAM compatible: use Grad-CAM from ``camjax.saliency``.
  """

  name = "vgg16"
  features_class = VGG16Features
  backbone_ops = CONV5_OPS
  pool5 = (2, 2)
  fc_grid = 7
  dropout_first = False
  feature_layer = "conv5_3"
  gap_variants = ("vgg16_gap",)
