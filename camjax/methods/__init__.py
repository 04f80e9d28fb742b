"""The CAM family and pixel attribution, batched and jitted, with one call for all.

    maps, logits = method(model, images, layer="head_act", class_ids=None)

``class_ids``: None (top-1), (B,) or (B, K) per image; ``maps`` is (B, K, h, w)
at the layer's resolution (``upsample=True``: the image's), ``logits`` (B, N).
``layer_names(model)`` lists the layers a model can be tapped at. Each
docstring says which definition (paper, pytorch-grad-cam, torch-cam) a method
follows where they differ. Maps are not scaled; ``normalize_maps`` does the
min-max scaling both libraries apply for display.
"""

from camjax.methods._core import layer_names, normalize_maps
from camjax.methods.attribution import backprop_saliency, integrated_gradients, smooth_grad
from camjax.methods.gradient import (
    eigen_grad_cam, grad_cam, grad_cam_elementwise, grad_cam_plus_plus, hires_cam, layer_cam,
    smooth_grad_cam_plus_plus, xgrad_cam)
from camjax.methods.gradient_free import ablation_cam, eigen_cam, is_cam, score_cam, ss_cam

GRADIENT = {"grad_cam": grad_cam, "grad_cam_plus_plus": grad_cam_plus_plus,
            "smooth_grad_cam_plus_plus": smooth_grad_cam_plus_plus, "xgrad_cam": xgrad_cam, "hires_cam": hires_cam,
            "grad_cam_elementwise": grad_cam_elementwise, "layer_cam": layer_cam, "eigen_grad_cam": eigen_grad_cam}
GRADIENT_FREE = {"score_cam": score_cam, "ss_cam": ss_cam, "is_cam": is_cam, "ablation_cam": ablation_cam,
                 "eigen_cam": eigen_cam}
ATTRIBUTION = {"backprop_saliency": backprop_saliency, "smooth_grad": smooth_grad,
               "integrated_gradients": integrated_gradients}
ALL = {**GRADIENT, **GRADIENT_FREE, **ATTRIBUTION}

__all__ = ["ALL", "ATTRIBUTION", "GRADIENT", "GRADIENT_FREE", "ablation_cam", "backprop_saliency", "eigen_cam",
           "eigen_grad_cam", "grad_cam", "grad_cam_elementwise", "grad_cam_plus_plus", "hires_cam",
           "integrated_gradients", "is_cam", "layer_cam", "layer_names", "normalize_maps", "score_cam",
           "smooth_grad", "smooth_grad_cam_plus_plus", "ss_cam", "xgrad_cam"]
