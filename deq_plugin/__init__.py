"""deq_plugin: deep equilibrium layers for score-matching models.

The fixed point z* = f(z*, u) of a cell f is differentiable to any order (score matching needs
the score, its input-Jacobian trace and the parameter gradient of both). Solver, gradient mode and
weight normalisation are chosen independently; see `DEQ`.
"""
from deq_plugin.blocks import BLOCKS, register_block
from deq_plugin.cells import ACTIVATIONS, Activation, ConvCell, DEQBlock, DenseCell, ResidualCell
from deq_plugin.deq import GRAD_MODES, DEQ, DEQStats, exact_derivatives
from deq_plugin.diagnostics import contraction_factor
from deq_plugin.norms import NORMS, FrobeniusNorm, SpectralNorm, normalize_all, normalize_weight, refresh_spectral_norms
from deq_plugin.solvers import SOLVERS, NonFiniteStateError, SolverResult, anderson, picard, register_solver
from deq_plugin.swap import BlockSpec, swap

__all__ = [
    "BLOCKS", "register_block", "BlockSpec", "swap",
    "ACTIVATIONS", "Activation", "ConvCell", "DEQBlock", "DenseCell", "ResidualCell",
    "GRAD_MODES", "DEQ", "DEQStats", "contraction_factor", "exact_derivatives",
    "NORMS", "FrobeniusNorm", "SpectralNorm", "normalize_all", "normalize_weight", "refresh_spectral_norms",
    "SOLVERS", "NonFiniteStateError", "SolverResult", "anderson", "picard", "register_solver",
]
