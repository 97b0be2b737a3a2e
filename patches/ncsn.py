"""NCSN: shape-preserving residual blocks become DEQ-ResBlocks z ↦ h(z, y) + g(y) (paper table 9).

g(y) is the block's input — the layers before it — and h is the block's residual branch
(norm, act, conv, norm, act, conv, conditioned on the noise level) with its convolutions
normalised; the identity shortcut is dropped, since z ↦ z + r(z) + u is not a contraction.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from deq_plugin import register_block
from deq_plugin.blocks import residual_block
from patches import LayerPatch, register_patch


class ResidualBranch(nn.Module):
    """The residual branch of an NCSN `ConditionalResidualBlock`, without its shortcut."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        if block.shortcut is not None or block.pool:
            raise ValueError("only shape-preserving residual blocks (identity shortcut, no pooling) can become DEQ-ResBlocks")
        self.norm1, self.conv1, self.norm2, self.conv2, self.act = block.norm1, block.conv1, block.norm2, block.conv2, block.act

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(z, labels)))
        return self.conv2(self.act(self.norm2(h, labels)))


@register_block("ncsn_residual")
def ncsn_residual_block(original: nn.Module, **options: Any) -> nn.Module:
    """`deq_plugin`'s residual block built on the NCSN block's residual branch."""
    return residual_block(ResidualBranch(original), **options)


def _shape_preserving(model: nn.Module) -> list[str]:
    names = []
    for name in model.residual_block_names:
        block = model.get_submodule(name)
        if block.shortcut is None and not block.pool:
            names.append(name)
    return names


@register_patch("ncsn_twores")
def twores_layers(model: nn.Module) -> dict[str, LayerPatch]:
    """Each shape-preserving residual block by name; the paper's DEQ model turns 'deq_res'."""
    return {name: LayerPatch([name], "ncsn_residual") for name in _shape_preserving(model)}


@register_patch("ncsn_refinenet")
def refinenet_layers(model: nn.Module) -> dict[str, LayerPatch]:
    """Each shape-preserving residual block of the RefineNet by name."""
    return {name: LayerPatch([name], "ncsn_residual") for name in _shape_preserving(model)}
