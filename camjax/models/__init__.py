"""The network zoo. Every model: ``logits, features = model(images_nhwc)``.

Import a family module here to register its names with ``create``.
"""

from camjax.models.base import POOLINGS, NotCamCompatible, PoolingHead, global_pool
from camjax.models.registry import create, names, register
from camjax.models import small  # noqa: F401  (registers small_gap)
from camjax.models import alexnet, googlenet, nin, vgg  # noqa: F401  (register the GAP zoo and baselines)
from camjax.models import efficientnet_lite  # noqa: F401  (registers efficientnet_lite0..4)

__all__ = ["POOLINGS", "NotCamCompatible", "PoolingHead", "create", "global_pool", "names", "register"]
