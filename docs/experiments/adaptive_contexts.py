"""How many bits would contexts that adapt to the picture save over the static integer tables?

The intra coder gives every binary decision a probability from tables fitted once on training
latents (spec/PROTOCOL.md 10.2). A coder that also learns from the picture being coded (each
context's probability starts at the static table's and follows the decisions seen so far)
pays, for a context with k ones among n decisions, whatever their order:

    -log2 B(k + s p, n - k + s (1 - p)) / B(s p, s (1 - p))

(a Beta(s p, s (1 - p)) prior centred on the static p, of strength s decisions, updated after
every decision). This script replays every pass of every picture (the coder's own logic, in
:func:`lpimg.codec.bitplane.count_decisions`), then prices its decisions three ways: with the
static tables (what ships), adaptively for a few strengths s, and at each context's empirical
entropy in that picture (an unreachable floor). It answers whether an adaptive coder is worth
building, not how to vectorize one (an update after every decision does not fit one
``constriction`` call per pass; an update between passes, or between channels, does).

    .venv/bin/python docs/experiments/adaptive_contexts.py [IMAGE_DIR] [LIMIT]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from lpimg.bench.rd import _images
from lpimg.codec.bitplane import count_decisions
from lpimg.codec.pipeline import LearnedCodec
from lpimg.codec.tables import CodecTables, ContextCounter

STRENGTHS = (4.0, 16.0, 64.0)


def _log2_beta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return ((torch.lgamma(ta) + torch.lgamma(tb) - torch.lgamma(ta + tb)) / np.log(2)).numpy()


def costs(ones: np.ndarray, total: np.ndarray, table: np.ndarray) -> dict[str, float]:
    """Bits of the decisions counted in (ones, total) per cell, priced against ``table``."""
    p = table.astype(np.float64) / CodecTables.PROB_ONE
    ones, total = ones.astype(np.float64), total.astype(np.float64)
    zeros = total - ones
    out = {"static": float(-(ones * np.log2(p) + zeros * np.log2(1 - p)).sum())}
    for s in STRENGTHS:
        a, b = s * p, s * (1 - p)
        out[f"adaptive s={s:g}"] = float(-(_log2_beta(a + ones, b + zeros) - _log2_beta(a, b)).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(total > 0, ones / np.maximum(total, 1), 0.5)
        h = -(np.where(ones > 0, ones * np.log2(q), 0) + np.where(zeros > 0, zeros * np.log2(1 - q), 0))
    out["empirical entropy"] = float(h.sum())
    return out


def main(folder: str = "../shared/data/kodak", limit: str | None = None) -> None:
    codec = LearnedCodec.load()
    t = codec.tables
    totals: dict[str, dict[str, float]] = {}
    for name, img in _images(folder, int(limit) if limit else None):
        q = codec.encoder(img).latents
        c = ContextCounter(q.shape[0])
        count_decisions(q, t.pmf, c)
        per = {
            "significance": costs(c.sig_ones, c.sig_total, t.sig2),
            "sign": costs(c.sign_ones, c.sign_total, t.sign),
            "refinement": costs(c.ref_ones, c.ref_total, t.ref),
        }
        line = []
        for kind, row in per.items():
            acc = totals.setdefault(kind, {})
            for k, v in row.items():
                acc[k] = acc.get(k, 0.0) + v
            line.append(f"{kind} {row['static'] / 8:.0f} B -> {row['adaptive s=16'] / 8:.0f} B")
        print(f"{name}: " + ", ".join(line), flush=True)
    every: dict[str, float] = {}
    for kind, row in totals.items():
        base = row["static"]
        print(f"{kind}: static {base / 8:.0f} B; " + "; ".join(
            f"{k} {100 * (v / base - 1):+.1f} %" for k, v in row.items() if k != "static"))
        for k, v in row.items():
            every[k] = every.get(k, 0.0) + v
    print("all decisions: static {:.0f} B; ".format(every["static"] / 8) + "; ".join(
        f"{k} {100 * (v / every['static'] - 1):+.1f} %" for k, v in every.items() if k != "static"))


if __name__ == "__main__":
    main(*sys.argv[1:])
