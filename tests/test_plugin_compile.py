"""A swapped model under torch.compile: no graph break per solver iteration, same outputs and gradients as eager."""
import math

import pytest
import torch
import torch._dynamo

from benchmarks.codebase_standins import MLPEnergy, NCSNv2Standin
from deq_plugin import BlockSpec, layer_stats, swap
from deq_plugin.deq import COMPILED_CHECK_EVERY


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch.manual_seed(0)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def graph_breaks(check_every: int | None) -> tuple[int, int]:
    """(graph breaks, solver iterations) of one forward of a swapped energy MLP traced by dynamo."""
    model = MLPEnergy(hidden=16)
    x = torch.randn(8, 4)
    swap(model, {"layers.1": BlockSpec("mlp_stack", {"tol": 1e-6, "check_every": check_every})}, (x,))
    explanation = torch._dynamo.explain(model)(x)
    return explanation.graph_break_count, layer_stats(model)["layers.1"].n_iter


def test_under_compile_the_solver_checks_convergence_every_few_iterations_not_every_one():
    breaks_default, n_iter = graph_breaks(None)
    breaks_every_step, n_iter_every_step = graph_breaks(1)
    assert n_iter_every_step >= 8  # enough iterations for the difference to show
    assert breaks_every_step >= n_iter_every_step
    # one break per convergence check, plus the two stats reads after the solve
    assert breaks_default <= math.ceil(n_iter / COMPILED_CHECK_EVERY) + 2 < breaks_every_step


def compare_with_eager(backend: str) -> None:
    model = NCSNv2Standin()
    x, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 3])
    swap(model, {"res1.1": "residual"}, (x, labels))
    model.eval()  # the spectral estimates stay fixed, so both runs see the same weights
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(fn):
        out = fn(x, labels)
        return out.detach(), torch.autograd.grad(out.pow(2).sum(), params)

    eager_out, eager_grads = loss_and_grads(model)
    compiled_out, compiled_grads = loss_and_grads(torch.compile(model, backend=backend))
    assert torch.allclose(compiled_out, eager_out, rtol=1e-4, atol=1e-5)
    for eager, compiled in zip(eager_grads, compiled_grads):
        assert torch.allclose(compiled, eager, rtol=1e-3, atol=1e-5 * eager.abs().max().item())


def test_a_compiled_swapped_model_matches_eager_through_aot_autograd():
    compare_with_eager("aot_eager")


@pytest.mark.slow
def test_a_compiled_swapped_model_matches_eager_with_inductor():
    compare_with_eager("inductor")
