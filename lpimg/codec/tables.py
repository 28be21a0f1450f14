"""Integer probability tables of the bitplane coder.

Encoder and decoder must compute the same probability for every binary decision, on any platform.
So nothing float is shipped for entropy coding: the learned per-channel density is tabulated into
integer counts, and the significance probabilities are integer tables indexed by (channel, plane,
context) and fitted on training latents. A probability is one exact float64 division of integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpimg.errors import CodecError

QMAX = 127
NUM_PLANES = 7
NUM_CONTEXTS = 16
_CHANNEL_BINS = np.array([0, 1, 3, 9])  # lower edges of the "significant channels here" bins


def significance_context(known_sig: np.ndarray) -> np.ndarray:
    """Context of each element (C, H, W) from significance already known to both ends.

    Two cues, 4 levels each: how many of the 8 spatial neighbours in the same channel are
    significant (texture around), and how many channels are significant at this position (the
    activity a hyperprior would otherwise have to send).
    """
    ks = known_sig.astype(np.int16)
    c, h, w = ks.shape
    pad = np.zeros((c, h + 2, w + 2), dtype=np.int16)
    pad[:, 1:-1, 1:-1] = ks
    neigh = (
        pad[:, :-2, :-2] + pad[:, :-2, 1:-1] + pad[:, :-2, 2:]
        + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
        + pad[:, 2:, :-2] + pad[:, 2:, 1:-1] + pad[:, 2:, 2:]
    )
    ctx_a = np.minimum(neigh, 3)
    active = ks.sum(axis=0)
    ctx_b = np.searchsorted(_CHANNEL_BINS, active, side="right") - 1
    return (ctx_a * 4 + ctx_b[None]).astype(np.int64)


@dataclass
class CodecTables:
    """``pmf`` (C, 255) integer counts of latent values -127..127; ``sig`` (C, 7, 16) P(sig)*2^16."""

    pmf: np.ndarray
    sig: np.ndarray
    PROB_ONE = 1 << 16

    def __post_init__(self) -> None:
        self.pmf = np.asarray(self.pmf, dtype=np.int64)
        self.sig = np.asarray(self.sig, dtype=np.int64)
        c = self.pmf.shape[0]
        if self.pmf.shape != (c, 2 * QMAX + 1) or self.sig.shape != (c, NUM_PLANES, NUM_CONTEXTS):
            raise CodecError("probability tables have the wrong shape for this model")
        if (self.pmf <= 0).any() or (self.sig <= 0).any() or (self.sig >= self.PROB_ONE).any():
            raise CodecError("probability tables hold out-of-range entries")
        mag = np.zeros((c, QMAX + 1), dtype=np.int64)
        mag[:, 0] = self.pmf[:, QMAX]
        mag[:, 1:] = self.pmf[:, QMAX + 1:] + self.pmf[:, QMAX - 1::-1]
        self.mag_cum = np.concatenate([np.zeros((c, 1), np.int64), np.cumsum(mag, axis=1)], axis=1)

    @property
    def channels(self) -> int:
        return int(self.pmf.shape[0])

    def pmf_float(self) -> np.ndarray:
        return self.pmf / self.pmf.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict:
        return {"pmf": self.pmf.astype(np.int32), "sig": self.sig.astype(np.int32)}

    @classmethod
    def from_dict(cls, d: dict) -> CodecTables:
        return cls(np.asarray(d["pmf"]), np.asarray(d["sig"]))


def quantize_pmf(pmf: np.ndarray, total_bits: int = 20) -> np.ndarray:
    """Float pmf (C, 255) -> integer counts, every value possible (count >= 1)."""
    total = 1 << total_bits
    counts = np.maximum(np.round(pmf * total), 1).astype(np.int64)
    return counts


def base_sig_probability(pmf_counts: np.ndarray) -> np.ndarray:
    """P(|q| >= 2^p | |q| < 2^(p+1)) per (channel, plane) from the density alone."""
    t = CodecTables(pmf_counts, np.full((pmf_counts.shape[0], NUM_PLANES, NUM_CONTEXTS), 2))
    cum = t.mag_cum.astype(np.float64)
    planes = np.arange(NUM_PLANES)
    upper = cum[:, np.minimum(2 << planes, QMAX + 1)]
    lower = cum[:, 1 << planes]
    return (upper - lower) / np.maximum(upper, 1.0)


class SignificanceCounter:
    """Counts (channel, plane, context) -> significant or not over training latents."""

    def __init__(self, channels: int) -> None:
        self.ones = np.zeros((channels, NUM_PLANES, NUM_CONTEXTS), dtype=np.int64)
        self.total = np.zeros_like(self.ones)

    def add(self, q: np.ndarray) -> None:
        """Replay the significance passes of one image's latents (C, H, W)."""
        mag = np.abs(q.astype(np.int64))
        c = q.shape[0]
        chan = np.broadcast_to(np.arange(c)[:, None, None], q.shape)
        top = max(int(mag.max()), 1).bit_length() - 1
        for plane in range(top, -1, -1):
            known = mag >= (2 << plane)
            ctx = significance_context(known)
            sel = ~known
            bits = (mag[sel] >> plane) & 1
            idx = chan[sel] * NUM_CONTEXTS + ctx[sel]
            n = c * NUM_CONTEXTS
            self.total[:, plane, :] += np.bincount(idx, minlength=n).reshape(c, NUM_CONTEXTS)
            self.ones[:, plane, :] += np.bincount(idx, weights=bits, minlength=n).astype(
                np.int64).reshape(c, NUM_CONTEXTS)

    def table(self, pmf_counts: np.ndarray, prior_weight: float = 16.0) -> np.ndarray:
        """Smoothed toward the density's own estimate where data are scarce."""
        base = base_sig_probability(pmf_counts)[:, :, None]
        p = (self.ones + prior_weight * base) / (self.total + prior_weight)
        one = CodecTables.PROB_ONE
        return np.clip(np.round(p * one), 1, one - 1).astype(np.int64)
