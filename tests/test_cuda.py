"""The GPU paths: the CUDA memory probe and implicit DEQ derivatives computed on a CUDA device.

Skipped without CUDA (CI has none); `benchmarks/gpu.sh` runs them before the GPU benchmarks. The
references are independent of the device code: a known allocation size, and autograd through an
unrolled float64 Picard solve on the CPU.
"""
import pytest
import torch
from torch import Tensor

from benchmarks.memory import MIB, cuda_peak_bytes, retained_bytes
from deq_plugin import DEQ, DenseCell
from score_matching.losses.hessian_trace import hessian_trace_batched

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def test_cuda_peak_bytes_is_the_largest_live_allocation_of_the_step():
    kept = []

    def step() -> None:
        scratch = torch.empty(2**20, device=CUDA)  # 4 MiB, freed when the step returns
        kept.append(torch.empty(2**18, device=CUDA))  # 1 MiB, alive at the peak as well
        scratch.zero_()

    assert cuda_peak_bytes(step, CUDA) == 5 * MIB
    _, retained = retained_bytes(lambda: torch.empty(2**18, device=CUDA), CUDA)
    assert retained == MIB


def _second_derivative_and_grads(cell: DenseCell, u: Tensor, tangent: Tensor, grad: str):
    """A nested-jvp second directional derivative of z*(u) and the parameter gradient of a loss of it."""
    from torch.func import jvp

    deq = DEQ(cell, tol=1e-13, max_iter=300, grad=grad)
    first = lambda v: jvp(deq, (v,), (tangent,))[1]  # noqa: E731
    first_value, second = jvp(first, (u,), (tangent,))
    loss = second.pow(2).sum() + first_value.sum()
    return second.detach(), torch.autograd.grad(loss, list(cell.parameters()))


def test_implicit_nested_jvp_on_cuda_matches_unrolled_on_cpu():
    torch.manual_seed(3)
    cell = DenseCell(5, norm_lambda=1.5).double()
    u, tangent = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    want_second, want_grads = _second_derivative_and_grads(cell, u, tangent, "unrolled")
    got_second, got_grads = _second_derivative_and_grads(cell.to(CUDA), u.to(CUDA), tangent.to(CUDA), "implicit")
    assert want_second.abs().max() > 1e-2
    torch.testing.assert_close(got_second.cpu(), want_second, rtol=1e-10, atol=1e-12)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-11)


def test_batched_hessian_trace_through_implicit_deq_on_cuda_matches_unrolled_on_cpu():
    torch.manual_seed(4)
    cell = DenseCell(6, norm_lambda=1.5).double()
    readout = torch.randn(6, dtype=torch.float64)
    x_cpu = torch.randn(5, 6, dtype=torch.float64)

    def trace_and_grads(device: torch.device, grad: str):
        x = x_cpu.to(device).requires_grad_(True)
        deq = DEQ(cell.to(device), tol=1e-13, max_iter=300, grad=grad)
        (score,) = torch.autograd.grad((torch.tanh(deq(x)) @ readout.to(device)).sum(), x, create_graph=True)
        trace = hessian_trace_batched(score, x)
        grads = torch.autograd.grad(trace.pow(2).sum(), list(cell.parameters()))
        return trace.detach().cpu(), [g.cpu() for g in grads]

    want, want_grads = trace_and_grads(torch.device("cpu"), "unrolled")
    got, got_grads = trace_and_grads(CUDA, "implicit")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
