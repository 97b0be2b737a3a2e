"""The GPU paths: the CUDA memory probe and implicit DEQ derivatives computed on a CUDA device.

Skipped without CUDA (CI has none); `benchmarks/gpu.sh` runs them before the GPU benchmarks. The
references are independent of the device code: a known allocation size, and autograd through an
unrolled float64 Picard solve on the CPU.
"""
import pytest
import torch

from benchmarks.memory import MIB, cuda_peak_bytes, retained_bytes
from deq_helpers import hessian_trace_and_grads, nested_jvp_and_grads
from deq_plugin import DenseCell
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


def test_implicit_nested_jvp_on_cuda_matches_unrolled_on_cpu():
    torch.manual_seed(3)
    cell = DenseCell(5, norm_lambda=1.5).double()
    u, tangent = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    want_second, want_grads = nested_jvp_and_grads(cell, u, tangent, "unrolled")
    got_second, got_grads = nested_jvp_and_grads(cell.to(CUDA), u.to(CUDA), tangent.to(CUDA), "implicit")
    assert want_second.abs().max() > 1e-2
    torch.testing.assert_close(got_second.cpu(), want_second, rtol=1e-10, atol=1e-12)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-11)


def test_batched_hessian_trace_through_implicit_deq_on_cuda_matches_unrolled_on_cpu():
    torch.manual_seed(4)
    cell = DenseCell(6, norm_lambda=1.5).double()
    readout = torch.randn(6, dtype=torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64)
    want, want_grads = hessian_trace_and_grads(cell, readout, x, "unrolled", hessian_trace_batched)
    got, got_grads = hessian_trace_and_grads(cell.to(CUDA), readout.to(CUDA), x.to(CUDA), "implicit", hessian_trace_batched)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-12)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-9, atol=1e-11)
