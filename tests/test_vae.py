"""SSM-VAE: shapes, the Aug(k)/DEQ twins, the objective against closed forms, a tiny run end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from main import model_transform_for
from score_matching import run
from score_matching.losses import sliced_score_matching_vr
from score_matching.models.vae import SSMVAE
from score_matching.tasks import build_task
from score_matching.tasks.vae_objective import (
    decoded_images,
    knn_entropy,
    model_inputs,
    reconstruction_nll,
    ssm_vae_loss,
)
from tiny_runs import tiny_config, train_losses

AUGMENT = "score_net.augment"


@pytest.mark.parametrize("likelihood, shape", [("bernoulli", (1, 32, 32)), ("gaussian", (3, 16, 16))])
def test_parts_have_the_documented_shapes(likelihood, shape):
    model = SSMVAE(shape, width=3, z_dim=5, noise_dim=4, augment_depth=2, likelihood=likelihood)
    x = torch.rand(6, *shape)
    z = model.encode(x)
    decoded = model.decode(z)
    assert z.shape == (6, 5) and decoded.shape == (6, *shape) and model(x, z).shape == (6, 5)
    assert model.score(x, z).shape == (6, 5)
    assert model.score_net.augment[0].in_channels == shape[0] + 1 and model.score_net.augment[2].out_channels == 3
    images = decoded_images(decoded, likelihood)
    assert images.min() >= 0 and images.max() <= 1
    if likelihood == "gaussian":
        assert decoded.abs().max() <= 1  # tanh mean


def test_encoder_is_stochastic_given_x_and_reproducible_given_a_generator():
    model = SSMVAE((1, 16, 16), width=2, z_dim=3, noise_dim=3, augment_depth=0, likelihood="bernoulli")
    x = torch.rand(1, 1, 16, 16).expand(4, -1, -1, -1)
    z = model.encode(x, torch.Generator().manual_seed(1))
    assert not torch.allclose(z[0], z[1])
    assert torch.equal(z, model.encode(x, torch.Generator().manual_seed(1)))


def test_bad_sizes_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="multiple of 16, got 28x28"):
        SSMVAE((1, 28, 28), width=2, z_dim=3, noise_dim=3, augment_depth=0, likelihood="bernoulli")
    with pytest.raises(ValueError, match=r"unknown likelihood 'poisson'.*bernoulli"):
        SSMVAE((1, 16, 16), width=2, z_dim=3, noise_dim=3, augment_depth=0, likelihood="poisson")


def test_reconstruction_nll_matches_torch_distributions():
    x01 = torch.rand(3, 1, 4, 4)
    decoded = torch.randn(3, 1, 4, 4)
    binary = model_inputs(x01, "bernoulli", torch.Generator().manual_seed(0))
    expected = -torch.distributions.Bernoulli(logits=decoded).log_prob(binary).sum(dim=(1, 2, 3))
    assert torch.allclose(reconstruction_nll(decoded, binary, "bernoulli", 0.0), expected, atol=1e-5)
    scaled = model_inputs(x01, "gaussian", torch.Generator().manual_seed(0))
    mean = torch.tanh(decoded)
    expected = -torch.distributions.Normal(mean, math.exp(-0.602)).log_prob(scaled).sum(dim=(1, 2, 3))
    assert torch.allclose(reconstruction_nll(mean, scaled, "gaussian", -0.602), expected, atol=1e-4)


def test_model_inputs_binarise_or_rescale_with_one_level_of_noise():
    x01 = torch.full((20000, 1, 1, 1), 0.3)
    binary = model_inputs(x01, "bernoulli", torch.Generator().manual_seed(0))
    assert set(binary.unique().tolist()) == {0.0, 1.0} and abs(binary.mean().item() - 0.3) < 0.01
    scaled = model_inputs(x01, "gaussian", torch.Generator().manual_seed(0))
    assert (scaled - (2 * 0.3 - 1)).abs().max() <= 1 / 256 + 1e-6


class GaussianVAE(nn.Module):
    """z = μ + L ε (L lower-triangular), a score S(z) = −M (z − a), no decoder term: closed forms."""

    def __init__(self, mu: torch.Tensor, lower: torch.Tensor, a: torch.Tensor, m: torch.Tensor) -> None:
        super().__init__()
        self.mu, self.lower = nn.Parameter(mu.clone()), nn.Parameter(lower.clone())
        self.a, self.m = nn.Parameter(a.clone()), nn.Parameter(m.clone())

    def encode(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        eps = torch.randn(x.shape[0], self.mu.shape[0], dtype=x.dtype, generator=generator)
        return self.mu + eps @ torch.tril(self.lower).T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def score(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -(z - self.a) @ self.m.T


def _no_reconstruction(decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], dtype=x.dtype)


def test_entropy_surrogate_gives_the_gradient_of_the_analytic_gaussian_terms():
    # With S the true score −Σ⁻¹(z − μ), the encoder's gradient of the loss must be that of
    # E[−log p(z)] + E[log q(z)] = ½(‖μ‖² + ‖L‖²_F) − Σ log L_ii + const.
    torch.manual_seed(0)
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    lower = torch.tensor([[1.2, 0.0, 0.0], [0.3, 0.7, 0.0], [-0.4, 0.2, 1.5]], dtype=torch.float64)
    precision = torch.linalg.inv(lower @ lower.T)
    model = GaussianVAE(mu, lower, mu, precision)
    x = torch.zeros(200_000, 1, dtype=torch.float64)
    ssm_vae_loss(model, x, sliced_score_matching_vr, _no_reconstruction).backward()

    mu_ref, lower_ref = mu.clone().requires_grad_(), lower.clone().requires_grad_()
    analytic = 0.5 * (mu_ref.square().sum() + torch.tril(lower_ref).square().sum()) - torch.diagonal(lower_ref).log().sum()
    grad_mu, grad_lower = torch.autograd.grad(analytic, (mu_ref, lower_ref))
    assert torch.allclose(model.mu.grad, grad_mu, atol=0.03)
    assert torch.allclose(model.lower.grad, grad_lower, atol=0.03)


def test_score_estimator_gets_exactly_the_ssm_gradient_on_detached_z():
    # Diagonal score S = −(z − a)/b²: with Rademacher v, SSM-VR per row is ½‖z − a‖²/b⁴ − Σ 1/b²,
    # so ψ = (a, b) must get that gradient at the encoder's z and nothing from the ELBO part.
    torch.manual_seed(0)
    mu, lower = torch.tensor([0.5, -1.0]), torch.tensor([[1.2, 0.0], [0.3, 0.7]])
    a, inv_var = torch.tensor([0.1, 0.2]), torch.tensor([0.8, 1.5])
    model = GaussianVAE(mu, lower, a, torch.diag(inv_var))
    x = torch.zeros(64, 1)
    torch.manual_seed(3)
    ssm_vae_loss(model, x, sliced_score_matching_vr, _no_reconstruction).backward()
    torch.manual_seed(3)
    z = model.encode(x).detach()
    a_ref, m_ref = a.clone().requires_grad_(), torch.diag(inv_var).requires_grad_()
    diag = torch.diagonal(m_ref)
    explicit = (0.5 * ((z - a_ref) * diag).square().sum(dim=1) - diag.sum()).mean()
    grad_a, grad_m = torch.autograd.grad(explicit, (a_ref, m_ref))
    assert torch.allclose(model.a.grad, grad_a, atol=1e-5)
    assert torch.allclose(torch.diagonal(model.m.grad), torch.diagonal(grad_m), atol=1e-5)


def test_knn_entropy_matches_the_gaussian_closed_form():
    lower = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [0.2, -0.3, 0.4]], dtype=torch.float64)
    samples = torch.randn(8, 2000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) @ lower.T
    closed_form = 0.5 * torch.logdet(2 * math.pi * math.e * lower @ lower.T)
    assert abs(knn_entropy(samples, 1).mean().item() - closed_form.item()) < 0.1
    with pytest.raises(ValueError, match="k must be in"):
        knn_entropy(samples, 2000)


def _build(name, **overrides):
    config = tiny_config(name, **overrides)
    torch.manual_seed(config.seed)
    return build_task(config, torch.device("cpu"), model_transform_for(config)).model


@pytest.mark.usefixtures("mnist_root")
def test_aug_and_deq_models_differ_only_in_the_augmented_layer():
    models = {name: _build(name) for name in ("vae_aug8", "vae_aug16", "vae_deq")}
    models["aug1"] = _build("vae_baseline", model__augment_depth=1)

    def outside(model):
        return {n: type(m).__name__ for n, m in model.named_modules() if not (n == AUGMENT or n.startswith(AUGMENT + "."))}

    def outside_state(model):
        return {k: v for k, v in model.state_dict().items() if not k.startswith(AUGMENT + ".")}

    reference, reference_state = outside(models["aug1"]), outside_state(models["aug1"])
    for name, model in models.items():
        assert outside(model) == reference, name
        state = outside_state(model)
        assert state.keys() == reference_state.keys() and all(torch.equal(state[k], reference_state[k]) for k in state), name
    convs = {name: sum(isinstance(m, nn.Conv2d) for m in models[name].get_submodule(AUGMENT).modules()) for name in models}
    assert convs["vae_aug8"] == 8 and convs["vae_aug16"] == 16 and convs["aug1"] == 1
    assert type(models["vae_deq"].get_submodule(AUGMENT)).__name__ == "DEQBlock"


@pytest.mark.usefixtures("mnist_root")
def test_the_baseline_offers_no_augment_layer_and_the_loss_must_be_sliced():
    with pytest.raises(ValueError, match=r"unknown DEQ layer\(s\) \['augment'\]; valid: \[\]"):
        _build("vae_baseline", deq__layers="augment")
    with pytest.raises(ValueError, match=r"\['ssm', 'ssm_vr'\].*'dsm'"):
        _build("vae_baseline", loss__name="dsm")


@pytest.mark.usefixtures("mnist_root")
def test_tiny_deq_run_trains_evaluates_and_samples(tmp_path):
    config = tiny_config("vae_deq")
    losses = train_losses(config, tmp_path)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    metrics = run.evaluate(config, str(tmp_path), model_transform_for(config), lambda m: {})
    saved = json.loads((tmp_path / "eval.json").read_text())
    for key in ("test_ssm_vr_loss", "test_neg_elbo_surrogate", "test_elbo", "test_entropy", "params", "params_score_net"):
        assert math.isfinite(saved[key]) and saved[key] == pytest.approx(metrics[key])
    assert saved["test_elbo"] == pytest.approx(-saved["test_recon_nll"] - saved["test_neg_log_prior"] + saved["test_entropy"])
    folder = run.sample(config, str(tmp_path), model_transform_for(config))
    samples = np.load(folder / "sample_step_3.npz")["samples"]
    assert samples.shape == (4, 1, 32, 32) and 0 <= samples.min() and samples.max() <= 1
    assert (folder / "sample_step_3.png").stat().st_size > 0
