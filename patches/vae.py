"""SSM-VAE: the score estimator's augmented pre-processing layer becomes a conv DEQ (paper table 7).

Layer "augment" = `score_net.augment`, the stack of stride-1 5×5 softplus convs on
concat[x, softplus(Dense(z))]. `deq_plugin`'s "conv" builder turns it into
    z* = softplus(W * z* + g(y)),  g(y) = softplus(conv(y)),
with g a fresh conv shaped like the stack's first (c+1 -> m channels, 5×5) and W an m -> m 5×5
kernel (normalised by config.deq.norm). The block has the stack's input and output shapes, so any
host depth k >= 1 gives the same DEQ model; `configs/vae_deq.py` patches the Aug(1) model, the
cheapest host, whose weights outside the layer equal every Aug(k)'s (see `score_matching.models.vae`).
A baseline host (augment_depth 0) has no such layer and offers nothing.
"""
from __future__ import annotations

from torch import nn

from patches import LayerPatch, register_patch

AUGMENT_PATH = "score_net.augment"


@register_patch("ssm_vae")
def vae_layers(model: nn.Module) -> dict[str, LayerPatch]:
    """'augment' = the score estimator's augmented layer, when the model has one."""
    if len(model.get_submodule(AUGMENT_PATH)) == 0:
        return {}
    return {"augment": LayerPatch([AUGMENT_PATH], "conv", {"injection": "layer", "activation": "softplus"})}
