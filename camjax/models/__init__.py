"""The network zoo. Every model: ``logits, features = model(images_nhwc)``.

Import a family module here to register its names with ``create``. A new GAP
network can inherit ``heads.GapHead`` and supply only its backbone.
"""

from camjax.models.base import POOLINGS, NotCamCompatible, PoolingHead, global_pool
from camjax.models.heads import FcHead, GapHead, PooledNet
from camjax.models.registry import create, names, register
from camjax.models import small  # noqa: F401  (registers small_gap)
from camjax.models import alexnet, googlenet, nin, vgg  # noqa: F401  (register the GAP zoo and baselines)
from camjax.models import efficientnet_lite  # noqa: F401  (registers efficientnet_lite0..4)
from camjax.models import resnet  # noqa: F401  (registers resnet50, resnet50_wsol)
from camjax.models import inception  # noqa: F401  (registers inceptionv3, inceptionv3_wsol)

__all__ = ["POOLINGS", "FcHead", "GapHead", "NotCamCompatible", "PooledNet", "PoolingHead", "create", "global_pool",
           "names", "register"]
