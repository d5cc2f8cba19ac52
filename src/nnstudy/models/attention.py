"""The block-attention CNN, as the registry declares it; nnstudy.models.nets.attention builds its layers."""
from __future__ import annotations

from ..registry import register_model

PARAMS = {
    "channels": {"description": "Output channels of the blocks of each stage; a 2x2 max-pool follows every stage.",
                 "type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1,
                 "default": [64, 128, 256]},
    "blocks": {"description": "Blocks per stage (as many entries as channels).",
               "type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "default": [4, 4, 3]},
    "k": {"description": "Parallel 3x3 convs per block, mixed by the block's attention weights.",
          "type": "integer", "minimum": 1, "default": 4},
    "reduction": {"description": "Hidden width of the attention MLP: max(input channels // reduction, k).",
                  "type": "integer", "minimum": 1, "default": 4},
}


@register_model("block_attention", PARAMS)
def block_attention(input_shape, classes, **params):
    """The block-attention CNN (a CIFAR-10 coursework design): each block mixes k parallel 3x3 convs by softmax
    weights an MLP predicts from its pooled input (dynamic convolution, Chen et al. 2020, without temperature)."""
    from .nets.attention import block_attention as build  # torch: imported where a model is built, not where a study is planned

    return build(input_shape, classes, **params)
