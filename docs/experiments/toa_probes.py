"""Probes behind docs/experiments/README.md, "Four quarter layers per significance pass": what
finer layers, spatial bands, downscaling and AVIF do for MS-SSIM 0.90 on `lpimg bench toa`'s photo.

    .venv/bin/python docs/experiments/toa_probes.py [PICTURE]   # about a minute on one core

Prints (bytes, MS-SSIM) per layer prefix for: the significance layers of the plane below the top
cut into k horizontal bands (k = 1, 2, 3, 5; the bands are `LayerSpec(j, Region(...))`, as
refine requests send them), up to that plane's refinement,
the picture coded at 1, 0.8, 0.625 and 0.5 of its size and resized back (Lanczos) with the
smallest JPEG reaching 0.90 the same way, and AVIF at its lowest qualities at each size.
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from lpimg.bench.baselines import _save, decode
from lpimg.bench.metrics import msssim
from lpimg.bench.toa import SAMPLE, fit_picture
from lpimg.codec.bitplane import LayerSpec, Region, num_passes, pass_kind
from lpimg.codec.image import load_image
from lpimg.codec.pipeline import LearnedCodec

SIZE = (640, 480)


def resized(image: np.ndarray, scale: float) -> np.ndarray:
    w, h = round(SIZE[0] * scale), round(SIZE[1] * scale)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS))


def back(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize(SIZE, Image.Resampling.LANCZOS))


def bands(codec: LearnedCodec, image: np.ndarray) -> None:
    """Every significance layer of plane T-1 cut into k horizontal bands, up to its refinement."""
    for k in (1, 2, 3, 5):
        enc = codec.encoder(image)
        dec = codec.decoder(enc.header)
        _, h, w = enc.latents.shape
        top = enc.header.top_plane
        edges = np.linspace(0, h, k + 1).round().astype(int)
        cut = [Region(0, int(a), w, int(b - a)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        total, rows = 0, []
        for j in range(num_passes(top)):
            kind, plane = pass_kind(j, top)
            banded = plane == top - 1 and kind != "ref"
            for spec in [LayerSpec(j, region) for region in cut] if banded else [LayerSpec(j)]:
                data = enc.encode(spec)
                dec.apply(spec, data)
                total += len(data)
                if plane == top - 1:
                    rows.append((total, round(msssim(dec.reconstruct(), image), 4)))
            if (kind, plane) == ("ref", top - 1):
                break
        print(f"bands {k}: {rows}", flush=True)


def scales(codec: LearnedCodec, image: np.ndarray) -> None:
    for scale in (1.0, 0.8, 0.625, 0.5):
        small = resized(image, scale) if scale < 1 else image
        enc = codec.encoder(small)
        dec = codec.decoder(enc.header)
        total, rows = 0, []
        for spec, data in enc.encode_all()[:12]:
            dec.apply(spec, data)
            total += len(data)
            rec = dec.reconstruct()
            rows.append((total, round(msssim(back(rec) if scale < 1 else rec, image), 4)))
        jpeg = None
        for q in range(1, 96):
            data = _save(Image.fromarray(small), "JPEG", quality=q, optimize=True)
            rec = decode(data)
            if msssim(back(rec) if scale < 1 else rec, image) >= 0.90:
                jpeg = (q, len(data))
                break
        avif = []
        for q in (0, 2, 5):
            data = _save(Image.fromarray(small), "AVIF", quality=q, speed=4)
            rec = decode(data)
            avif.append((q, len(data), round(msssim(back(rec) if scale < 1 else rec, image), 4)))
        print(f"scale {scale}: lpimg {rows}; JPEG (quality, bytes) at 0.90 {jpeg}; AVIF {avif}",
              flush=True)


def main() -> None:
    image = fit_picture(load_image(sys.argv[1] if len(sys.argv) > 1 else SAMPLE), SIZE)
    codec = LearnedCodec.load()
    bands(codec, image)
    scales(codec, image)


if __name__ == "__main__":
    main()
