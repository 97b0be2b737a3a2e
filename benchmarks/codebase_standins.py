"""Score models written the way public score codebases write them, to test and benchmark `deq_plugin.swap` on.

Written here from the published architectures' descriptions (not copied):
- `NCSNv2Standin`: an NCSNv2-style model; identity-shortcut `ResidualBlock`s with conv1, conv2,
  non_linearity, a conditional instance norm (InstanceNorm++ style, forward (x, y)) as normalize1/2
  and dilated convolutions, kept in `nn.ModuleList`s; the score is divided by the noise level.
- `DDPMStandin`: a DDPM-style network (blocks at down[i].block[j], mid.block_1/2); `ResnetBlock`s with GroupNorm, SiLU, dropout and a time
  embedding `temb` added between the convolutions, a 1x1 `nin_shortcut` when channels change.
- `LearnedShortcutBlock`: a residual block whose shortcut is a 1x1 convolution.
- `MLPEnergy`: an energy MLP whose layers sit in an `nn.ModuleList`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConditionalInstanceNormPP(nn.Module):
    """Instance norm whose per-class scale/shift also re-injects the normalised channel means."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.instance_norm = nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)
        self.embed = nn.Embedding(num_classes, 3 * num_features)
        self.embed.weight.data[:, : 2 * num_features].normal_(1.0, 0.02)
        self.embed.weight.data[:, 2 * num_features :].zero_()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        means = x.mean(dim=(2, 3))
        m, v = means.mean(dim=-1, keepdim=True), means.var(dim=-1, keepdim=True)
        means = (means - m) / torch.sqrt(v + 1e-5)
        gamma, alpha, beta = self.embed(y).chunk(3, dim=-1)
        h = self.instance_norm(x) + (means * alpha)[..., None, None]
        return gamma[..., None, None] * h + beta[..., None, None]


class ResidualBlock(nn.Module):
    """NCSNv2-style block: x + conv2(act(norm2(conv1(act(norm1(x, y)))), y)); a conv shortcut if channels change."""

    def __init__(self, input_dim: int, output_dim: int, num_classes: int, dilation: int = 1) -> None:
        super().__init__()
        self.input_dim, self.output_dim = input_dim, output_dim
        self.non_linearity = nn.ELU()
        self.normalize1 = ConditionalInstanceNormPP(input_dim, num_classes)
        self.conv1 = nn.Conv2d(input_dim, output_dim, 3, padding=dilation, dilation=dilation)
        self.normalize2 = ConditionalInstanceNormPP(output_dim, num_classes)
        self.conv2 = nn.Conv2d(output_dim, output_dim, 3, padding=dilation, dilation=dilation)
        if input_dim != output_dim:
            self.shortcut = nn.Conv2d(input_dim, output_dim, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.conv1(self.non_linearity(self.normalize1(x, y)))
        h = self.conv2(self.non_linearity(self.normalize2(h, y)))
        skip = x if self.input_dim == self.output_dim else self.shortcut(x)
        return skip + h


class NCSNv2Standin(nn.Module):
    """A small NCSNv2-like score network s(x, y) = net(x, y) / σ_y with blocks in ModuleLists."""

    def __init__(self, channels: int = 3, width: int = 8, num_classes: int = 4) -> None:
        super().__init__()
        self.register_buffer("sigmas", torch.tensor([1.0, 0.5, 0.25, 0.1])[:num_classes])
        self.begin_conv = nn.Conv2d(channels, width, 3, padding=1)
        self.res1 = nn.ModuleList([ResidualBlock(width, width, num_classes), ResidualBlock(width, width, num_classes)])
        self.res2 = nn.ModuleList(
            [ResidualBlock(width, 2 * width, num_classes, dilation=2), ResidualBlock(2 * width, 2 * width, num_classes, dilation=2)]
        )
        self.res3 = nn.ModuleList(
            [ResidualBlock(2 * width, 2 * width, num_classes, dilation=4), ResidualBlock(2 * width, 2 * width, num_classes, dilation=4)]
        )
        self.act = nn.ELU()
        self.end_conv = nn.Conv2d(2 * width, channels, 3, padding=1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.begin_conv(2 * x - 1)
        for layer in self.res1:
            h = layer(h, y)
        for layer in self.res2:
            h = layer(h, y)
        for layer in self.res3:
            h = layer(h, y)
        return self.end_conv(self.act(h)) / self.sigmas[y][:, None, None, None]


class ResnetBlock(nn.Module):
    """DDPM-style block: x + conv2(dropout(act(norm2(conv1(act(norm1 x)) + proj(act temb))))."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(4, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(4, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps t (B,) into (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class DDPMStandin(nn.Module):
    """A small DDPM-like noise predictor ε(x, t) with a time-embedding MLP and ResnetBlocks."""

    def __init__(self, channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.width = width
        self.temb = nn.ModuleList([nn.Linear(width, 4 * width), nn.Linear(4 * width, 4 * width)])
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.ModuleList([nn.Module(), nn.Module()])
        self.down[0].block = nn.ModuleList([ResnetBlock(width, width, 4 * width), ResnetBlock(width, width, 4 * width)])
        self.down[1].block = nn.ModuleList([ResnetBlock(width, 2 * width, 4 * width)])
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(2 * width, 2 * width, 4 * width)
        self.mid.block_2 = ResnetBlock(2 * width, 2 * width, 4 * width)
        self.norm_out = nn.GroupNorm(4, 2 * width)
        self.conv_out = nn.Conv2d(2 * width, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.temb[1](F.silu(self.temb[0](timestep_embedding(t, self.width))))
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h, temb)
        h = self.mid.block_2(self.mid.block_1(h, temb), temb)
        return self.conv_out(F.silu(self.norm_out(h)))


class LearnedShortcutBlock(nn.Module):
    """A residual block whose shortcut is a 1x1 convolution, even at equal channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(channels, channels, 1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.conv2(F.elu(self.conv1(F.elu(x))))


class MLPEnergy(nn.Module):
    """E(x) = w · softplus(L_k(... softplus(L_1 x))) + ½||x||², layers in an nn.ModuleList; score = -∇E."""

    def __init__(self, dim: int = 4, hidden: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden)] + [nn.Linear(hidden, hidden) for _ in range(depth - 1)])
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.layers:
            h = F.softplus(layer(h))
        return self.readout(h).squeeze(-1) + 0.5 * x.pow(2).sum(-1)
