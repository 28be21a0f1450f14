"""The classical codecs lpimg is measured against, through Pillow."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Baseline:
    name: str
    settings: list[float]
    encode: Callable[[Image.Image, float], bytes]
    label: Callable[[float], str]


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


BASELINES = [
    Baseline("JPEG", [2, 4, 6, 8, 10, 15, 20, 30, 40, 60],
             lambda im, q: _save(im, "JPEG", quality=int(q), optimize=True),
             lambda q: f"q{int(q)}"),
    Baseline("WebP", [0, 2, 5, 10, 20, 30, 50, 70],
             lambda im, q: _save(im, "WEBP", quality=int(q), method=6),
             lambda q: f"q{int(q)}"),
    Baseline("JPEG2000", [400, 300, 200, 150, 100, 70, 50, 35],
             lambda im, r: _save(im, "JPEG2000", quality_mode="rates", quality_layers=[r],
                                 irreversible=True),
             lambda r: f"rate{int(r)}"),
    Baseline("AVIF", [2, 5, 10, 15, 20, 30, 40, 55],
             lambda im, q: _save(im, "AVIF", quality=int(q), speed=4),
             lambda q: f"q{int(q)}"),
]


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def jpeg_at_most(image: np.ndarray, budget: int) -> tuple[bytes, int] | None:
    """The best-quality JPEG not larger than ``budget`` bytes (None if even q1 is larger)."""
    im = Image.fromarray(image)
    best = None
    lo, hi = 1, 95
    while lo <= hi:
        q = (lo + hi) // 2
        data = _save(im, "JPEG", quality=q, optimize=True)
        if len(data) <= budget:
            best = (data, q)
            lo = q + 1
        else:
            hi = q - 1
    return best
