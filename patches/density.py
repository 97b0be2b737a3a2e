"""DKEF and NICE: their MLP stacks become dense DEQ blocks z = σ(W z + g(y)) (equation 5).

The stack's input is already the injected features g(y) = σ(Linear(y)) computed by the host's
`in_layer`, so the block uses the identity injection and its state has the stack's width.
"""
from __future__ import annotations

from torch import nn

from patches import LayerPatch, register_patch

_DENSE = {"injection": "identity", "activation": "softplus"}


def _group(prefix: str, targets: list[str]) -> dict[str, LayerPatch]:
    layers = {f"{prefix}{i}": LayerPatch([t], "dense", dict(_DENSE)) for i, t in enumerate(targets)}
    layers[prefix] = LayerPatch(list(targets), "dense", dict(_DENSE))
    return layers


@register_patch("dkef")
def dkef_layers(model: nn.Module) -> dict[str, LayerPatch]:
    """'feature' = every kernel's feature stack; 'feature<r>' = kernel r's alone."""
    return _group("feature", [f"features.{r}.stack" for r in range(len(model.features))])


@register_patch("nice")
def nice_layers(model: nn.Module) -> dict[str, LayerPatch]:
    """'coupling' = every coupling MLP's hidden stack; 'coupling<k>' = coupling k's alone."""
    return _group("coupling", [f"couplings.{k}.net.stack" for k in range(len(model.couplings))])
