"""ResNet for 32x32 images, as the registry declares it; nnstudy.models.nets.resnet builds its layers."""
from __future__ import annotations

from ..registry import register_model

PARAMS = {
    "blocks": {"description": "Basic blocks per stage; stage i has width * 2**i channels and every stage "
                              "after the first halves the resolution. [2, 2, 2, 2] is ResNet-18, [3, 4, 6, 3] ResNet-34.",
               "type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "default": [2, 2, 2, 2]},
    "width": {"description": "Channels of the stem and the first stage.",
              "type": "integer", "minimum": 1, "default": 64},
}


@register_model("resnet", PARAMS)
def resnet(input_shape, classes, **params):
    """ResNet of basic blocks (He et al. 2016, "Deep Residual Learning for Image Recognition") in its
    CIFAR form: 3x3 stem without max-pool, stages of width * 2**i channels, global average pooling."""
    from .nets.resnet import resnet as build  # torch: imported where a model is built, not where a study is planned

    return build(input_shape, classes, **params)
