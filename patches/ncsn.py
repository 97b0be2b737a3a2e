"""NCSN: shape-preserving residual blocks become DEQ-ResBlocks z ↦ h(z, y) + g(y) (paper table 9).

g(y) is the block's input — the layers before it — and h is the block's residual branch with its
convolutions normalised; the identity shortcut is dropped, since z ↦ z + r(z) + u is not a
contraction. By default h is act → conv → act → conv, without the block's instance norms: an
instance norm divides by the state's own standard deviation, so no weight normalisation bounds
its Lipschitz constant, and with the norms kept the fixed-point iteration stopped converging
within a few hundred training steps of the quick-start config. The block option
`keep_norms=True` (e.g. `--config.deq.per_layer="deq_res:keep_norms=true"`) keeps them, as the
paper's table 9 literally reads.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from deq_plugin import register_block
from deq_plugin.blocks import residual_block
from patches import LayerPatch, register_patch


class ResidualBranch(nn.Module):
    """The residual branch of an NCSN `ConditionalResidualBlock`, without its shortcut."""

    def __init__(self, block: nn.Module, keep_norms: bool = False) -> None:
        super().__init__()
        if block.shortcut is not None or block.pool:
            raise ValueError("only shape-preserving residual blocks (identity shortcut, no pooling) can become DEQ-ResBlocks")
        self.conv1, self.conv2, self.act = block.conv1, block.conv2, block.act
        self.keep_norms = keep_norms
        if keep_norms:
            self.norm1, self.norm2 = block.norm1, block.norm2

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        if self.keep_norms:
            h = self.conv1(self.act(self.norm1(z, labels)))
            return self.conv2(self.act(self.norm2(h, labels)))
        return self.conv2(self.act(self.conv1(self.act(z))))


@register_block("ncsn_residual")
def ncsn_residual_block(original: nn.Module, *, keep_norms: bool = False, **options: Any) -> nn.Module:
    """`deq_plugin`'s residual block built on the NCSN block's residual branch."""
    return residual_block(ResidualBranch(original, keep_norms), **options)


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
    return _layers(model)


@register_patch("ncsn_refinenet")
def refinenet_layers(model: nn.Module) -> dict[str, LayerPatch]:
    """Each shape-preserving residual block of the RefineNet by name."""
    return _layers(model)


def _layers(model: nn.Module) -> dict[str, LayerPatch]:
    return {name: LayerPatch([name], "ncsn_residual", {"keep_norms": False}) for name in _shape_preserving(model)}
