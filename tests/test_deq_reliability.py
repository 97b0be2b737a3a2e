"""DEQ behaviour against hand-computed references: phantom damping, Anderson mixing, exact iteration
counts, and the diagnostics of the implicit backward (errors name the layer, non-convergence is
counted and warned per direction)."""
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from deq_plugin import DEQ, NonFiniteStateError
from deq_plugin.solvers import anderson


class LinearCell(nn.Module):
    """f(z, u) = A z + B u on row vectors, float64."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", a)
        self.register_buffer("B", b)

    def forward(self, z, u):
        return z @ self.A.T + u @ self.B.T


class HalvingCell(nn.Module):
    """f(z, u) = z / 2 + u: contraction 1/2, fixed point 2u."""

    def forward(self, z, u):
        return 0.5 * z + u


class TanhCell(nn.Module):
    """f(z, u) = tanh(W z + u) with ||W||₂ = 0.9."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        w = torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        self.register_buffer("W", 0.9 * w / torch.linalg.matrix_norm(w, 2))

    def forward(self, z, u):
        return torch.tanh(z @ self.W.T + u)


@pytest.mark.parametrize("tau, steps", [(0.5, 3), (0.3, 1), (0.8, 2)])
def test_phantom_gradient_with_damping_matches_its_closed_form_on_a_linear_cell(tau, steps):
    """K damped steps z <- (1 - τ) z + τ (A z + B u) from the detached z* have du-Jacobian
    (I - M^K)(I - A)^{-1} B with M = (1 - τ) I + τ A."""
    g = torch.Generator().manual_seed(0)
    d = 5
    a = torch.randn(d, d, dtype=torch.float64, generator=g)
    a = 0.6 * a / torch.linalg.matrix_norm(a, 2)
    b = torch.randn(d, d, dtype=torch.float64, generator=g)
    deq = DEQ(LinearCell(a, b), tol=1e-13, max_iter=500, grad="phantom", phantom_steps=steps, phantom_tau=tau)
    u = torch.randn(1, d, dtype=torch.float64, generator=g)
    got = jacobian(lambda u_: deq(u_)[0], u)[:, 0, :]
    eye = torch.eye(d, dtype=torch.float64)
    m = (1 - tau) * eye + tau * a
    expected = (eye - torch.linalg.matrix_power(m, steps)) @ torch.linalg.solve(eye - a, b)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    undamped = (eye - torch.linalg.matrix_power(a, steps)) @ torch.linalg.solve(eye - a, b)
    assert (expected - undamped).abs().max() > 1e-2  # τ matters here: ignoring it would fail


def reference_anderson(f, x0: np.ndarray, history: int, regularization: float, mixing: float, tol: float,
                       max_iter: int) -> tuple[np.ndarray, int]:
    """Anderson acceleration of one sample written out from its definition: returns the last
    iterate (f of it when converged) and the number of evaluations of f."""
    xs, fs = [x0], [f(x0)]
    evaluations = 1
    x = fs[0]
    for k in range(1, max_iter + 1):
        if k > 1:
            g = np.stack([fi - xi for fi, xi in zip(fs, xs)])  # (n, D)
            gram = g @ g.T
            gram = gram + regularization * np.mean(np.diag(gram)) * np.eye(len(gram))
            weights = np.linalg.solve(gram, np.ones(len(gram)))
            weights = weights / weights.sum()
            x = mixing * (weights @ np.stack(fs)) + (1 - mixing) * (weights @ np.stack(xs))
        fx = f(x)
        evaluations += 1
        xs, fs = (xs + [x])[-history:], (fs + [fx])[-history:]
        if np.linalg.norm(fx - x) / np.linalg.norm(fx) <= tol:
            return fx, evaluations
    return x, evaluations


@pytest.mark.parametrize("mixing", [0.6, 0.25])
def test_anderson_with_mixing_below_one_matches_a_hand_written_reference(mixing):
    cell = TanhCell(6)
    u = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for max_iter in range(1, 9):
        result = anderson(lambda z: cell(z, u), torch.zeros_like(u), tol=1e-30, max_iter=max_iter, history=3,
                          regularization=1e-4, mixing=mixing)
        for i in range(len(u)):
            f = lambda x: cell(torch.from_numpy(x)[None], u[i : i + 1])[0].numpy()  # noqa: E731
            expected, _ = reference_anderson(f, np.zeros(6), 3, 1e-4, mixing, 1e-30, max_iter)
            np.testing.assert_allclose(result.z[i].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_converged_anderson_counts_evaluations_as_the_reference_does():
    cell = TanhCell(6)
    u = torch.randn(1, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    f = lambda x: cell(torch.from_numpy(x)[None], u)[0].numpy()  # noqa: E731
    for tol, mixing in [(1e-6, 1.0), (1e-9, 0.7)]:
        deq = DEQ(cell, solver="anderson", tol=tol, max_iter=100, solver_options={"mixing": mixing})
        with torch.no_grad():  # the solver's own result, without phantom steps after it
            z = deq(u)
        expected_z, evaluations = reference_anderson(f, np.zeros(6), 5, 1e-4, mixing, tol, 100)
        assert deq.stats.converged and deq.stats.n_iter == evaluations
        np.testing.assert_allclose(z[0].detach().numpy(), expected_z, rtol=1e-10)


@pytest.mark.parametrize("tol", [0.1, 1e-3, 1e-6])
def test_converged_picard_and_anderson_report_the_exact_number_of_cell_evaluations(tol):
    """On f(z) = z/2 + c from 0: z_k = 2c(1 - 2^-k), so Picard's relative residual at evaluation k is
    1/(2^k - 1) and it stops at the first k with 2^k >= 1 + 1/tol. Anderson with one iterate of
    history and mixing β moves x_k = x_{k-1} + β(f(x_{k-1}) - x_{k-1}) from x_1 = f(0) = c, so its
    residual at x_k is ρ^(k-1) / (4 - ρ^(k-1)) with ρ = 1 - β/2, after k + 1 evaluations."""
    u = torch.full((2, 3), 0.7, dtype=torch.float64)
    u[1] *= -3.0
    picard_count = math.ceil(math.log2(1 + 1 / tol))
    deq = DEQ(HalvingCell(), tol=tol, max_iter=200, check_every=1)
    deq(u)
    assert deq.stats.converged and deq.stats.n_iter == picard_count
    for mixing in (1.0, 0.5):
        rho = 1 - mixing / 2
        k = next(k for k in range(1, 200) if rho ** (k - 1) / (4 - rho ** (k - 1)) <= tol)
        deq = DEQ(HalvingCell(), solver="anderson", tol=tol, max_iter=200, check_every=1,
                  solver_options={"history": 1, "mixing": mixing})
        deq(u)
        assert deq.stats.converged and deq.stats.n_iter == k + 1
        if mixing == 1.0:
            assert deq.stats.n_iter == picard_count  # undamped, one-iterate Anderson is Picard plus its first evaluation


def test_a_non_finite_adjoint_in_the_implicit_backward_names_the_layer():
    deq = DEQ(TanhCell(4), grad="implicit", tol=1e-10, name="features.2.stack")
    u = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    z = deq(u)
    upstream = torch.ones_like(z)
    upstream[1, 0] = float("nan")
    with pytest.raises(NonFiniteStateError, match=r"^DEQ layer 'features.2.stack': .*non-finite"):
        z.backward(upstream)


def test_forward_and_backward_non_convergence_are_counted_and_warned_separately(caplog):
    from patches import deq_layer_stats

    deq = DEQ(TanhCell(8), grad="implicit", tol=1e-14, max_iter=3, backward_max_iter=2, name="core")
    model = nn.Sequential(deq)
    u = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    with caplog.at_level(logging.WARNING, logger="deq_plugin"):
        for _ in range(3):
            deq(u).sum().backward()
    assert deq.unconverged_solves == {"forward": 3, "backward": 3}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # one per direction within the rate limit, the backward one not swallowed
    assert "'core': forward solve did not converge" in messages[0]
    assert "'core': adjoint (backward) solve did not converge" in messages[1] and "approximate" in messages[1]
    stats = deq_layer_stats(model)
    assert stats["deq/core/unconverged_forward_total"] == 3 and stats["deq/core/unconverged_backward_total"] == 3


def test_metrics_log_each_layers_count_of_unconverged_solves(tmp_path, mnist_root):
    """Tiny NICE-DEQ under maximum likelihood: one forward per coupling per step, none converging in one
    iteration, so the running total logged at step k is k + 1 (the swap's probe forward at build time
    is the first)."""
    import json

    from tiny_runs import tiny_config, train_losses

    train_losses(tiny_config("nice_deq", loss__name="mle", deq__max_iter=1, deq__on_unconverged="warn"), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keys = [k for k in records[0] if k.endswith("/unconverged_forward_total")]
    assert len(keys) == 4  # the four coupling MLPs
    for record in records:
        assert all(record[k] == record["step"] + 1 for k in keys)


def test_a_host_layer_unconverged_on_the_probe_batch_stops_the_build_unless_told_to_warn(mnist_root):
    from main import model_transform_for
    from score_matching.tasks import build_task
    from tiny_runs import tiny_config

    config = tiny_config("nice_deq", loss__name="mle", deq__max_iter=1)
    with pytest.raises(ValueError, match=r"'couplings.0.net.stack'.*did not converge on the example inputs"):
        build_task(config, torch.device("cpu"), model_transform_for(config))
    config.deq.on_unconverged = "warn"
    with pytest.warns(RuntimeWarning, match="did not converge on the example inputs"):
        build_task(config, torch.device("cpu"), model_transform_for(config))
