"""Exact implicit gradients through score-matching losses, against a 300-step unrolled float64 reference.

The energy is log p(x) = a·tanh(z*(x)) − ½‖x‖², z* = softplus(W z* + U x + b). Score matching
differentiates it in x (score), again in x (Hessian trace, projections) and then in θ: third order.
"""
import pytest
import torch

from deq_helpers import DEQEnergy, relative_error, unrolled_log_density
from score_matching.losses import (
    denoising_score_matching,
    exact_score_matching,
    score_from_log_density,
    sliced_score_matching,
    sliced_score_matching_vr,
)

LOSSES = {
    "sm": lambda score, x: exact_score_matching(score, x, trace="loop"),
    "ssm": lambda score, x: sliced_score_matching(score, x, n_particles=2, generator=torch.Generator().manual_seed(1)),
    "ssm_vr": lambda score, x: sliced_score_matching_vr(score, x, n_particles=2, generator=torch.Generator().manual_seed(1)),
    "dsm": lambda score, x: denoising_score_matching(score, x, sigma=0.3, generator=torch.Generator().manual_seed(1)),
}


@pytest.fixture
def energy():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model = DEQEnergy(dim=4, hidden=6, norm_lambda=1.5, grad="implicit", tol=1e-13, max_iter=500)
    yield model
    torch.set_default_dtype(previous)


def _grads(loss_name, log_density, model, x):
    loss = LOSSES[loss_name](score_from_log_density(log_density), x)
    return torch.autograd.grad(loss, list(model.parameters()))


def test_score_and_hessian_trace_match_the_unrolled_reference(energy):
    x = torch.randn(5, 4, requires_grad=True)
    score = torch.autograd.grad(energy(x).sum(), x, create_graph=True)[0]
    ref_score = torch.autograd.grad(unrolled_log_density(energy, x).sum(), x, create_graph=True)[0]
    assert relative_error(score, ref_score) < 1e-10
    trace = sum(torch.autograd.grad(score[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(4))
    ref_trace = sum(torch.autograd.grad(ref_score[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(4))
    assert relative_error(trace, ref_trace) < 1e-10


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_implicit_parameter_gradients_of_every_loss_match_the_reference(energy, loss_name):
    x = torch.randn(6, 4)
    got = _grads(loss_name, energy, energy, x)
    expected = _grads(loss_name, lambda v: unrolled_log_density(energy, v), energy, x)
    for g, e in zip(got, expected):
        assert relative_error(g, e) < 1e-6


def test_phantom_gradients_converge_to_the_exact_ones_as_steps_grow(energy):
    x = torch.randn(6, 4)
    exact = torch.cat([g.flatten() for g in _grads("sm", energy, energy, x)])
    errors = []
    for steps in (1, 2, 5, 40):
        energy.deq.grad, energy.deq.phantom_steps = "phantom", steps
        phantom = torch.cat([g.flatten() for g in _grads("sm", energy, energy, x)])
        errors.append(relative_error(phantom, exact))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-8 and errors[1] > 1e-6  # K=2 is visibly inexact, K=40 is exact
