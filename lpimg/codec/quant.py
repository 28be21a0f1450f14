"""INT8 building blocks of the device-side analysis transform.

The encoder must run on a K210-class KPU: 8-bit per-channel weights, 8-bit activations, 3x3/1x1
convolutions with stride 1 or 2 and ReLU. Training sees that arithmetic through fake quantization
(torch core ops, no deprecated ``torch.ao``); inference uses the *integer* semantics below, which
are also what onnxruntime's QLinearConv computes, so the PyTorch path, the numpy reference
(:mod:`lpimg.codec.intref`) and the exported ONNX model give the same latent integers:

    acc   = sum(w_int8 * (x_q - zp_in)) + bias_int32            (exact integer)
    scale = float32(float32(s_in * s_w[c]) / s_out)             (per output channel)
    y_q   = clip(round_half_even(float32(acc) * scale) + zp_out, qmin, qmax)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ACT_QMAX = 255  # activations after ReLU are uint8, zero point 0
W_QMAX = 127  # symmetric int8 weights, -127..127 (the KPU and onnxruntime both accept it)
LATENT_QMAX = 127  # latents are int8 with scale 1: |q| <= 127, i.e. 7 magnitude bitplanes


def weight_scales(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric scale so the largest weight maps to +-127."""
    amax = weight.detach().abs().flatten(1).amax(dim=1)
    return torch.clamp(amax / W_QMAX, min=1e-8).to(torch.float32)


class QConv(nn.Module):
    """A 3x3 (or 1x1) convolution with fake-quantized int8 weights and uint8/int8 output.

    ``out_scale`` is the activation step of the output. For hidden layers it is tracked by an
    exponential moving average of the batch maximum while calibrating, then frozen; for the
    latent layer it is fixed at 1.0 so the int8 output *is* the latent integer.
    """

    def __init__(
        self, cin: int, cout: int, kernel: int = 3, stride: int = 1, *, relu: bool = True,
        fixed_out_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        self.stride = stride
        self.kernel = kernel
        self.relu = relu
        self.register_buffer("out_scale", torch.tensor(fixed_out_scale or 0.05))
        self.register_buffer("calibrated", torch.tensor(fixed_out_scale is not None))
        self.fixed_scale = fixed_out_scale is not None
        self.calibrating = True

    def forward(self, x: torch.Tensor, quantize: bool) -> torch.Tensor:
        w = self.conv.weight
        if quantize:
            w = torch.fake_quantize_per_channel_affine(
                w, weight_scales(w),
                torch.zeros(self.conv.out_channels, dtype=torch.int32, device=x.device),
                0, -W_QMAX, W_QMAX,
            )
        y = F.conv2d(x, w, self.conv.bias, stride=self.stride, padding=self.kernel // 2)
        if not self.relu:
            return y  # the latent layer: rounding to integers is the codec's business
        y = F.relu(y)
        if self.training and self.calibrating and not self.fixed_scale:
            self._calibrate(y)
        if quantize:
            return torch.fake_quantize_per_tensor_affine(y, float(self.out_scale), 0, 0, ACT_QMAX)
        return y

    @torch.no_grad()
    def _calibrate(self, y: torch.Tensor) -> None:
        """Track a high percentile (not the max: one outlier would waste the 8 bits)."""
        sample = y.detach().flatten()[::97].float()
        target = torch.clamp(torch.quantile(sample, 0.9999) / ACT_QMAX, min=1e-4)
        if not bool(self.calibrated):
            self.out_scale.copy_(target)
            self.calibrated.fill_(True)
        else:
            self.out_scale.mul_(0.99).add_(0.01 * target)


def quantized_params(layer: QConv, in_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(int8 weights, int32 bias, float32 per-channel requantization scale) of one layer.

    This is the deployed form of a layer: the numpy reference, the ONNX export and the K210
    port all start from these three arrays.
    """
    w = layer.conv.weight.detach().to(torch.float32)
    s_w = weight_scales(w)
    w_q = torch.clamp(torch.round(w / s_w[:, None, None, None]), -W_QMAX, W_QMAX)
    bias_scale = (torch.tensor(in_scale, dtype=torch.float32) * s_w).to(torch.float32)
    b_q = torch.round(layer.conv.bias.detach().to(torch.float32) / bias_scale)
    requant = (bias_scale / layer.out_scale.to(torch.float32)).to(torch.float32)
    return w_q.to(torch.int8), b_q.to(torch.int32), requant


def exact_int_conv(x_q: torch.Tensor, w_q: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """Integer convolution of uint8 activations with int8 weights, exact, at float32 speed.

    A float32 sum is exact, in any order (any thread count, any BLAS), while every partial sum
    stays below 2^24. If 255 * sum|w| of every output channel is below that, one float32
    convolution is exact. Otherwise the activations are split into nibbles (x = 16*hi + lo, both
    0..15), which bounds each partial sum by 15 * 127 * Cin * k * k < 2^24 for up to 1,100 input
    channels of 3x3; the int64 combination of the two exact halves is exact too.
    """
    w = w_q.to(torch.float32)
    if float(w.abs().sum(dim=(1, 2, 3)).max()) * 255 < 2**24:
        return F.conv2d(x_q.to(torch.float32), w, stride=stride, padding=padding).to(torch.int64)
    hi = torch.div(x_q, 16, rounding_mode="floor")
    lo = x_q - 16 * hi
    a = F.conv2d(hi.to(torch.float32), w, stride=stride, padding=padding)
    b = F.conv2d(lo.to(torch.float32), w, stride=stride, padding=padding)
    return a.to(torch.int64) * 16 + b.to(torch.int64)


def integer_conv(
    x_q: torch.Tensor, layer: QConv, in_scale: float, *, out_min: int, out_max: int,
) -> torch.Tensor:
    """The deployed integer semantics of one layer (x_q holds uint8 values)."""
    w_q, b_q, requant = quantized_params(layer, in_scale)
    acc = exact_int_conv(x_q, w_q, layer.stride, layer.kernel // 2) + b_q.to(torch.int64)[None, :, None, None]
    y = acc.to(torch.float32) * requant[None, :, None, None]
    return torch.clamp(torch.round(y), out_min, out_max)  # torch.round is half-to-even
