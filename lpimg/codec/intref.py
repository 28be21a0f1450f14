"""Integer reference of the analysis transform, in numpy, for porting and for checking.

A C or K210 port implements exactly this: per layer an int8 weight tensor, an int32 bias and a
float32 per-channel requantization scale (saved by :meth:`IntegerAnalysis.save`), then

    acc = conv(x - 0, w) + b            int32, 'same' zero padding, stride 1 or 2
    y   = clip(rint(float32(acc) * s), 0, 255)   hidden layers (uint8, ReLU folded into the clip)
    q   = clip(rint(float32(acc) * s), -127, 127) the latent layer (int8, scale 1)

with rint rounding half to even. The sums are accumulated in float64 here only because numpy has
no fast integer matrix product; every partial sum is an integer far below 2^53, so it is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpimg.codec.quant import LATENT_QMAX, quantized_params
from lpimg.codec.tiling import encode_tiled, pad_image


@dataclass
class IntegerLayer:
    weight: np.ndarray  # int8 (Cout, Cin, k, k)
    bias: np.ndarray  # int32 (Cout,)
    scale: np.ndarray  # float32 (Cout,)
    stride: int
    relu: bool


def _conv_same(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """x (Cin, H, W) integer-valued float64, w (Cout, Cin, k, k): exact 'same' convolution."""
    cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = -(-h // stride), -(-wd // stride)
    cols = np.empty((cin, k, k, oh, ow), dtype=np.float64)
    for dy in range(k):
        for dx in range(k):
            cols[:, dy, dx] = xp[:, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride]
    out = w.reshape(cout, -1).astype(np.float64) @ cols.reshape(cin * k * k, oh * ow)
    return out.reshape(cout, oh, ow)


class IntegerAnalysis:
    """The device-side transform as integer arrays and integer-exact arithmetic."""

    def __init__(self, layers: list[IntegerLayer]) -> None:
        self.layers = layers

    @classmethod
    def from_model(cls, analysis) -> IntegerAnalysis:  # noqa: ANN001 (lpimg.codec.model.Analysis)
        layers = []
        scale = 1.0 / 255.0
        for layer in analysis.layers:
            w, b, s = quantized_params(layer, scale)
            layers.append(IntegerLayer(w.numpy(), b.numpy(), s.numpy(), layer.stride, layer.relu))
            scale = float(layer.out_scale)
        return cls(layers)

    def save(self, path: str | Path) -> None:
        arrays = {}
        for i, lay in enumerate(self.layers):
            arrays[f"w{i}"] = lay.weight
            arrays[f"b{i}"] = lay.bias
            arrays[f"s{i}"] = lay.scale
            arrays[f"meta{i}"] = np.array([lay.stride, int(lay.relu)], dtype=np.int32)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> IntegerAnalysis:
        z = np.load(path)
        n = sum(1 for k in z.files if k.startswith("w"))
        return cls([
            IntegerLayer(z[f"w{i}"], z[f"b{i}"], z[f"s{i}"], int(z[f"meta{i}"][0]),
                         bool(z[f"meta{i}"][1]))
            for i in range(n)
        ])

    def forward_tile(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 (multiple of 16, at most 320x240) -> int32 latents (C, H/16, W/16)."""
        x = pixels.transpose(2, 0, 1).astype(np.float64)
        for lay in self.layers:
            acc = _conv_same(x, lay.weight, lay.stride) + lay.bias.astype(np.float64)[:, None, None]
            y = np.rint(acc.astype(np.float32) * lay.scale[:, None, None])
            lo, hi = (0, 255) if lay.relu else (-LATENT_QMAX, LATENT_QMAX)
            x = np.clip(y, lo, hi).astype(np.float64)
        return x.astype(np.int32)

    def forward(self, image: np.ndarray) -> np.ndarray:
        """Whole image, tiled exactly as the device does."""
        channels = self.layers[-1].weight.shape[0]
        return encode_tiled(pad_image(image), channels, self.forward_tile)
