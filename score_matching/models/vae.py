"""SSM-VAE (Song et al., 2019, §6.2.1; the paper's §4.1, tables 6 and 7): a VAE whose encoder is
implicit, q_φ(z|x) = law of f_φ(x, ε), trained with a score estimator S_ψ(x, z) ≈ ∇_z log q_φ(z|x).

Submodule names are a stable interface (`patches.vae` turns `score_net.augment` into a DEQ block):
    encoder.noise_embed  Linear(noise_dim -> H·W) + ReLU, ε as one extra image channel
    encoder.convs        4 strided 5×5 convs, m, 2m, 4m, 8m channels, ReLU        (B, c+1, H, W) -> (B, 8m, H/16, W/16)
    encoder.dense        Linear(-> 512) + ReLU;  encoder.out  Linear(512 -> D_z)
    decoder.dense        Linear(D_z -> 8m·H/16·W/16) + ReLU
    decoder.deconvs      4 strided 5×5 transposed convs, 4m, 2m, m, c channels, ReLU between; then
                         nothing (Bernoulli logits) or tanh (Gaussian mean on the [-1, 1] scale)
    score_net.z_embed    Linear(D_z -> H·W) + softplus, z as one extra image channel
    score_net.augment    the augmented pre-processing layer (table 7): `augment_depth` stride-1 5×5
                         convs with m channels + softplus, an nn.Sequential (empty = the baseline)
                         (B, c+1, H, W) -> (B, m, H, W)
    score_net.convs      4 strided 5×5 convs, m … 8m channels, softplus
    score_net.dense      Linear(-> 512) + softplus;  score_net.out  Linear(512 -> D_z)
The augmented layer is built last, so models that differ only in `augment_depth` >= 1 start from
the same weights everywhere else (same seed), and a DEQ twin differs from its host only there.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from score_matching.losses.common import check_choice
from score_matching.models import register_model
from score_matching.models.mlp import check_int

DENSE_WIDTH = 512  # the 512-unit dense layer of every part (table 6)
KERNEL, PADDING = 5, 2
N_STRIDED = 4  # strided convs per network: the image side shrinks by 2**4
LIKELIHOODS = ("bernoulli", "gaussian")


def _check_image_shape(image_shape: tuple[int, int, int]) -> None:
    channels, height, width = image_shape
    check_int("channels", channels, 1)
    side = 2**N_STRIDED
    if height != width or height % side or height < side:
        raise ValueError(f"SSM-VAE needs square images whose side is a multiple of {side}, got {height}x{width}")


def strided_convs(in_channels: int, width: int, activation: type[nn.Module]) -> nn.Sequential:
    """4 strided 5×5 convs with width, 2·width, 4·width, 8·width channels, each followed by `activation`."""
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(N_STRIDED):
        layers += [nn.Conv2d(channels, width * 2**i, KERNEL, stride=2, padding=PADDING), activation()]
        channels = width * 2**i
    return nn.Sequential(*layers)


def augment_stack(in_channels: int, width: int, depth: int) -> nn.Sequential:
    """`depth` stride-1 5×5 convs with `width` channels + softplus (table 7's sequential CNN); depth 0 is empty."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(in_channels if i == 0 else width, width, KERNEL, padding=PADDING), nn.Softplus()]
    return nn.Sequential(*layers)


def _as_channel(h: Tensor, like: Tensor) -> Tensor:
    """(B, H·W) -> (B, 1, H, W) with the spatial size of `like`."""
    return h.view(like.shape[0], 1, *like.shape[2:])


class ImplicitEncoder(nn.Module):
    """z = f_φ(x, ε), ε ~ N(0, I_noise_dim): a sampler of q_φ(z|x) without a tractable density."""

    def __init__(self, image_shape: tuple[int, int, int], width: int, z_dim: int, noise_dim: int) -> None:
        super().__init__()
        channels, height, _ = image_shape
        self.noise_dim = noise_dim
        self.noise_embed = nn.Sequential(nn.Linear(noise_dim, height * height), nn.ReLU())
        self.convs = strided_convs(channels + 1, width, nn.ReLU)
        self.dense = nn.Sequential(nn.Linear(8 * width * (height >> N_STRIDED) ** 2, DENSE_WIDTH), nn.ReLU())
        self.out = nn.Linear(DENSE_WIDTH, z_dim)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One z per image of x (B, c, H, W) -> (B, z_dim), with fresh noise from `generator`."""
        noise = torch.randn(x.shape[0], self.noise_dim, device=x.device, dtype=x.dtype, generator=generator)
        h = self.convs(torch.cat([x, _as_channel(self.noise_embed(noise), x)], dim=1))
        return self.out(self.dense(h.flatten(1)))


class Decoder(nn.Module):
    """z (B, z_dim) -> (B, c, H, W): Bernoulli logits, or the Gaussian mean in [-1, 1] (tanh)."""

    def __init__(self, image_shape: tuple[int, int, int], width: int, z_dim: int, likelihood: str) -> None:
        super().__init__()
        check_choice("likelihood", likelihood, LIKELIHOODS)
        channels, height, _ = image_shape
        self.base_shape = (8 * width, height >> N_STRIDED, height >> N_STRIDED)
        self.dense = nn.Sequential(nn.Linear(z_dim, 8 * width * (height >> N_STRIDED) ** 2), nn.ReLU())
        layers: list[nn.Module] = []
        in_channels = 8 * width
        for i, out_channels in enumerate((4 * width, 2 * width, width, channels)):
            layers.append(nn.ConvTranspose2d(in_channels, out_channels, KERNEL, stride=2, padding=PADDING, output_padding=1))
            if i < N_STRIDED - 1:
                layers.append(nn.ReLU())
            in_channels = out_channels
        if likelihood == "gaussian":
            layers.append(nn.Tanh())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconvs(self.dense(z).view(z.shape[0], *self.base_shape))


class ScoreEstimator(nn.Module):
    """S_ψ(x, z) ≈ ∇_z log q_φ(z|x): (B, c, H, W), (B, z_dim) -> (B, z_dim) (table 6)."""

    def __init__(self, image_shape: tuple[int, int, int], width: int, z_dim: int, augment_depth: int) -> None:
        super().__init__()
        channels, height, _ = image_shape
        z_embed = nn.Sequential(nn.Linear(z_dim, height * height), nn.Softplus())
        convs = strided_convs(width if augment_depth else channels + 1, width, nn.Softplus)
        dense = nn.Sequential(nn.Linear(8 * width * (height >> N_STRIDED) ** 2, DENSE_WIDTH), nn.Softplus())
        out = nn.Linear(DENSE_WIDTH, z_dim)
        augment = augment_stack(channels + 1, width, augment_depth)  # drawn last (see the module docstring)
        self.z_embed, self.augment, self.convs, self.dense, self.out = z_embed, augment, convs, dense, out

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        h = self.augment(torch.cat([x, _as_channel(self.z_embed(z), x)], dim=1))
        return self.out(self.dense(self.convs(h).flatten(1)))


@register_model("ssm_vae")
class SSMVAE(nn.Module):
    """Implicit encoder, decoder and score estimator; forward(x, z) is the score estimate S(x, z).

    Args (the paper's CelebA sizes, from the sliced-score-matching code: width 64, z_dim 32,
    noise_dim 32):
        image_shape: (c, H, W) with H = W a multiple of 16.
        width: m, the channels of the first strided conv (then 2m, 4m, 8m) and of the augmented layer.
        z_dim: D_z, the latent dimension.
        noise_dim: dimension of the implicit encoder's standard-normal noise ε.
        augment_depth: k, the convs of the score estimator's augmented pre-processing layer
            (0: the SSM VAE baseline; 8, 16: Aug(k)).
        likelihood: "bernoulli" (decoder outputs logits; binarised data) or "gaussian" (decoder
            outputs a tanh mean; data scaled to [-1, 1]).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        z_dim: int,
        noise_dim: int,
        augment_depth: int,
        likelihood: str,
    ) -> None:
        super().__init__()
        _check_image_shape(image_shape)
        check_int("width", width, 1)
        check_int("z_dim", z_dim, 1)
        check_int("noise_dim", noise_dim, 1)
        check_int("augment_depth", augment_depth, 0)
        self.image_shape, self.z_dim, self.likelihood = tuple(image_shape), z_dim, likelihood
        self.encoder = ImplicitEncoder(image_shape, width, z_dim, noise_dim)
        self.decoder = Decoder(image_shape, width, z_dim, likelihood)
        self.score_net = ScoreEstimator(image_shape, width, z_dim, augment_depth)

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A sample z ~ q_φ(z|x) per image, differentiable in φ (reparametrised through ε)."""
        return self.encoder(x, generator)

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's output: Bernoulli logits or the Gaussian mean (see `likelihood`)."""
        return self.decoder(z)

    def score(self, x: Tensor, z: Tensor) -> Tensor:
        """S_ψ(x, z), the estimate of ∇_z log q_φ(z|x)."""
        return self.score_net(x, z)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """The score estimate S_ψ(x, z) (the score-matching part of the model)."""
        return self.score(x, z)
