"""Would side information on the latents' local scale (a scale hyperprior) pay for itself?

The intra coder prices every decision from static tables indexed by what both ends already
know (neighbours, co-located channels, the plane: spec/PROTOCOL.md 10.2). A scale hyperprior
(Balle et al. 2018) instead sends, first, a coarse map of how large the latents are, and codes
every latent with a distribution of that scale. This script bounds what that could give on the
shipped model's latents, with an oracle on the side information: the scale of a block of
latent positions is the RMS of its values, quantized to half-octave steps (or "all zero"),
either per channel and B x B block (``scale BxB``) or as one gain per block shared by every
channel times the channel's RMS in the picture (``shared BxB``, closer to a hyperprior's few
side channels). Each latent is priced under a zero-mean Laplace of its scale, discretized to
what a prefix down to a plane tells apart (|q| >> plane, and the sign), and the scale map at
the empirical entropy of its indices in that picture (no prior to learn, no coder overhead: a
floor). Against it, for the same prefixes: the static bitplane coder (the decisions of those
planes priced by the shipped tables, as in ``adaptive_contexts.py``) and the factorized
density alone (the pmf).

    .venv/bin/python docs/experiments/scale_side_info.py [IMAGE_DIR] [LIMIT]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from lpimg.bench.rd import _images
from lpimg.codec.bitplane import count_decisions
from lpimg.codec.pipeline import LearnedCodec
from lpimg.codec.tables import CodecTables, ContextCounter

BLOCKS = (2, 4, 8)
SHARED_BLOCKS = (1, 2, 4)
PLANES = (5, 4, 3, 2, 0)  # the prefixes compared: every plane down to this one (0: the full stream)
STEP = 0.5  # half-octave scale steps
LEVELS = np.arange(-4.0, 7.0 + STEP, STEP)  # log2 of the RMS; below the lowest: "all zero"


def static_bits(q: np.ndarray, c: ContextCounter, t: CodecTables, plane: int) -> float:
    """The shipped coder's cost of the decisions of planes >= ``plane`` (range-coder flushes
    excluded), from the full stream's counts ``c``; sign decisions, which have no plane axis in
    the counts, at their mean cost."""
    def price(ones: np.ndarray, total: np.ndarray, table: np.ndarray) -> np.ndarray:
        p = table.astype(np.float64) / CodecTables.PROB_ONE
        ones, total = ones.astype(np.float64), total.astype(np.float64)
        return -(ones * np.log2(p) + (total - ones) * np.log2(1 - p))

    sig = price(c.sig_ones, c.sig_total, t.sig2)[:, plane:].sum()
    ref = price(c.ref_ones, c.ref_total, t.ref)[:, plane:].sum()
    sign_per = price(c.sign_ones, c.sign_total, t.sign).sum() / max(1, c.sign_total.sum())
    return float(sig + ref + sign_per * (np.abs(q) >= 2 ** plane).sum())


def _bin_edges(mag: np.ndarray, plane: int) -> tuple[np.ndarray, np.ndarray]:
    """The integer magnitudes a prefix down to ``plane`` cannot tell apart: |q| >> plane = n
    covers [n 2^plane, (n + 1) 2^plane - 1] (n = 0 covers both signs)."""
    lo = (mag >> plane) << plane
    return lo, lo + (1 << plane) - 1


def factorized_bits(q: np.ndarray, pmf: np.ndarray, plane: int) -> float:
    p = pmf / pmf.sum(axis=1, keepdims=True)
    cum = np.concatenate([np.zeros((p.shape[0], 1)), np.cumsum(p, axis=1)], axis=1)  # cum[c, v + 127]
    lo, hi = _bin_edges(np.abs(q), plane)
    chan = np.arange(q.shape[0])[:, None, None]
    pos = cum[chan, np.minimum(hi, 127) + 128] - cum[chan, lo + 127]
    neg = cum[chan, -lo + 128] - cum[chan, -np.minimum(hi, 127) + 127]
    mass = np.where(lo == 0, pos + neg - p[chan, 127], np.where(q > 0, pos, neg))
    return float(-np.log2(np.maximum(mass, 1e-12)).sum())


def laplace_bits(q: np.ndarray, rms: np.ndarray, plane: int) -> np.ndarray:
    """-log2 P(the prefix's value) under a zero-mean Laplace of that RMS on the integers."""
    b = torch.from_numpy(np.maximum(rms, 1e-3) / np.sqrt(2.0))
    lo, hi = (torch.from_numpy(e.astype(np.float64)) for e in _bin_edges(np.abs(q), plane))

    def tail(x: torch.Tensor) -> torch.Tensor:  # P(|X| >= x) for x >= 0
        return torch.exp(-x.clamp(min=0) / b)

    zero = 1 - tail(hi + 0.5)
    p = torch.where(lo == 0, zero, 0.5 * (tail(lo - 0.5) - tail(hi + 0.5)))
    return (-torch.log2(p.clamp(min=1e-12))).numpy()


def scale_bits(q: np.ndarray, block: int, plane: int) -> tuple[float, float]:
    """(latent bits, side bits) with the block scales known to both ends."""
    c, h, w = q.shape
    hp, wp = -(-h // block) * block, -(-w // block) * block
    padded = np.zeros((c, hp, wp), dtype=np.float64)
    padded[:, :h, :w] = q
    blocks = padded.reshape(c, hp // block, block, wp // block, block)
    rms = np.sqrt((blocks ** 2).mean(axis=(2, 4)))  # zeros padded in: a border block is a bit smaller
    with np.errstate(divide="ignore"):
        idx = np.where(rms > 0, np.clip(np.round(np.log2(rms) / STEP) * STEP, LEVELS[0], LEVELS[-1]), -np.inf)
    level = np.where(np.isfinite(idx), 2.0 ** idx, 0.0)
    per_latent = np.repeat(np.repeat(level, block, axis=1), block, axis=2)[:, :h, :w]
    main = laplace_bits(q, per_latent, plane)
    main = np.where(per_latent == 0, 0.0, main)  # an all-zero block costs nothing beyond its index
    side = 0.0
    for ch in range(c):
        _, counts = np.unique(idx[ch], return_counts=True)
        p = counts / counts.sum()
        side += float(-(counts * np.log2(p)).sum())
    return float(main.sum()), side


def shared_scale_bits(q: np.ndarray, block: int, plane: int) -> tuple[float, float]:
    """(latent bits, side bits) when one gain per block serves every channel: the scale of
    channel c in block b is s_c g_b (s_c: the channel's RMS in the picture, 96 numbers, not
    counted). A hyperprior's few side channels share structure so; sending a scale per channel
    and block (``scale_bits``) overpays."""
    c, h, w = q.shape
    s_c = np.sqrt((q.astype(np.float64) ** 2).mean(axis=(1, 2)))[:, None, None]
    norm = q / np.maximum(s_c, 1e-6)
    hp, wp = -(-h // block) * block, -(-w // block) * block
    padded = np.zeros((c, hp, wp), dtype=np.float64)
    padded[:, :h, :w] = norm
    g = np.sqrt((padded.reshape(c, hp // block, block, wp // block, block) ** 2).mean(axis=(0, 2, 4)))
    with np.errstate(divide="ignore"):
        idx = np.where(g > 0, np.clip(np.round(np.log2(g) / STEP) * STEP, -6.0, 4.0), -np.inf)
    gain = np.where(np.isfinite(idx), 2.0 ** idx, 0.0)
    per_latent = s_c * np.repeat(np.repeat(gain, block, axis=0), block, axis=1)[None, :h, :w]
    main = laplace_bits(q, per_latent, plane)
    main = np.where(per_latent == 0, 0.0, main)
    _, counts = np.unique(idx, return_counts=True)
    side = float(-(counts * np.log2(counts / counts.sum())).sum())
    return float(main.sum()), side


def main(folder: str = "../shared/data/kodak", limit: str | None = None) -> None:
    codec = LearnedCodec.load()
    totals: dict[tuple[int, str], float] = {}
    pixels = 0
    for name, img in _images(folder, int(limit) if limit else None):
        q = codec.encoder(img).latents.astype(np.int64)
        pixels += img.shape[0] * img.shape[1]
        counts = ContextCounter(q.shape[0])
        count_decisions(q, codec.tables.pmf, counts)  # once: every prefix is a slice of its planes
        for plane in PLANES:
            row = {"static coder": static_bits(q, counts, codec.tables, plane),
                   "factorized": factorized_bits(q, codec.tables.pmf, plane)}
            for b in BLOCKS:
                main_bits, side = scale_bits(q, b, plane)
                row[f"scale {b}x{b}"] = main_bits + side
                row[f"side {b}x{b}"] = side
            for b in SHARED_BLOCKS:
                main_bits, side = shared_scale_bits(q, b, plane)
                row[f"shared {b}x{b}"] = main_bits + side
                row[f"side-shared {b}x{b}"] = side
            for k, v in row.items():
                totals[plane, k] = totals.get((plane, k), 0.0) + v
        print(f"{name}: full stream " + ", ".join(f"{k} {v / 8:.0f} B" for k, v in row.items()), flush=True)
    for plane in PLANES:
        base = totals[plane, "static coder"]
        print(f"planes >= {plane}: static coder {base / pixels:.3f} bpp; " + "; ".join(
            f"{k} {100 * (v / base - 1):+.1f} %" for (p, k), v in totals.items()
            if p == plane and k != "static coder" and not k.startswith("side")) + " (side info " + ", ".join(
            f"{k.removeprefix('side').strip(' -')} {100 * v / base:.1f} %" for (p, k), v in totals.items()
            if p == plane and k.startswith("side")) + " of the static bits)")


if __name__ == "__main__":
    main(*sys.argv[1:])
