"""Would richer significance contexts code the intra stream in fewer bytes?

The significance decisions (``sig2``: about half of a full stream's bytes) are priced by static
tables indexed by (channel, plane, context), the context being the count of significant
8-neighbours in the channel and of significant channels at the position (spec/PROTOCOL.md 10.2).
Two cues they do not see:

- ``lev``: how large the significant neighbours already are (the mean of ``|k| >> (plane + 1)``
  over them, in 4 bins): a neighbour far above the plane may predict better than one just above;
- ``far``: significance two positions away (the 16-position ring around the 8-neighbours, in 3
  bins): texture at a larger scale.

Each variant multiplies the phase A contexts (and so the phase B ones built on them) by its bins,
replays the real coder's passes (the shipped module, its context functions swapped) on training
latents, fits every (channel, plane, context) probability as the shipped fitter does (counts
with a prior of weight 16 toward the channel and plane's mean) and prices the Kodak latents'
decisions with it (ideal code length, no coder overhead). Kodak is only measured, never fitted.

    .venv/bin/python docs/experiments/richer_contexts.py [TRAIN_IMAGES] [VARIANT ...]
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import lpimg.codec.bitplane as bp
import lpimg.codec.tables as tb
from lpimg.codec.image import load_image
from lpimg.codec.pipeline import LearnedCodec

BINS = {"base": 1, "lev": 4, "far": 3}
_state: dict = {}  # the known latents and plane of the pass being replayed


def _latents(codec: LearnedCodec, paths: list[Path]) -> list[np.ndarray]:
    out = []
    for p in paths:
        img = load_image(p)[:512, :768]  # Kodak's size; keeps the run short
        out.append(codec.analyse(img).astype(np.int32))
    return out


def _n8(x: np.ndarray) -> np.ndarray:
    p = tb._pad1(x)
    return (p[:, :-2, :-2] + p[:, :-2, 1:-1] + p[:, :-2, 2:] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]
            + p[:, 2:, :-2] + p[:, 2:, 1:-1] + p[:, 2:, 2:])


def _context_a(variant: str) -> Callable[[np.ndarray], np.ndarray]:
    def ctx(known_sig: np.ndarray) -> np.ndarray:
        base = tb.phase_a_context(known_sig)
        ks = known_sig.astype(np.int32)
        if variant == "lev":
            lev = np.minimum(np.abs(_state["known"]) >> (_state["plane"] + 1), 15).astype(np.int32)
            cnt = _n8(ks)
            mean = np.where(cnt > 0, _n8(lev) / np.maximum(cnt, 1), 0)
            return base * BINS[variant] + np.digitize(mean, [1.5, 3.5, 7.5])
        if variant == "far":
            c, h, w = ks.shape
            p = np.zeros((c, h + 4, w + 4), np.int32)
            p[:, 2:-2, 2:-2] = ks
            square = sum(p[:, dy:dy + h, dx:dx + w] for dy in range(5) for dx in range(5))
            return base * BINS[variant] + np.digitize(square - _n8(ks) - ks, [1, 4])
        return base
    return ctx


class _Recorder:
    """Collects the flat table index and value of every significance decision."""

    def __init__(self) -> None:
        self.index: list[np.ndarray] = []
        self.bits: list[np.ndarray] = []

    def add(self, table: str, index: np.ndarray, bits: np.ndarray, static: np.ndarray | None = None) -> None:
        if table == "sig2":
            self.index.append(index)
            self.bits.append(bits)


def _replay(variant: str, latents: list[np.ndarray], pmf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = BINS[variant]
    ctx_a = _context_a(variant)

    def ctx_b(known_sig: np.ndarray, new_a: np.ndarray, ctx: np.ndarray | None = None) -> np.ndarray:
        pad = tb._pad1(new_a.astype(np.int16))
        new4 = pad[:, :-2, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:] + pad[:, 2:, 1:-1]
        return tb.PHASE_A_CONTEXTS * k + ctx_a(known_sig) * tb.NEW_LEVELS + new4.astype(np.int64)

    saved = (bp.phase_a_context, bp.phase_b_context, bp.SIG2_CONTEXTS, bp._significance_phase,
             bp._table_probability)
    inner = bp._significance_phase

    def phase(known, pos, plane, kind, tables, io):  # noqa: ANN001, ANN202
        _state["known"], _state["plane"] = known, plane
        return inner(known, pos, plane, kind, tables, io)

    bp.phase_a_context, bp.phase_b_context = ctx_a, ctx_b
    bp.SIG2_CONTEXTS = tb.PHASE_A_CONTEXTS * k * (1 + tb.NEW_LEVELS)
    bp._significance_phase = phase
    bp._table_probability = lambda table, index: np.full(index.shape, 0.5)  # counting only
    try:
        rec = _Recorder()
        for q in latents:
            bp.count_decisions(q, pmf, rec)  # type: ignore[arg-type]
    finally:
        (bp.phase_a_context, bp.phase_b_context, bp.SIG2_CONTEXTS, bp._significance_phase,
         bp._table_probability) = saved
    return np.concatenate(rec.index), np.concatenate(rec.bits)


def sig_bytes(variant: str, train: list[np.ndarray], test: list[np.ndarray], codec: LearnedCodec) -> float:
    """Ideal bytes of the test latents' significance decisions under tables fitted on train."""
    contexts = tb.PHASE_A_CONTEXTS * BINS[variant] * (1 + tb.NEW_LEVELS)
    size = codec.channels * tb.NUM_PLANES * contexts
    index, bits = _replay(variant, train, codec.tables.pmf)
    ones = np.bincount(index, weights=bits, minlength=size).reshape(-1, contexts)
    total = np.bincount(index, minlength=size).reshape(-1, contexts).astype(np.float64)
    mean = (ones.sum(1, keepdims=True) + 0.5) / (total.sum(1, keepdims=True) + 1.0)
    p1 = np.clip(((ones + 16 * mean) / (total + 16)).reshape(-1), 1 / 65536, 1 - 1 / 65536)
    index, bits = _replay(variant, test, codec.tables.pmf)
    p = p1[index]
    return float(-(bits * np.log2(p) + (1 - bits) * np.log2(1 - p)).sum() / 8)


def main() -> None:
    torch.set_num_threads(1)
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 250
    variants = sys.argv[2:] or list(BINS)
    codec = LearnedCodec.load()
    pool = sorted(p for p in Path("../shared/data/train").rglob("*") if p.suffix.lower() in {".png", ".jpg"})
    random.Random(0).shuffle(pool)
    kodak = sorted(Path("../shared/data/kodak").glob("*.png"))
    train, test = _latents(codec, pool[:count]), _latents(codec, kodak)
    print(f"{codec.name} {codec.model_id:#06x}: tables fitted on {len(train)} training pictures, "
          f"priced on {len(test)} Kodak pictures")
    base = None
    for v in variants:
        b = sig_bytes(v, train, test, codec) / len(test)
        base = b if base is None else base
        change = 100 * (b / base - 1)
        print(f"{v:5s} significance bytes per picture {b:8.0f} ({change:+.2f} % against {variants[0]})")


if __name__ == "__main__":
    main()
