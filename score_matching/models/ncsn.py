"""NCSN score networks: the 4-cascaded RefineNet and the two-resolution "TwoRes" model.

Both follow Table 8 of the DEQ score-matching paper: (a) the SSM-VR NCSN RefineNet and (b) the
model whose `deq_res` block a patch may turn into a DEQ layer; unpatched, (b) is TwoRes NCSN.
A model maps images x (B, C, H, W) and noise-level labels (B,) to a score with x's shape.

Noise conditioning is either NCSN v1's conditional instance norm++ ("cin++": every norm has
per-level γ, α, β) or NCSN v2's ("sigma": unconditional norms, output divided by σ_label).
Every swappable residual block is listed, by dotted module name, in `residual_block_names`;
each has the signature `forward(x, y)` and is looked up at call time, so replacing it (e.g.
`model.res1[0] = new_block` or `setattr(model, "deq_res", new_block)`) takes effect.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from score_matching.models import register_model
from score_matching.models.mlp import check_int, make_activation
from score_matching.models.ncsn_layers import (
    ConditionalResidualBlock,
    InstanceNorm2dPlus,
    RefineBlock,
)

CONDITIONINGS = ("cin++", "sigma")


class _NCSNBase(nn.Module):
    """Shared input checks, noise levels, input centring and output head of the NCSN models."""

    residual_block_names: tuple[str, ...] = ()

    def __init__(
        self,
        sigmas: Tensor | Sequence[float],
        in_channels: int,
        image_size: int,
        ngf: int,
        num_classes: int | None,
        activation: str,
        conditioning: str,
        center_input: bool,
        norm_eps: float,
    ) -> None:
        super().__init__()
        sigmas = torch.as_tensor(sigmas, dtype=torch.get_default_dtype()).detach().clone()
        if sigmas.ndim != 1 or sigmas.numel() == 0:
            raise ValueError(f"sigmas must be a non-empty 1-D tensor of noise levels, got shape {tuple(sigmas.shape)}")
        if not (torch.isfinite(sigmas).all() and (sigmas > 0).all()):
            raise ValueError(f"sigmas must be finite and positive, got {sigmas.tolist()}")
        if num_classes is None:
            num_classes = sigmas.numel()
        if num_classes != sigmas.numel():
            raise ValueError(f"num_classes={num_classes!r} must equal the number of sigmas, {sigmas.numel()}")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {conditioning!r}; valid: {list(CONDITIONINGS)}")
        for name, value, least in (("in_channels", in_channels, 1), ("image_size", image_size, 2), ("ngf", ngf, 2)):
            check_int(name, value, least)
        self.register_buffer("sigmas", sigmas)
        self.in_channels = in_channels
        self.image_size = image_size
        self.ngf = ngf
        self.num_classes = num_classes
        self.conditioning = conditioning
        self.center_input = center_input
        self.activation = activation
        self.norm_eps = norm_eps
        self.begin_conv = nn.Conv2d(in_channels, ngf, 3, padding=1)
        self.end_norm = InstanceNorm2dPlus(ngf, self.norm_classes, norm_eps)
        self.end_act = make_activation(activation)
        self.end_conv = nn.Conv2d(ngf, in_channels, 3, padding=1)

    @property
    def norm_classes(self) -> int | None:
        """The `num_classes` to give the norms: the number of levels for "cin++", None for "sigma"."""
        return self.num_classes if self.conditioning == "cin++" else None

    def _residual_block(
        self, in_channels: int, out_channels: int, downsample: bool = False, dilation: int = 1
    ) -> ConditionalResidualBlock:
        return ConditionalResidualBlock(
            in_channels, out_channels, self.norm_classes, self.activation, downsample, dilation, self.norm_eps
        )

    def _refine_block(self, in_channels: tuple[int, ...], channels: int, end: bool = False) -> RefineBlock:
        return RefineBlock(in_channels, channels, self.norm_classes, self.activation, end, self.norm_eps)

    def _check_inputs(self, x: Tensor, labels: Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        if labels.dtype not in (torch.int64, torch.int32) or labels.shape != (x.shape[0],):
            raise ValueError(
                f"labels must be an integer tensor of shape ({x.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
            )
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}], got values in [{low}, {high}]")

    def _begin(self, x: Tensor, labels: Tensor) -> Tensor:
        """Check the inputs and apply the first conv (after mapping [0, 1] data to [-1, 1] if asked)."""
        self._check_inputs(x, labels)
        return self.begin_conv(2 * x - 1 if self.center_input else x)

    def _end(self, h: Tensor, labels: Tensor) -> Tensor:
        """The output head: norm, activation, conv to the image channels, and the v2 σ scaling."""
        out = self.end_conv(self.end_act(self.end_norm(h, labels)))
        if self.conditioning == "sigma":
            out = out / self.sigmas[labels].view(-1, 1, 1, 1)
        return out


@register_model("ncsn_refinenet")
class RefineNetNCSN(_NCSNBase):
    """The SSM-VR NCSN of Table 8(a): four residual stages feeding a 4-cascaded RefineNet.

    Stages (each two residual blocks, names `resK.0`, `resK.1`):
      res1: ngf→ngf, ngf→2ngf at full resolution;
      res2: down-sampling block (2×2 mean pool), then a plain block, at half resolution;
      res3, res4: NCSN's "down" blocks for the lowest resolution, which keep the resolution and
        use dilations[0] and dilations[1] instead of pooling.
    Only res2 halves the resolution, so any even image size works, 28×28 MNIST included
    (28→14) as well as 32×32 CIFAR-10 (32→16). The cascade refines res4 → 2ngf, then fuses it
    with res3 → ngf, res2 → ngf and res1 → ngf, and a final norm, activation and 3×3 conv map
    ngf channels back to `in_channels`.

    Args:
        sigmas: the noise levels σ_0 > … > σ_{L-1}; labels index into them. Stored as a buffer.
        in_channels: image channels (1 for MNIST, 3 for CIFAR-10).
        image_size: image height and width; inputs of another size are rejected.
        ngf: base channel width (128 in the paper).
        num_classes: number of noise levels; defaults to len(sigmas) and must equal it.
        activation: "elu" (NCSN) or "softplus" (twice differentiable, for exact SM).
        conditioning: "cin++" (NCSN v1) or "sigma" (NCSN v2).
        center_input: map inputs from [0, 1] to [-1, 1] by 2x − 1 first, as NCSN does.
        dilations: dilations of the res3 and res4 stages (NCSN: 2 and 4).
        norm_eps: the ε of every instance norm++.
    """

    residual_block_names = ("res1.0", "res1.1", "res2.0", "res2.1", "res3.0", "res3.1", "res4.0", "res4.1")

    def __init__(
        self,
        sigmas: Tensor | Sequence[float],
        in_channels: int = 3,
        image_size: int = 32,
        ngf: int = 128,
        num_classes: int | None = None,
        activation: str = "elu",
        conditioning: str = "cin++",
        center_input: bool = True,
        dilations: tuple[int, int] = (2, 4),
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__(
            sigmas, in_channels, image_size, ngf, num_classes, activation, conditioning, center_input, norm_eps
        )
        if len(dilations) != 2:
            raise ValueError(f"dilations must give two values (for res3 and res4), got {dilations!r}")
        wide = 2 * ngf
        self.res1 = nn.ModuleList([self._residual_block(ngf, ngf), self._residual_block(ngf, wide)])
        self.res2 = nn.ModuleList([self._residual_block(wide, wide, downsample=True), self._residual_block(wide, wide)])
        self.res3 = nn.ModuleList(
            [
                self._residual_block(wide, wide, downsample=True, dilation=dilations[0]),
                self._residual_block(wide, wide, dilation=dilations[0]),
            ]
        )
        self.res4 = nn.ModuleList(
            [
                self._residual_block(wide, wide, downsample=True, dilation=dilations[1]),
                self._residual_block(wide, wide, dilation=dilations[1]),
            ]
        )
        self.refine1 = self._refine_block((wide,), wide)
        self.refine2 = self._refine_block((wide, wide), ngf)
        self.refine3 = self._refine_block((wide, ngf), ngf)
        self.refine4 = self._refine_block((wide, ngf), ngf, end=True)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """The score at x (B, C, H, W) for noise levels `labels` (B,); same shape as x."""
        h = self._begin(x, labels)
        features = []
        for stage in (self.res1, self.res2, self.res3, self.res4):
            for block in stage:
                h = block(h, labels)
            features.append(h)
        layer1, layer2, layer3, layer4 = features
        h = self.refine1([layer4], labels, layer4.shape[2:])
        h = self.refine2([layer3, h], labels, layer3.shape[2:])
        h = self.refine3([layer2, h], labels, layer2.shape[2:])
        h = self.refine4([layer1, h], labels, layer1.shape[2:])
        return self._end(h, labels)


@register_model("ncsn_twores")
class TwoResNCSN(_NCSNBase):
    """The model of Table 8(b): residual blocks at two resolutions and a 2-cascaded RefineNet.

    begin conv → res1 (ngf→2ngf) → deq_res (2ngf→2ngf) → res2 → res_down (2×2 mean pool) → res3,
    then refine1 refines res3's half-resolution output (2ngf→2ngf) and refine2 fuses it with
    res2's full-resolution output (→ngf), followed by the output head. `deq_res` is an ordinary
    residual block here (TwoRes NCSN); the DEQ variant replaces it by z ↦ h(z) + g(y), with
    g(y) the output of begin_conv and res1, i.e. deq_res's input. Arguments as `RefineNetNCSN`.
    """

    residual_block_names = ("res1", "deq_res", "res2", "res_down", "res3")

    def __init__(
        self,
        sigmas: Tensor | Sequence[float],
        in_channels: int = 3,
        image_size: int = 32,
        ngf: int = 128,
        num_classes: int | None = None,
        activation: str = "elu",
        conditioning: str = "cin++",
        center_input: bool = True,
        norm_eps: float = 1e-5,
        deq_res_blocks: int = 1,
    ) -> None:
        super().__init__(
            sigmas, in_channels, image_size, ngf, num_classes, activation, conditioning, center_input, norm_eps
        )
        if deq_res_blocks < 1:
            raise ValueError(f"deq_res_blocks={deq_res_blocks!r} must be >= 1 (1 = the paper's TwoRes)")
        wide = 2 * ngf
        self.res1 = self._residual_block(ngf, wide)
        self.deq_res = self._residual_block(wide, wide)
        if deq_res_blocks > 1:
            self.deq_res_extra = nn.ModuleList([self._residual_block(wide, wide) for _ in range(deq_res_blocks - 1)])
        self.res2 = self._residual_block(wide, wide)
        self.res_down = self._residual_block(wide, wide, downsample=True)
        self.res3 = self._residual_block(wide, wide)
        self.refine1 = self._refine_block((wide,), wide)
        self.refine2 = self._refine_block((wide, wide), ngf, end=True)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """The score at x (B, C, H, W) for noise levels `labels` (B,); same shape as x."""
        h = self._begin(x, labels)
        h = self.res1(h, labels)
        h = self.deq_res(h, labels)
        for block in getattr(self, "deq_res_extra", ()):
            h = block(h, labels)
        high = self.res2(h, labels)
        low = self.res3(self.res_down(high, labels), labels)
        h = self.refine1([low], labels, low.shape[2:])
        h = self.refine2([high, h], labels, high.shape[2:])
        return self._end(h, labels)
