"""Exact, phantom and unrolled gradients of a DEQ against closed forms and explicit Jacobians."""
import pytest
import torch
from torch import Tensor, nn
from torch.autograd.functional import jacobian

from deq_plugin import DEQ, DenseCell
from deq_helpers import hessian_trace_and_grads, nested_jvp_and_grads, relative_error



class LinearCell(nn.Module):
    """f(z, u) = W z + U u: its fixed point is z* = (I - W)^-1 U u."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        w = torch.randn(hidden, hidden)
        self.W = nn.Parameter(0.6 * w / torch.linalg.matrix_norm(w, 2))
        self.U = nn.Parameter(torch.randn(hidden, hidden))

    def forward(self, z, u):
        return z @ self.W.t() + u @ self.U.t()


def closed_form(cell: LinearCell, u):
    eye = torch.eye(cell.W.shape[0])
    return torch.linalg.solve(eye - cell.W, cell.U @ u.t()).t()


@pytest.fixture(autouse=True)
def _float64_and_seed():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)


def test_implicit_matches_linear_closed_form_to_third_order():
    cell = LinearCell(6)
    deq = DEQ(cell, grad="implicit", tol=1e-13, max_iter=500)
    u = torch.randn(5, 6, requires_grad=True)
    z = deq(u)
    ref = closed_form(cell, u)
    assert relative_error(z, ref) < 1e-10

    def second_order_loss(fixed_point):
        # "score" s = d(½||z*||²)/du, then a loss of the score (needs the Hessian of z*'s graph).
        s = torch.autograd.grad(0.5 * fixed_point.pow(2).sum(), u, create_graph=True)[0]
        return (s.pow(2).sum() + (s * u).sum()) ** 2 / 10

    grads = torch.autograd.grad(second_order_loss(deq(u)), [u, cell.W, cell.U])
    ref_grads = torch.autograd.grad(second_order_loss(closed_form(cell, u)), [u, cell.W, cell.U])
    for g, r in zip(grads, ref_grads):
        assert relative_error(g, r) < 1e-8


def test_proposition_2_phantom_derivative_is_truncated_neumann_series():
    hidden, steps = 5, 3
    cell = DenseCell(hidden, norm_lambda=1.5)
    deq = DEQ(cell, grad="phantom", phantom_steps=steps, tol=1e-14, max_iter=500)
    u = torch.randn(1, hidden)
    with torch.no_grad():
        z_star = DEQ(cell, tol=1e-14, max_iter=500)(u)
    jac_z = jacobian(lambda z: cell(z, u), z_star)[0, :, 0, :]
    jac_u = jacobian(lambda v: cell(z_star, v), u)[0, :, 0, :]
    expected = sum(torch.linalg.matrix_power(jac_z, k) @ jac_u for k in range(steps))
    got = jacobian(lambda v: deq(v), u)[0, :, 0, :]
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("grad", ["implicit", "phantom"])
def test_gradcheck_and_gradgradcheck(grad):
    # Phantom steps give the true derivative only in the limit; 60 steps at contraction <= 1/2
    # leave an error of 2^-60, so gradcheck tests that the phantom graph is right to second order.
    cell = DenseCell(3, norm_lambda=2.0)
    deq = DEQ(cell, grad=grad, tol=1e-14, max_iter=500, phantom_steps=60)
    u = torch.randn(2, 3, requires_grad=True)
    assert torch.autograd.gradcheck(deq, (u,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(deq, (u,), eps=1e-6, atol=1e-7)


def test_implicit_parameter_gradient_gradcheck():
    """gradcheck w.r.t. a cell parameter, through functional_call of the parametrised weight."""
    cell = DenseCell(3, norm_lambda=2.0)
    deq = DEQ(cell, grad="implicit", tol=1e-14, max_iter=500)
    u = torch.randn(2, 3)
    raw = cell.linear.parametrizations.weight.original

    def fixed_point_of(w):
        state = {"linear.parametrizations.weight.original": w}
        return torch.func.functional_call(deq, {"cell." + k: v for k, v in state.items()}, (u,))

    w = raw.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fixed_point_of, (w,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(fixed_point_of, (w,), eps=1e-6, atol=1e-7)


def test_phantom_converges_to_implicit_as_steps_grow():
    cell = DenseCell(6, norm_lambda=1.2)
    u = torch.randn(4, 6, requires_grad=True)

    def input_hessian_row(deq):
        z = deq(u)
        s = torch.autograd.grad(torch.tanh(z).sum(), u, create_graph=True)[0]
        return torch.autograd.grad(s.pow(2).sum(), u)[0]

    exact = input_hessian_row(DEQ(cell, grad="implicit", tol=1e-14, max_iter=500))
    errors = [
        relative_error(input_hessian_row(DEQ(cell, grad="phantom", phantom_steps=k, tol=1e-14, max_iter=500)), exact)
        for k in (1, 2, 5, 40)
    ]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-9


@pytest.mark.parametrize("grad", ["implicit", "phantom", "unrolled"])
def test_eval_mode_gives_the_train_mode_score(grad):
    cell = DenseCell(5)
    deq = DEQ(cell, grad=grad, tol=1e-12, max_iter=300)
    x = torch.randn(3, 5, requires_grad=True)

    def score():
        return torch.autograd.grad(torch.tanh(deq(x)).sum(), x)[0]

    train_score = score()
    deq.eval()
    eval_score = score()
    assert eval_score.abs().sum() > 0
    assert torch.allclose(train_score, eval_score, rtol=1e-12, atol=1e-14)


def test_forward_mode_tangents_follow_the_gradient_mode():
    """torch.func.jvp through a DEQ: with grad on, the tangent is the Jacobian the gradient mode
    gives reverse mode (phantom K=2 differs from exact; unrolled and implicit are exact); with grad off, no mode
    applies and the tangent follows the solver to the implicit one (I − DW)⁻¹ D u̇, D = σ'(Wz* + u)."""
    from torch.func import jvp

    cell = DenseCell(5, norm_lambda=1.5)
    u = torch.randn(3, 5)
    tangent = torch.randn(3, 5)
    w = cell.linear.weight.detach()
    deq = DEQ(cell, tol=1e-13, max_iter=300, grad="unrolled")
    with torch.no_grad():
        z_star = deq(u)
    d = torch.sigmoid(z_star @ w.t() + u)
    eye = torch.eye(5)
    exact = torch.stack([torch.linalg.solve(eye - d_b[:, None] * w, d_b * t_b) for d_b, t_b in zip(d, tangent)])

    for grad in ("phantom", "unrolled", "implicit"):
        deq = DEQ(cell, tol=1e-13, max_iter=300, grad=grad, phantom_steps=2)
        forward = jvp(deq, (u,), (tangent,))[1]
        reverse = torch.einsum("bibj,bj->bi", jacobian(deq, u), tangent)  # the mode's reverse-mode Jacobian
        torch.testing.assert_close(forward, reverse, rtol=1e-10, atol=1e-12)
        if grad != "phantom":
            torch.testing.assert_close(forward, exact, rtol=1e-9, atol=1e-12)
        else:
            assert relative_error(forward, exact) > 1e-4  # two phantom steps are not exact here
    deq = DEQ(cell, tol=1e-13, max_iter=300, grad="phantom")
    with torch.no_grad():
        torch.testing.assert_close(jvp(deq, (u,), (tangent,))[1], exact, rtol=1e-9, atol=1e-12)


def test_implicit_mode_nested_forward_mode_and_reverse_over_it_match_unrolled():
    """A second directional derivative by nested jvp, and the parameter gradient of a loss built from
    it (third order, reverse over forward over forward, as DKEF's α fit is trained), through an
    implicit DEQ against autograd through 300 float64 Picard iterations."""
    torch.manual_seed(3)
    cell = DenseCell(5, norm_lambda=1.5)
    u, tangent = torch.randn(4, 5), torch.randn(4, 5)
    implicit_second, implicit_grads = nested_jvp_and_grads(cell, u, tangent, "implicit")
    unrolled_second, unrolled_grads = nested_jvp_and_grads(cell, u, tangent, "unrolled")
    assert unrolled_second.abs().max() > 1e-2
    torch.testing.assert_close(implicit_second, unrolled_second, rtol=1e-10, atol=1e-12)
    for implicit_grad, unrolled_grad in zip(implicit_grads, unrolled_grads):
        torch.testing.assert_close(implicit_grad, unrolled_grad, rtol=1e-9, atol=1e-11)


def test_implicit_mode_under_a_batched_hessian_trace_matches_the_loop():
    """The batched Hessian trace vmaps the score's backward, so the implicit adjoint solves run under
    torch.func.vmap (FixedPoint's vmap rule). Trace and its parameter gradients against the
    per-dimension loop through the same implicit DEQ and through an unrolled float64 solve."""
    from score_matching.losses.hessian_trace import hessian_trace_batched, hessian_trace_loop

    torch.manual_seed(4)
    cell = DenseCell(6, norm_lambda=1.5)
    readout = torch.randn(6)
    x = torch.randn(5, 6)
    batched, batched_grads = hessian_trace_and_grads(cell, readout, x, "implicit", hessian_trace_batched)
    for reference, reference_grads in (hessian_trace_and_grads(cell, readout, x, "implicit", hessian_trace_loop),
                                       hessian_trace_and_grads(cell, readout, x, "unrolled", hessian_trace_loop)):
        torch.testing.assert_close(batched, reference, rtol=1e-10, atol=1e-12)
        for got, want in zip(batched_grads, reference_grads):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def _score_graph_nodes(deq: DEQ, readout: Tensor, x: Tensor) -> int:
    """Autograd nodes reachable from the score ∇ₓ E(x), computed with create_graph as a loss would."""
    x = x.clone().requires_grad_(True)
    energy = (torch.tanh(deq(x)) @ readout).sum()
    (score,) = torch.autograd.grad(energy, x, create_graph=True)
    seen, stack = set(), [score.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


def test_implicit_score_graph_does_not_grow_with_adjoint_iterations():
    """The score's graph (what the loss's backward will traverse) holds one cell step per derivative
    order, however many iterations the adjoint solve took; a graph built through the adjoint
    iterations would grow with them."""
    hidden = 16
    cell = DenseCell(hidden, norm_lambda=1.2)
    readout = torch.randn(hidden)
    x = torch.randn(8, hidden)
    nodes, iterations = [], []
    for backward_tol in (1e-2, 1e-12):
        deq = DEQ(cell, grad="implicit", tol=1e-12, max_iter=500, backward_tol=backward_tol)
        nodes.append(_score_graph_nodes(deq, readout, x))
        iterations.append(deq.stats.backward_n_iter)
    assert iterations[1] >= 3 * iterations[0]
    assert nodes[0] == nodes[1]


def test_forward_mode_hessian_trace_through_an_implicit_deq_matches_unrolled():
    """The `forward` trace vmaps jvps of the score function: the implicit tangent solves run under
    vmap. Against the same trace through an unrolled float64 solve."""
    from score_matching.losses.hessian_trace import hessian_trace_forward

    torch.manual_seed(5)
    cell = DenseCell(5, norm_lambda=1.5)
    readout = torch.randn(5)
    x = torch.randn(4, 5)

    def trace(grad: str) -> Tensor:
        deq = DEQ(cell, tol=1e-13, max_iter=300, grad=grad)
        score_fn = torch.func.grad(lambda v: (torch.tanh(deq(v)) @ readout).sum())
        return hessian_trace_forward(score_fn, x)

    unrolled = trace("unrolled")
    assert unrolled.abs().max() > 1e-2
    torch.testing.assert_close(trace("implicit"), unrolled, rtol=1e-10, atol=1e-12)
