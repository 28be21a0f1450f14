"""Quality and rate metrics shared by every benchmark and by the demo report."""

from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR over all RGB samples, 8-bit peak."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def msssim(a: np.ndarray, b: np.ndarray) -> float:
    """Standard 5-scale MS-SSIM (11-tap window) on RGB with ``data_range=255`` given explicitly.

    Pictures whose short side is 160 pixels or less are too small for 5 scales of an 11-tap
    window; they are measured with 4 scales and the largest window that fits (single-scale SSIM
    below 33 pixels) rather than refused. Reports on such thumbnails say so.
    """
    import torch  # here, not at the top: `lpimg --help` should not wait for torch
    from pytorch_msssim import ms_ssim, ssim

    x = torch.tensor(a).permute(2, 0, 1)[None].double()  # copies: decoders give read-only arrays
    y = torch.tensor(b).permute(2, 0, 1)[None].double()
    side = min(a.shape[:2])
    if side > 160:
        return float(ms_ssim(x, y, data_range=255.0))
    if side <= 32:
        return float(ssim(x, y, data_range=255.0, win_size=3))
    win = 7 if side > 96 else 5 if side > 64 else 3
    weights = [0.0448, 0.2856, 0.3001, 0.2363]
    return float(ms_ssim(x, y, data_range=255.0, win_size=win, weights=weights))


def msssim_db(v: float) -> float:
    return -10 * math.log10(max(1e-10, 1 - v))


def bpp(nbytes: int, image: np.ndarray) -> float:
    return 8.0 * nbytes / (image.shape[0] * image.shape[1])


def bd_rate(
    rate_a: list[float], qual_a: list[float], rate_b: list[float], qual_b: list[float],
) -> float | None:
    """Bjontegaard delta rate of A against B in percent (negative: A needs fewer bits).

    Cubic fits of log-rate against quality, integrated over the quality range both curves cover.
    None when the curves do not overlap or have too few points.
    """
    def prepare(r: list[float], q: list[float]) -> tuple[np.ndarray, np.ndarray]:
        pts = sorted(zip(q, r, strict=True))
        qs = np.array([p[0] for p in pts])
        rs = np.log(np.array([p[1] for p in pts]))
        return qs, rs

    qa, ra = prepare(rate_a, qual_a)
    qb, rb = prepare(rate_b, qual_b)
    if len(qa) < 2 or len(qb) < 2:
        return None
    lo, hi = max(qa.min(), qb.min()), min(qa.max(), qb.max())
    if hi <= lo:
        return None
    pa = np.polyfit(qa, ra, min(3, len(qa) - 1))
    pb = np.polyfit(qb, rb, min(3, len(qb) - 1))
    ia, ib = np.polyint(pa), np.polyint(pb)
    avg_a = (np.polyval(ia, hi) - np.polyval(ia, lo)) / (hi - lo)
    avg_b = (np.polyval(ib, hi) - np.polyval(ib, lo)) / (hi - lo)
    return float((math.exp(avg_a - avg_b) - 1) * 100)
