"""deq_plugin: deep equilibrium layers for score-matching models.

The fixed point z* = f(z*, u) of a cell f is differentiable to any order (score matching needs
the score, its input-Jacobian trace and the parameter gradient of both). Solver, gradient mode and
weight normalisation are chosen independently; see `DEQ`. `swap` turns named layers of any model
into DEQ blocks; `layer_stats` reads every DEQ layer's latest solver statistics. Needs only torch.
"""
from deq_plugin.blocks import BLOCKS, check_identity_shortcut, prepare_layers, register_block, residual_block
from deq_plugin.cells import (
    ACTIVATIONS, Activation, ConvCell, DEQBlock, DenseCell, ResidualCell, ShortcutResidualCell, StackCell,
)
from deq_plugin.deq import GRAD_MODES, DEQ, DEQStats, exact_derivatives
from deq_plugin.diagnostics import contraction_factor
from deq_plugin.norms import NORMS, FrobeniusNorm, SpectralNorm, normalize_all, normalize_weight, refresh_spectral_norms
from deq_plugin.solvers import SOLVERS, NonFiniteStateError, SolverResult, anderson, picard, register_solver
from deq_plugin.swap import BlockSpec, layer_stats, swap

__version__ = "0.2.0"

__all__ = [
    "BLOCKS", "register_block", "BlockSpec", "swap", "layer_stats",
    "residual_block", "prepare_layers", "check_identity_shortcut",
    "ACTIVATIONS", "Activation", "ConvCell", "DEQBlock", "DenseCell", "ResidualCell", "ShortcutResidualCell", "StackCell",
    "GRAD_MODES", "DEQ", "DEQStats", "contraction_factor", "exact_derivatives",
    "NORMS", "FrobeniusNorm", "SpectralNorm", "normalize_all", "normalize_weight", "refresh_spectral_norms",
    "SOLVERS", "NonFiniteStateError", "SolverResult", "anderson", "picard", "register_solver",
]
