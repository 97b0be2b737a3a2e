"""Building blocks of the NCSN RefineNet score models (Song & Ermon, 2019; 2020).

Every block takes the noise-level labels `y` (LongTensor of shape (B,), indices into the
model's noise levels) next to its input, even where it ignores them (unconditional "v2"
normalisation), so blocks can be swapped for one another generically.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from score_matching.models.mlp import check_int, make_activation


class InstanceNorm2dPlus(nn.Module):
    """Instance norm++: instance normalisation that keeps the channel means' relative size.

    out = γ · (IN(x) + α · m̃) + β, where IN(x) normalises each channel of each sample over its
    pixels (biased variance, as `nn.InstanceNorm2d`) and m̃ is that sample's per-channel means
    standardised across channels (unbiased variance, as NCSN). With `num_classes` set, γ, α and β
    are looked up per noise level y (NCSN v1's conditional instance norm++); with
    `num_classes=None` one shared set is learnt and y is ignored (NCSN v2).
    """

    def __init__(self, num_features: int, num_classes: int | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        check_int("num_features", num_features, 1)
        if num_features < 2:
            raise ValueError(
                f"num_features must be >= 2 (channel means are standardised across channels), got {num_features}"
            )
        if num_classes is not None:
            check_int("num_classes", num_classes, 1)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.num_features = num_features
        self.num_classes = num_classes
        self.eps = eps
        rows = 1 if num_classes is None else num_classes
        self.gamma = nn.Parameter(torch.empty(rows, num_features))
        self.alpha = nn.Parameter(torch.empty(rows, num_features))
        self.beta = nn.Parameter(torch.empty(rows, num_features))
        self.reset_parameters()

    @property
    def conditional(self) -> bool:
        """Whether γ, α, β depend on the noise level."""
        return self.num_classes is not None

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_classes={self.num_classes}, eps={self.eps}"

    def reset_parameters(self) -> None:
        """NCSN's initialisation: γ, α ~ N(1, 0.02²), β = 0."""
        nn.init.normal_(self.gamma, 1.0, 0.02)
        nn.init.normal_(self.alpha, 1.0, 0.02)
        nn.init.zeros_(self.beta)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Normalise x (B, C, H, W) with the affine parameters of noise levels y (B,)."""
        means = x.mean(dim=(2, 3))
        means = (means - means.mean(dim=1, keepdim=True)) / torch.sqrt(means.var(dim=1, keepdim=True) + self.eps)
        h = F.instance_norm(x, eps=self.eps)
        if self.conditional:
            gamma, alpha, beta = self.gamma[y], self.alpha[y], self.beta[y]
        else:
            gamma, alpha, beta = self.gamma, self.alpha, self.beta
        h = h + (alpha * means)[..., None, None]
        return gamma[..., None, None] * h + beta[..., None, None]


def _conv3x3(in_channels: int, out_channels: int, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=bias)


class ConditionalResidualBlock(nn.Module):
    """NCSN's pre-activation residual block: (norm, act, conv3x3) ×2 plus a shortcut.

    `downsample=True` with `dilation=1` halves the resolution: the second conv is followed by a
    2×2 mean pool and the shortcut is a 1×1 conv followed by the same pool. `downsample=True` with
    `dilation>1` is NCSN's block for its lowest resolutions: the resolution is kept and the
    dilated convs enlarge the receptive field instead; its shortcut is a dilated 3×3 conv. The
    shortcut is the identity when the channels match and nothing is down-sampled; otherwise
    it is learnt (1×1 conv, or dilated 3×3 when dilated).

    `forward(x, y)` is the uniform signature of all swappable residual blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_classes: int | None,
        activation: str = "elu",
        downsample: bool = False,
        dilation: int = 1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, 1)
        check_int("out_channels", out_channels, 1)
        check_int("dilation", dilation, 1)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.downsample = downsample
        self.dilation = dilation
        self.activation = activation
        self.eps = eps
        self.pool = downsample and dilation == 1
        self.act = make_activation(activation)
        # NCSN keeps the input width through conv1 in a down block and widens in conv2.
        mid = in_channels if downsample else out_channels
        self.norm1 = InstanceNorm2dPlus(in_channels, num_classes, eps)
        self.conv1 = _conv3x3(in_channels, mid, dilation)
        self.norm2 = InstanceNorm2dPlus(mid, num_classes, eps)
        self.conv2 = _conv3x3(mid, out_channels, dilation)
        if in_channels == out_channels and not downsample:
            self.shortcut: nn.Module | None = None
        elif dilation > 1:
            self.shortcut = _conv3x3(in_channels, out_channels, dilation)
        else:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def extra_repr(self) -> str:
        return f"downsample={self.downsample}, dilation={self.dilation}"

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """The block's output for input x (B, in_channels, H, W) at noise levels y (B,)."""
        h = self.conv1(self.act(self.norm1(x, y)))
        h = self.conv2(self.act(self.norm2(h, y)))
        skip = x if self.shortcut is None else self.shortcut(x)
        if self.pool:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return skip + h


class ResidualConvUnit(nn.Module):
    """RefineNet's RCU: `n_blocks` residual units, each `n_stages` × (norm, act, conv3x3 without bias)."""

    def __init__(
        self,
        channels: int,
        num_classes: int | None,
        activation: str = "elu",
        n_blocks: int = 2,
        n_stages: int = 2,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        check_int("n_blocks", n_blocks, 1)
        check_int("n_stages", n_stages, 1)
        self.act = make_activation(activation)
        self.norms = nn.ModuleList(
            nn.ModuleList(InstanceNorm2dPlus(channels, num_classes, eps) for _ in range(n_stages))
            for _ in range(n_blocks)
        )
        self.convs = nn.ModuleList(
            nn.ModuleList(_conv3x3(channels, channels, bias=False) for _ in range(n_stages)) for _ in range(n_blocks)
        )

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Apply the residual units in turn."""
        for norms, convs in zip(self.norms, self.convs):
            h = x
            for norm, conv in zip(norms, convs):
                h = conv(self.act(norm(h, y)))
            x = x + h
        return x


class MultiResolutionFusion(nn.Module):
    """RefineNet's MSF: normalise and conv3x3 each input to `channels`, resize bilinearly, sum."""

    def __init__(
        self, in_channels: tuple[int, ...], channels: int, num_classes: int | None, eps: float = 1e-5
    ) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("in_channels must list at least one input to fuse")
        self.norms = nn.ModuleList(InstanceNorm2dPlus(c, num_classes, eps) for c in in_channels)
        self.convs = nn.ModuleList(_conv3x3(c, channels) for c in in_channels)

    def forward(self, xs: list[Tensor], y: Tensor, size: tuple[int, int]) -> Tensor:
        """Fuse the feature maps xs into one map of spatial `size`."""
        if len(xs) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} inputs to fuse, got {len(xs)}")
        out = None
        for x, norm, conv in zip(xs, self.norms, self.convs):
            h = F.interpolate(conv(norm(x, y)), size=size, mode="bilinear", align_corners=True)
            out = h if out is None else out + h
        return out


class ChainedResidualPooling(nn.Module):
    """RefineNet's CRP: act, then `n_stages` chained (norm, 5×5 mean pool, conv3x3) paths summed onto x.

    NCSN uses mean rather than max pooling, which keeps the score network smooth.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int | None,
        activation: str = "elu",
        n_stages: int = 2,
        pool_size: int = 5,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        check_int("n_stages", n_stages, 1)
        if not isinstance(pool_size, int) or pool_size < 1 or pool_size % 2 == 0:
            raise ValueError(f"pool_size must be a positive odd int (to keep the resolution), got {pool_size!r}")
        self.pool_size = pool_size
        self.act = make_activation(activation)
        self.norms = nn.ModuleList(InstanceNorm2dPlus(channels, num_classes, eps) for _ in range(n_stages))
        self.convs = nn.ModuleList(_conv3x3(channels, channels, bias=False) for _ in range(n_stages))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Add the chained pooled paths to act(x)."""
        x = self.act(x)
        path = x
        for norm, conv in zip(self.norms, self.convs):
            path = conv(F.avg_pool2d(norm(path, y), self.pool_size, stride=1, padding=self.pool_size // 2))
            x = x + path
        return x


class RefineBlock(nn.Module):
    """A RefineNet block: an RCU per input, MSF (when several inputs), CRP, and an output RCU.

    `in_channels` lists the channels of the inputs, which may have different resolutions; the
    fused output has the spatial `size` given to forward. A single-input block skips the fusion,
    so its input must already have `channels` channels and the size `size`. `end=True` gives the final block
    of the cascade three output residual units instead of one, as in NCSN.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        channels: int,
        num_classes: int | None,
        activation: str = "elu",
        end: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        in_channels = tuple(in_channels)
        if not in_channels:
            raise ValueError("in_channels must list at least one input")
        if len(in_channels) == 1 and in_channels[0] != channels:
            raise ValueError(
                f"a single-input RefineBlock has no fusion conv, so in_channels {in_channels} must equal "
                f"channels={channels}"
            )
        self.in_channels = in_channels
        self.channels = channels
        self.adapt = nn.ModuleList(ResidualConvUnit(c, num_classes, activation, eps=eps) for c in in_channels)
        self.fuse = MultiResolutionFusion(in_channels, channels, num_classes, eps) if len(in_channels) > 1 else None
        self.crp = ChainedResidualPooling(channels, num_classes, activation, eps=eps)
        self.output_rcu = ResidualConvUnit(channels, num_classes, activation, n_blocks=3 if end else 1, eps=eps)

    def forward(self, xs: list[Tensor], y: Tensor, size: tuple[int, int]) -> Tensor:
        """Refine and fuse the feature maps xs into a (B, channels, *size) map."""
        if len(xs) != len(self.adapt):
            raise ValueError(f"expected {len(self.adapt)} inputs, got {len(xs)}")
        hs = [rcu(x, y) for rcu, x in zip(self.adapt, xs)]
        h = hs[0] if self.fuse is None else self.fuse(hs, y, size)
        return self.output_rcu(self.crp(h, y), y)
