"""The learned transforms: an INT8 analysis transform for the device, a float synthesis for the server.

The analysis transform uses only what the K210 KPU accelerates (3x3 convolutions, stride 1 or 2,
ReLU, 8-bit everything) and keeps every layer's int8 input plus output under 2 MiB at 320x240. The
synthesis transform runs on the server and is free to be larger; it is trained on latents whose low
bitplanes are missing (see :func:`known_interval`), so every prefix of layers decodes well, and
it can be told how precisely each latent is known (:func:`spread_features`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from lpimg.codec.quant import ACT_QMAX, LATENT_QMAX, QConv, integer_conv
from lpimg.errors import CodecError

DOWNSCALE = 16  # one latent position covers 16x16 pixels
NUM_PLANES = 7  # |q| <= 127


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters; stored with the weights so a checkpoint rebuilds itself."""

    enc_channels: tuple[int, ...] = (64, 96, 96, 96, 96)
    latent_channels: int = 96
    dec_channels: int = 96
    # the synthesis also sees how wide each latent's known interval still is: after a phase A
    # layer, a region refinement or a reference-coded picture, neighbouring latents are known
    # to different precisions, and from the expectations alone the decoder cannot tell an
    # exactly known small value from an unknown one
    dec_spread: bool = False
    # extra residual blocks in the synthesis at 1/16, 1/8 and 1/4 of the resolution. Each starts
    # as the identity (its last convolution is zero), so a synthesis grown from trained weights
    # renders exactly as its source did until training moves it: the server's decoder can gain
    # depth without starting over, and without the devices' analysis (the model id) changing
    dec_blocks: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if len(self.dec_blocks) != 3 or any(int(k) != k or k < 0 for k in self.dec_blocks):
            raise CodecError(f"dec_blocks {self.dec_blocks}: three counts >= 0 are needed "
                             "(extra blocks at 1/16, 1/8 and 1/4 of the resolution)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["enc_channels"] = tuple(d["enc_channels"])
        if "dec_blocks" in d:  # absent from configs written before the synthesis could grow
            d["dec_blocks"] = tuple(d["dec_blocks"])
        return cls(**d)


class Analysis(nn.Module):
    """Image (uint8 RGB scaled to [0, 1]) -> latent y at 1/16 resolution, int8 semantics."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = cfg.enc_channels
        # strides 2,2,1,2,1,2 = 16x; the stride-1 layers sit where feature maps are small enough
        self.layers = nn.ModuleList([
            QConv(3, c1, 3, 2),
            QConv(c1, c2, 3, 2),
            QConv(c2, c3, 3, 1),
            QConv(c3, c4, 3, 2),
            QConv(c4, c5, 3, 1),
            QConv(c5, cfg.latent_channels, 3, 2, relu=False, fixed_out_scale=1.0),
        ])
        self.quantize = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize:
            x = torch.fake_quantize_per_tensor_affine(x, 1.0 / 255.0, 0, 0, 255)
        for layer in self.layers:
            x = layer(x, self.quantize)
        return x

    def set_calibrating(self, on: bool) -> None:
        for layer in self.layers:
            layer.calibrating = on

    @torch.no_grad()
    def integer_forward(self, x_u8: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW image -> int latents, with the deployed integer arithmetic."""
        x = x_u8.to(torch.int64)
        scale = 1.0 / 255.0
        for layer in self.layers:
            if layer.relu:
                x = integer_conv(x, layer, scale, out_min=0, out_max=ACT_QMAX).to(torch.int64)
                scale = float(layer.out_scale)
            else:
                x = integer_conv(x, layer, scale, out_min=-128, out_max=127)
        return torch.clamp(x, -LATENT_QMAX, LATENT_QMAX).to(torch.int32)


class GDN(nn.Module):
    """Generalized divisive normalization (inverse when ``inverse``); server side only."""

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = F.softplus(self.beta) + 1e-4
        gamma = F.relu(self.gamma)
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
        norm = torch.sqrt(torch.clamp(norm, min=1e-6))
        return x * norm if self.inverse else x / norm


class ResBlock(nn.Module):
    def __init__(self, ch: int, identity: bool = False) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        if identity:  # a block added to a trained synthesis must not change what it renders
            nn.init.zeros_(self.c2.weight)
            nn.init.zeros_(self.c2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.leaky_relu(self.c1(F.leaky_relu(x, 0.1)), 0.1))


class Synthesis(nn.Module):
    """Latents (unknown low bits filled with expectations) -> RGB in [0, 1]. Server side, float.

    Capacity sits at low resolution (residual blocks at 1/16 and 1/8), where it is cheap;
    sub-pixel convolutions upsample. IGDN follows each upsampling, as in Balle et al.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        n, m = cfg.dec_channels, cfg.latent_channels
        chans = [n, n, 2 * n // 3, n // 2]
        self.head = nn.Sequential(nn.Conv2d(m, n, 3, padding=1), ResBlock(n), ResBlock(n))
        self.up = nn.ModuleList()
        for i in range(3):
            cin, cout = chans[i], chans[i + 1]
            self.up.append(nn.Sequential(
                nn.Conv2d(cin, cout * 4, 3, padding=1), nn.PixelShuffle(2), GDN(cout, inverse=True),
            ))
        self.mid = ResBlock(chans[1])
        # grown depth (``cfg.dec_blocks``): after the head (1/16), after ``mid`` (1/8) and after
        # the second upsampling (1/4); empty by default, so older weights load unchanged
        self.extra = nn.ModuleList(
            nn.Sequential(*(ResBlock(c, identity=True) for _ in range(k)))
            for c, k in zip((chans[0], chans[1], chans[2]), cfg.dec_blocks, strict=True))
        self.tail = nn.Sequential(nn.Conv2d(chans[3], 3 * 4, 3, padding=1), nn.PixelShuffle(2))
        self.spread: nn.Conv2d | None = None
        if cfg.dec_spread:
            # zero at the start: a model grown from weights without this input renders the same
            self.spread = nn.Conv2d(m, n, 3, padding=1, bias=False)
            nn.init.zeros_(self.spread.weight)

    def forward(self, y: torch.Tensor, spread: torch.Tensor | None = None) -> torch.Tensor:
        """``spread``: hi - lo of each latent's known interval (None: every latent exact)."""
        x = self.head[0](y)
        if self.spread is not None and spread is not None:
            x = x + self.spread(spread_features(spread.to(y.dtype)))
        x = self.extra[0](self.head[2](self.head[1](x)))
        for i, up in enumerate(self.up):
            x = up(x)
            if i == 0:
                x = self.extra[1](self.mid(x))
            elif i == 1:
                x = self.extra[2](x)
        return self.tail(x) + 0.5


class FactorizedDensity(nn.Module):
    """Per-channel learned density of the latents (Balle et al. 2018 style cumulative network).

    During training it gives the rate term; after training it is tabulated into the integer
    tables the bitplane coder uses (:mod:`lpimg.codec.tables`), which is what makes encoder and
    decoder agree bit for bit.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def _logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        for i, (mat, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(mat), x) + bias
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """P(round(y)) per element, y of shape (B, C, H, W) (continuous relaxation in training)."""
        return self.mass(y - 0.5, y + 0.5)

    def mass(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """P(lower <= y <= upper) per element; both (B, C, H, W).

        The rate of a bitplane prefix is -log2 of the mass of each latent's known interval.
        """
        b, c, h, w = lower.shape
        lo = self._logits_cdf(lower.permute(1, 0, 2, 3).reshape(c, 1, -1))
        up = self._logits_cdf(upper.permute(1, 0, 2, 3).reshape(c, 1, -1))
        sign = -torch.sign(lo + up).detach()
        lik = torch.abs(torch.sigmoid(sign * up) - torch.sigmoid(sign * lo))
        lik = torch.clamp(lik, min=1e-9)
        return lik.reshape(c, b, h, w).permute(1, 0, 2, 3)

    def pmf_table(self, qmax: int = LATENT_QMAX) -> torch.Tensor:
        """(C, 2*qmax+1) probabilities of the integers -qmax..qmax."""
        c = self.matrices[0].shape[0]
        v = torch.arange(-qmax, qmax + 1, dtype=torch.float32, device=self.matrices[0].device)
        v = v[None, None, :].expand(c, 1, -1)
        lower = self._logits_cdf(v - 0.5)
        upper = self._logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper)
        pmf = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))[:, 0, :]
        pmf = torch.clamp(pmf, min=1e-9)
        return pmf / pmf.sum(dim=1, keepdim=True)


def spread_features(spread: torch.Tensor) -> torch.Tensor:
    """The synthesis' view of interval widths: 0 for an exact latent, about 1 for the widest
    (an element not yet significant below the top plane, hi - lo = 2 * (2^6 - 1))."""
    return torch.log2(1 + spread) / 7


def interval_expectation(
    pmf: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, channel: torch.Tensor,
) -> torch.Tensor:
    """E[v | lo <= v <= hi] under each element's channel pmf (values in -qmax..qmax).

    ``lo``/``hi``/``channel`` are integer tensors of one shape; pmf is (C, 2*qmax+1).
    Shared by training (so the decoder learns on the very inputs it will see) and decoding.
    """
    qmax = (pmf.shape[1] - 1) // 2
    vals = torch.arange(-qmax, qmax + 1, dtype=pmf.dtype, device=pmf.device)
    zero = torch.zeros(pmf.shape[0], 1, dtype=pmf.dtype, device=pmf.device)
    cum = torch.cat([zero, torch.cumsum(pmf, 1)], 1)
    cumv = torch.cat([zero, torch.cumsum(pmf * vals, 1)], 1)
    a = (lo + qmax).long()
    b = (hi + qmax + 1).long()
    ch = channel.long()
    mass = cum[ch, b] - cum[ch, a]
    moment = cumv[ch, b] - cumv[ch, a]
    mid = (lo + hi).to(pmf.dtype) / 2
    return torch.where(mass > 1e-12, moment / torch.clamp(mass, min=1e-12), mid)


def fill_unknown(
    y: torch.Tensor, spread: torch.Tensor, unknown: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent estimates where nothing is known yet, from the known neighbours.

    After a stream's first layer or two (the top plane at a quarter or half of the positions)
    the other positions know nothing: their estimate is the prior mean (about 0) and their
    interval spans every value, and the synthesis renders them as grey holes. Latents are
    spatially smooth, so such a position takes the mean estimate and interval width of the
    known positions among its 8 neighbours (those with none keep their own). With no byte sent,
    the first layer of the 24 Kodak 640x480 crops goes from MS-SSIM 0.41 / 14.6 dB to 0.47 /
    16.3 dB (`lpimg bench preview`), the first two layers of the whole pictures from 0.49 to
    0.53 (`lpimg bench rd`). ``y``/``spread``: (..., C, H, W) floats;
    ``unknown``: bool, broadcastable to ``y`` over C: (..., 1, H, W) or (H, W).
    """
    shape = y.shape
    y4 = y.reshape(-1, *shape[-3:])
    s4 = spread.to(y.dtype).expand(shape).reshape(-1, *shape[-3:])
    u4 = unknown.expand(*shape[:-3], 1, *shape[-2:]).reshape(-1, 1, *shape[-2:])
    if not bool(u4.any()):
        return y, spread
    known = (~u4).to(y.dtype)
    kernel = torch.ones(1, 1, 3, 3, dtype=y.dtype, device=y.device)
    count = F.conv2d(known, kernel, padding=1)  # (N, 1, H, W)
    c = shape[-3]
    box = kernel.expand(c, 1, 3, 3)
    y_sum = F.conv2d(y4 * known, box, padding=1, groups=c)
    s_sum = F.conv2d(s4 * known, box, padding=1, groups=c)
    fill = u4 & (count > 0)
    n = count.clamp(min=1)
    y_out = torch.where(fill, y_sum / n, y4).reshape(shape)
    s_out = torch.where(fill, s_sum / n, s4).reshape(shape)
    return y_out, s_out


def known_interval(
    q: torch.Tensor, passes: torch.Tensor, top_plane: torch.Tensor | int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The interval [lo, hi] each latent integer is known to lie in after ``passes`` passes.

    Pass order (normative, spec/PROTOCOL.md "Layers and the codec"): pass 0 is the significance
    pass of the top plane T; then for p = T-1 .. 0 a significance pass (is |q| >= 2^p? plus the
    sign of each newly significant element) followed by a refinement pass (bit p of the elements
    that were already significant). 2T+1 passes in all. ``passes`` and ``top_plane`` broadcast
    against ``q``.
    """
    n = torch.as_tensor(passes, dtype=torch.int64)
    t = torch.as_tensor(top_plane, dtype=torch.int64)
    mag = q.abs().to(torch.int64)
    sig_done = torch.where(n > 0, 1 + torch.div(n, 2, rounding_mode="floor"), torch.zeros_like(n))
    ref_done = torch.where(n > 0, torch.div(n - 1, 2, rounding_mode="floor"), torch.zeros_like(n))
    sig_plane = t + 1 - sig_done  # lowest plane whose significance test has been sent
    ref_plane = t - ref_done  # lowest plane refined for elements significant above it
    thresh = torch.pow(2, sig_plane)
    significant = mag >= thresh
    lead = torch.floor(torch.log2(torch.clamp(mag, min=1).to(torch.float64))).to(torch.int64)
    low = torch.clamp(torch.minimum(lead, ref_plane), min=0)
    step = torch.pow(2, low)
    lo_mag = torch.div(mag, step, rounding_mode="floor") * step
    hi_mag = lo_mag + step - 1
    neg = q < 0
    lo = torch.where(neg, -hi_mag, lo_mag)
    hi = torch.where(neg, -lo_mag, hi_mag)
    lo = torch.where(significant, lo, 1 - thresh)
    hi = torch.where(significant, hi, thresh - 1)
    return lo, hi


class Codec(nn.Module):
    """Analysis + density + synthesis: the trainable whole."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        self.analysis = Analysis(self.cfg)
        self.density = FactorizedDensity(self.cfg.latent_channels)
        self.synthesis = Synthesis(self.cfg)
