"""Tests of the NCSN layers and models and of annealed Langevin sampling, against hand-derived references."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from configs.ncsn_twores import get_config as twores_config
from configs.overrides import apply_overrides
from configs.validate import validate_config
from score_matching.models import MODELS
from score_matching.models.ncsn import RefineNetNCSN, TwoResNCSN
from score_matching.models.ncsn_layers import ConditionalResidualBlock, InstanceNorm2dPlus
from score_matching.tasks.ncsn import build_ncsn_model
from score_matching.sampling import (
    annealed_langevin_dynamics,
    geometric_sigmas,
    save_image_grid,
    save_samples_npz,
)

MODEL_CLASSES = (RefineNetNCSN, TwoResNCSN)
SIGMAS = torch.tensor([1.0, 0.5, 0.25, 0.1, 0.05])


def _inputs(batch: int, channels: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, size, size, generator=g)
    labels = torch.randint(0, len(SIGMAS), (batch,), generator=g)
    return x, labels


# --- models ---------------------------------------------------------------------------------


def test_models_are_registered() -> None:
    assert MODELS.get("ncsn_refinenet") is RefineNetNCSN
    assert MODELS.get("ncsn_twores") is TwoResNCSN


@pytest.mark.parametrize("cls", MODEL_CLASSES)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
@pytest.mark.parametrize("conditioning", ["cin++", "sigma"])
def test_output_has_input_shape(cls: type, channels: int, size: int, conditioning: str) -> None:
    torch.manual_seed(0)
    model = cls(SIGMAS, in_channels=channels, image_size=size, ngf=8, conditioning=conditioning)
    x, labels = _inputs(3, channels, size)
    out = model(x, labels)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_instance_norm_plus_matches_hand_computation() -> None:
    torch.manual_seed(0)
    batch, channels, h, w, classes = 3, 5, 4, 6, 4
    norm = InstanceNorm2dPlus(channels, classes).double()
    with torch.no_grad():
        for p in (norm.gamma, norm.alpha, norm.beta):
            p.normal_()
    x = torch.randn(batch, channels, h, w, dtype=torch.float64) * 3 + 2
    y = torch.tensor([2, 0, 3])
    eps = 1e-5
    expected = torch.empty_like(x)
    for b in range(batch):
        chan_means = [x[b, c].sum() / (h * w) for c in range(channels)]
        m = sum(chan_means) / channels
        v = sum((mu - m) ** 2 for mu in chan_means) / (channels - 1)
        for c in range(channels):
            var = ((x[b, c] - chan_means[c]) ** 2).sum() / (h * w)
            normed = (x[b, c] - chan_means[c]) / math.sqrt(var + eps)
            scaled_mean = (chan_means[c] - m) / math.sqrt(v + eps)
            k = y[b]
            expected[b, c] = norm.gamma[k, c] * (normed + norm.alpha[k, c] * scaled_mean) + norm.beta[k, c]
    torch.testing.assert_close(norm(x, y), expected, rtol=1e-10, atol=1e-10)


def test_unconditional_instance_norm_plus_ignores_labels() -> None:
    torch.manual_seed(0)
    norm = InstanceNorm2dPlus(4, num_classes=None)
    assert norm.gamma.shape == (1, 4)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(norm(x, torch.tensor([0, 0])), norm(x, torch.tensor([7, 3])))


@pytest.mark.parametrize("cls", MODEL_CLASSES)
def test_cin_conditioning_uses_the_labels(cls: type) -> None:
    torch.manual_seed(0)
    model = cls(SIGMAS, in_channels=1, image_size=16, ngf=8)
    x, _ = _inputs(2, 1, 16)
    out0 = model(x, torch.zeros(2, dtype=torch.long))
    out3 = model(x, torch.full((2,), 3, dtype=torch.long))
    assert (out0 - out3).abs().max() > 1e-4 * out0.abs().max()


@pytest.mark.parametrize("cls", MODEL_CLASSES)
def test_sigma_conditioning_divides_a_label_free_network_by_sigma(cls: type) -> None:
    torch.manual_seed(0)
    model = cls(SIGMAS, in_channels=3, image_size=16, ngf=8, conditioning="sigma")
    assert all(m.num_classes is None for m in model.modules() if isinstance(m, InstanceNorm2dPlus))
    x, _ = _inputs(1, 3, 16)
    x = x.expand(len(SIGMAS), -1, -1, -1)
    labels = torch.arange(len(SIGMAS))
    # The same image at every level: out · σ_label must be one label-independent network output.
    scaled = model(x, labels) * SIGMAS.view(-1, 1, 1, 1)
    for k in range(1, len(SIGMAS)):
        torch.testing.assert_close(scaled[k], scaled[0], rtol=1e-5, atol=1e-6)
    assert scaled.abs().max() > 0


@pytest.mark.parametrize("cls", MODEL_CLASSES)
def test_residual_blocks_are_named_and_swappable(cls: type) -> None:
    torch.manual_seed(0)
    model = cls(SIGMAS, in_channels=1, image_size=16, ngf=8)
    assert isinstance(model.residual_block_names, tuple)
    for name in model.residual_block_names:
        block = model.get_submodule(name)
        assert isinstance(block, ConditionalResidualBlock)
        assert list(inspect.signature(block.forward).parameters) == ["x", "y"]

    name = "deq_res" if cls is TwoResNCSN else "res3.1"
    seen = []

    class Recorder(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            seen.append((x.shape, y.clone()))
            return torch.zeros_like(x)

    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    x, labels = _inputs(2, 1, 16)
    before = model(x, labels)
    setattr(parent, child, Recorder())
    after = model(x, labels)
    assert len(seen) == 1 and seen[0][0][0] == 2 and torch.equal(seen[0][1], labels)
    assert not torch.allclose(before, after)


def test_residual_block_shortcuts_and_resampling() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, 8)
    y = torch.tensor([0, 1])
    plain = ConditionalResidualBlock(6, 6, num_classes=2)
    with torch.no_grad():
        plain.conv2.weight.zero_()
        plain.conv2.bias.zero_()
    torch.testing.assert_close(plain(x, y), x)  # identity shortcut once the residual branch is zero

    down = ConditionalResidualBlock(6, 4, num_classes=2, downsample=True)
    with torch.no_grad():
        down.conv2.weight.zero_()
        down.conv2.bias.zero_()
    w, b = down.shortcut.weight[:, :, 0, 0], down.shortcut.bias
    projected = torch.einsum("oc,bchw->bohw", w, x) + b.view(1, -1, 1, 1)
    pooled = projected.reshape(2, 4, 4, 2, 4, 2).mean(dim=(3, 5))
    torch.testing.assert_close(down(x, y), pooled)

    dilated = ConditionalResidualBlock(6, 6, num_classes=2, downsample=True, dilation=2)
    assert dilated(x, y).shape == x.shape


@pytest.mark.parametrize("cls", MODEL_CLASSES)
def test_softplus_model_has_a_finite_second_derivative(cls: type) -> None:
    torch.manual_seed(0)
    model = cls(SIGMAS, in_channels=1, image_size=8, ngf=4, activation="softplus").double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([2])
    w = torch.randn(x.shape, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)

    def grad_of_projection(x: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad((model(x, labels) * w).sum(), x, create_graph=create_graph)
        return x, grad

    leaf, grad = grad_of_projection(x, create_graph=True)
    (hvp,) = torch.autograd.grad((grad * v).sum(), leaf)
    h = 1e-5
    fd = (grad_of_projection(x + h * v, False)[1] - grad_of_projection(x - h * v, False)[1]) / (2 * h)
    assert torch.isfinite(hvp).all() and hvp.abs().max() > 1e-8
    torch.testing.assert_close(hvp, fd, rtol=1e-5, atol=1e-7)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"activation": "relu"}, r"'relu'.*softplus.*elu"),
        ({"conditioning": "time"}, r"'time'.*cin\+\+.*sigma"),
        ({"num_classes": 3}, r"num_classes=3.*5"),
        ({"ngf": 0}, r"ngf.*0"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TwoResNCSN(SIGMAS, **kwargs)
    with pytest.raises(ValueError, match=r"positive.*-1\.0"):
        RefineNetNCSN([1.0, -1.0])


def test_bad_forward_inputs_are_named() -> None:
    model = TwoResNCSN(SIGMAS, in_channels=1, image_size=8, ngf=4)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 4\].*\[0, 5\]"):
        model(x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\).*\(2, 3, 8, 8\)"):
        model(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"integer tensor of shape \(2,\)"):
        model(x, torch.tensor([0.0, 1.0]))


# --- sampling -------------------------------------------------------------------------------


def _gaussian_score(mu: torch.Tensor, s2: float, sigmas: torch.Tensor):
    """The exact score of N(mu, s2 I) convolved with N(0, σ_label² I)."""

    def score(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        var = s2 + sigmas[labels].to(x.dtype) ** 2
        return -(x - mu) / var.view(-1, *([1] * (x.ndim - 1)))

    return score


def _exact_langevin_moments(
    m: float, v: float, mu: float, s2: float, sigmas: list[float], steps: int, eps: float, denoise: bool
) -> tuple[float, float]:
    """Mean and variance of the linear-Gaussian Langevin chain, propagated in closed form."""
    for sigma in sigmas:
        alpha = eps * (sigma / sigmas[-1]) ** 2
        shrink = 1 - alpha / (2 * (s2 + sigma**2))
        for _ in range(steps):
            m = mu + shrink * (m - mu)
            v = shrink**2 * v + alpha
    if denoise:
        keep = s2 / (s2 + sigmas[-1] ** 2)
        m, v = mu + keep * (m - mu), keep**2 * v
    return m, v


@pytest.mark.parametrize("denoise", [False, True])
def test_langevin_matches_closed_form_gaussian(denoise: bool) -> None:
    sigmas = torch.tensor([1.0, 0.5])
    mu = torch.tensor([1.0, -2.0])
    s2, eps, steps, n = 0.25, 0.02, 200, 100_000
    g = torch.Generator().manual_seed(0)
    x0 = 2.0 * torch.randn(n, 2, generator=g)
    x = annealed_langevin_dynamics(_gaussian_score(mu, s2, sigmas), x0, sigmas, steps, eps, denoise, g)

    sample_mean, sample_var = x.double().mean(0), x.double().var(0)
    # The chain's target is the perturbed data distribution N(mu, s2 + σ_L²), or after denoising
    # that shrunk towards mu; the Langevin step adds a bias of about α/(4v) = 1 % to the variance.
    target_var = s2 + sigmas[-1].item() ** 2
    if denoise:
        target_var *= (s2 / target_var) ** 2
    for d in range(2):
        m, v = _exact_langevin_moments(0.0, 4.0, mu[d].item(), s2, sigmas.tolist(), steps, eps, denoise)
        assert abs(sample_mean[d].item() - m) < 5 * math.sqrt(v / n)
        assert abs(sample_var[d].item() / v - 1) < 5 * math.sqrt(2 / n)
        assert abs(sample_mean[d].item() - mu[d].item()) < 5 * math.sqrt(v / n)
        assert abs(sample_var[d].item() / target_var - 1) < 0.01 + 5 * math.sqrt(2 / n)


def test_step_sizes_follow_the_schedule() -> None:
    sigmas = torch.tensor([1.0, 0.5, 0.25])
    eps, steps, n, drift = 0.01, 3, 40_000, 50.0
    seen_labels = []

    def constant_score(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen_labels.append(labels.clone())
        return torch.full_like(x, drift)

    states = []
    x0 = torch.zeros(n, 1, dtype=torch.float64)
    annealed_langevin_dynamics(
        constant_score, x0, sigmas, steps, eps, denoise=True,
        generator=torch.Generator().manual_seed(0), callback=lambda i, x: states.append((i, x.clone())),
    )
    assert [i for i, _ in states] == list(range(len(sigmas) * steps + 1))
    xs = [x0] + [x for _, x in states]
    for level, sigma in enumerate(sigmas.tolist()):
        alpha = eps * (sigma / 0.25) ** 2
        for t in range(steps):
            k = level * steps + t
            increment = xs[k + 1] - xs[k]
            assert torch.all(seen_labels[k] == level) and seen_labels[k].dtype == torch.long
            assert increment.mean().item() == pytest.approx(alpha * drift / 2, rel=0.01)
            assert increment.var().item() == pytest.approx(alpha, rel=0.05)
    assert torch.all(seen_labels[-1] == len(sigmas) - 1)
    torch.testing.assert_close(xs[-1] - xs[-2], torch.full_like(x0, 0.25**2 * drift))


def test_sampler_keeps_autograd_and_eval_mode_and_detaches() -> None:
    mu = torch.tensor([0.5, -0.5])

    class EnergyScore(nn.Module):
        """Score by autograd of a Gaussian log-density: needs grad enabled at sampling time."""

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            assert torch.is_grad_enabled() and not self.training
            x = x.detach().requires_grad_(True)
            log_p = -0.5 * ((x - mu) ** 2).sum()
            (score,) = torch.autograd.grad(log_p, x)
            return score

    model = EnergyScore().train()
    out, trajectory = annealed_langevin_dynamics(
        model, torch.zeros(8, 2), [1.0, 0.5], 4, 0.01, generator=torch.Generator().manual_seed(0),
        return_trajectory=True,
    )
    assert model.training
    assert not out.requires_grad and out.grad_fn is None
    assert len(trajectory) == 2 * 4 + 1 and torch.equal(trajectory[-1], out)


def test_sampling_is_deterministic_given_a_generator() -> None:
    torch.manual_seed(0)
    sigmas = SIGMAS[:2]
    model = TwoResNCSN(sigmas, in_channels=1, image_size=8, ngf=4)
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))

    def run(seed: int) -> torch.Tensor:
        return annealed_langevin_dynamics(model, x0, sigmas, 2, 1e-5, generator=torch.Generator().manual_seed(seed))

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert first.shape == x0.shape and torch.isfinite(first).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sigmas": [0.1, 1.0]}, r"decreasing.*\[0\.1, 1\.0\]"),
        ({"n_steps_each": 0}, r"n_steps_each.*0"),
        ({"step_lr": -1.0}, r"step_lr.*-1\.0"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"score_fn": lambda x, y: x, "x_init": torch.zeros(2, 1), "sigmas": [1.0, 0.1], "n_steps_each": 1,
            "step_lr": 0.1}
    with pytest.raises(ValueError, match=match):
        annealed_langevin_dynamics(**{**args, **kwargs})


def test_geometric_sigmas() -> None:
    sigmas = geometric_sigmas(1.0, 0.01, 5)
    torch.testing.assert_close(sigmas, torch.tensor([1.0, 10**-0.5, 0.1, 10**-1.5, 0.01]))


# --- saving ---------------------------------------------------------------------------------


def test_save_image_grid_layout(tmp_path) -> None:
    images = torch.arange(6 * 3 * 8 * 8).reshape(6, 3, 8, 8) % 256 / 255.0
    path = tmp_path / "grid" / "samples.png"
    save_image_grid(images, path, nrow=4)
    grid = np.asarray(Image.open(path).convert("RGB"))
    pad = 2  # torchvision's default padding between and around tiles
    assert grid.shape == (2 * (8 + pad) + pad, 4 * (8 + pad) + pad, 3)
    # Tile 5 sits in the second row, second column: its top-left pixel is at pad + (8 + pad) both ways.
    top = left = pad + 8 + pad
    tile = grid[top : top + 8, left : left + 8]
    expected = np.round(images[5].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(tile, expected)
    with pytest.raises(ValueError, match=r"\.png.*samples\.jpg"):
        save_image_grid(images, tmp_path / "samples.jpg")


def test_save_samples_npz_round_trip(tmp_path) -> None:
    x = torch.randn(3, 1, 4, 4)
    path = tmp_path / "samples.npz"
    save_samples_npz(x, path)
    np.testing.assert_array_equal(np.load(path)["samples"], x.numpy())
    with pytest.raises(ValueError, match=r"\.npz.*samples\.npy"):
        save_samples_npz(x, tmp_path / "samples.npy")


# --- the quick-start recipe -----------------------------------------------------------------


def test_the_quick_start_config_keeps_its_cpu_recipe_and_the_paper_row_keeps_ssm_vr() -> None:
    from configs.ncsn_deq import get_config
    from configs.paper_rows import row_config

    quick = get_config()
    assert (quick.loss.name, quick.model.conditioning, quick.model.activation) == ("anneal_dsm", "sigma", "silu")
    assert (quick.model.ngf, quick.training.batch_size, quick.optim.lr, quick.model.ema_rate) == (8, 64, 1e-3, 0.995)
    assert (quick.model.sigma_max, quick.model.sigma_min, quick.model.num_scales) == (1.0, 0.01, 10)
    assert (quick.sampling.n_steps_each, quick.sampling.step_lr) == (40, 4e-5)
    assert quick.eval.n_steps_each == quick.sampling.n_steps_each and quick.eval.classifier_fd_samples == 256
    # The last step writes the sample grid and a kept checkpoint for --mode=eval.
    assert quick.training.n_iters == quick.training.sample_freq == quick.training.snapshot_freq
    assert (quick.deq.layers, quick.deq.grad, quick.deq.norm, quick.deq.norm_lambda) == ("deq_res", "implicit", "spectral", 2.0)
    paper = row_config("table5/DEQ-SSM-VR NCSN")
    assert (paper.loss.name, paper.model.conditioning, paper.model.activation) == ("anneal_ssm_vr", "cin++", "elu")
    assert (paper.model.ngf, paper.optim.lr, paper.deq.layers) == (128, 1e-4, "deq_res")


def test_deep_twin_chains_untied_blocks_after_deq_res() -> None:
    config = twores_config()
    config.model.deq_res_blocks = 3
    torch.manual_seed(0)
    model = build_ncsn_model(config, 1)
    assert len(model.deq_res_extra) == 2
    assert model.deq_res_extra[0].conv1.weight.data_ptr() != model.deq_res.conv1.weight.data_ptr()
    x, labels = torch.rand(2, 1, 28, 28), torch.tensor([0, 3])
    seen = []
    for block in (model.deq_res, *model.deq_res_extra, model.res2):
        block.register_forward_hook(lambda module, args, out: seen.append((module, args[0], out)))
    model(x, labels)
    (b0, _, out0), (b1, in1, out1), (b2, in2, _), (_, in3, _) = seen
    assert (b0, b1, b2) == (model.deq_res, *model.deq_res_extra)
    assert torch.equal(in1, out0) and torch.equal(in2, out1) and torch.equal(in3, seen[2][2])


@pytest.mark.parametrize("overrides, message", [
    ({"model.name": "ncsn_refinenet"}, "applies to ncsn_twores only"),
    ({"deq.layers": "deq_res"}, "explicit deep twin"),
])
def test_deep_twin_settings_that_cannot_work_are_refused(overrides: dict, message: str) -> None:
    config = apply_overrides(twores_config(), {"model.deq_res_blocks": 3, **overrides})
    with pytest.raises(ValueError, match=message):
        validate_config(config)
