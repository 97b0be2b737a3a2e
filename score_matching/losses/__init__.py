"""Score-matching losses, registered by name in `LOSSES`.

A score function maps x of shape (B, ...) to s of the same shape; a log-density maps it to (B,).
Every loss returns the batch mean as a scalar with its graph kept, so loss.backward() gives
parameter gradients, and takes its options as keyword arguments, so a config can call
`LOSSES.get(name)(fn, x, **kwargs)`. What `fn` is depends on the loss:
    "sm", "ssm", "ssm_vr", "dsm"   a score function s(x)
    "anneal_dsm", "anneal_ssm_vr"  a noise-conditional score function s(x, labels)
    "cp", "approx_bp"              a log-density whose layers they sweep: an nn.Sequential MLP of
                                   Linear + activations, or a model with propagation_steps() such
                                   as NICE (see score_matching.losses.flow_propagation)
    "mle"                          a normalised log-density
"""
from score_matching.losses.annealed import annealed_dsm, annealed_ssm_vr
from score_matching.losses.approx_backprop import approx_backprop_score_matching, approx_bp_hessian_diagonal
from score_matching.losses.common import ConditionalScoreFn, LogDensityFn, ScoreFn, score_from_log_density
from score_matching.losses.curvature_propagation import cp_hessian_diagonal, curvature_propagation
from score_matching.losses.denoising import denoising_score_matching
from score_matching.losses.exact import exact_score_matching, fisher_divergence
from score_matching.losses.likelihood import maximum_likelihood
from score_matching.losses.hessian_trace import (
    TRACE_METHODS,
    hessian_trace,
    hessian_trace_batched,
    hessian_trace_forward,
    hessian_trace_loop,
)
from score_matching.losses.projections import PROJECTIONS, sample_projections
from score_matching.losses.sliced import sliced_score_matching, sliced_score_matching_vr
from score_matching.registry import Registry

LOSSES: Registry = Registry("loss")
SCORE_LOSSES = ("sm", "ssm", "ssm_vr", "dsm")
LOG_DENSITY_LOSSES = ("cp", "approx_bp", "mle")
LOSSES.register("sm")(exact_score_matching)
LOSSES.register("ssm")(sliced_score_matching)
LOSSES.register("ssm_vr")(sliced_score_matching_vr)
LOSSES.register("dsm")(denoising_score_matching)
LOSSES.register("cp")(curvature_propagation)
LOSSES.register("mle")(maximum_likelihood)
LOSSES.register("approx_bp")(approx_backprop_score_matching)
LOSSES.register("anneal_dsm")(annealed_dsm)
LOSSES.register("anneal_ssm_vr")(annealed_ssm_vr)

__all__ = [
    "LOG_DENSITY_LOSSES",
    "LOSSES",
    "SCORE_LOSSES",
    "PROJECTIONS",
    "TRACE_METHODS",
    "ConditionalScoreFn",
    "LogDensityFn",
    "ScoreFn",
    "annealed_dsm",
    "annealed_ssm_vr",
    "approx_backprop_score_matching",
    "approx_bp_hessian_diagonal",
    "cp_hessian_diagonal",
    "curvature_propagation",
    "denoising_score_matching",
    "exact_score_matching",
    "fisher_divergence",
    "maximum_likelihood",
    "hessian_trace",
    "hessian_trace_batched",
    "hessian_trace_forward",
    "hessian_trace_loop",
    "sample_projections",
    "score_from_log_density",
    "sliced_score_matching",
    "sliced_score_matching_vr",
]
