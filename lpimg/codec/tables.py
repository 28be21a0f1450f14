"""Integer probability tables of the bitplane coder.

Encoder and decoder must compute the same probability for every binary decision, on any platform.
So nothing float is shipped for entropy coding: the learned per-channel density is tabulated into
integer counts, and the significance and sign probabilities are integer tables indexed by
(channel, plane, context) and fitted on training latents. A probability is one exact float64
division of integers.

Two significance tables ship: ``sig2`` drives the intra coder's two-phase significance passes
(:func:`phase_a_context`, :func:`phase_b_context`); ``sig`` keeps the older 16 contexts of
:func:`significance_context`, which the conditional coder (reference.py) builds on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpimg.errors import CodecError

QMAX = 127
NUM_PLANES = 7
NUM_CONTEXTS = 16
_CHANNEL_BINS = np.array([0, 1, 3, 9])  # lower edges of the "significant channels here" bins

# two-phase significance contexts (spec/PROTOCOL.md section 10.2)
NEIGHBOUR_LEVELS = 6  # significant 8-neighbours in the same channel: 0, 1, 2, 3, 4, 5+
PHASE_CHANNEL_BINS = np.array([0, 1, 2, 4, 8, 16, 32])  # lower edges: channels significant here
PHASE_A_CONTEXTS = NEIGHBOUR_LEVELS * len(PHASE_CHANNEL_BINS)  # 42
NEW_LEVELS = 5  # 4-neighbours that became significant in phase A of this pass: 0..4
SIG2_CONTEXTS = PHASE_A_CONTEXTS * (1 + NEW_LEVELS)  # 42 (phase A) + 210 (phase B) = 252
SIGN_CONTEXTS = 9  # (sign of left + right) x (sign of up + down), each -1, 0, +1
REF_LEVEL_BINS = np.array([1, 2, 3, 4, 8])  # lower edges: |k| >> (p + 1) of the refined element
REF_NEIGHBOUR_BINS = np.array([0, 1, 2, 4, 8])  # lower edges: neighbours' level sum / own level
REF_CONTEXTS = len(REF_LEVEL_BINS) * len(REF_NEIGHBOUR_BINS)  # 25
# the bins as lookup tables (levels <= 127; neighbour sums <= 8 * 15): searchsorted is slow
_REF_LEVEL_BIN = np.searchsorted(REF_LEVEL_BINS, np.arange(QMAX + 1), side="right") - 1
_REF_NEIGHBOUR_BIN = np.searchsorted(REF_NEIGHBOUR_BINS, np.arange(8 * 15 + 1), side="right") - 1


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


def _pad1(a: np.ndarray) -> np.ndarray:
    c, h, w = a.shape
    pad = np.zeros((c, h + 2, w + 2), dtype=a.dtype)
    pad[:, 1:-1, 1:-1] = a
    return pad


def first_phase(height: int, width: int) -> np.ndarray:
    """(H, W) bool: positions whose significance is coded in phase A ((x + y) even).

    A checkerboard, so the 4 direct neighbours of every phase B position are phase A positions,
    whose new significance is known by the time phase B is coded.
    """
    yy, xx = np.indices((height, width))
    return (xx + yy) % 2 == 0


def phase_a_context(known_sig: np.ndarray) -> np.ndarray:
    """Phase A context (0..41) of each element (C, H, W) from significance known before the pass.

    ``min(n8, 5) * 7 + b``: n8 significant 8-neighbours in the same channel, b the bin of the
    number of channels significant at this position (:data:`PHASE_CHANNEL_BINS`). More levels
    than :func:`significance_context`: at the low planes, where most bytes go, most
    neighbourhoods hold several significant elements and 4 levels cannot tell them apart.
    """
    ks = known_sig.astype(np.int16)
    pad = _pad1(ks)
    neigh = (
        pad[:, :-2, :-2] + pad[:, :-2, 1:-1] + pad[:, :-2, 2:]
        + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
        + pad[:, 2:, :-2] + pad[:, 2:, 1:-1] + pad[:, 2:, 2:]
    )
    ctx_a = np.minimum(neigh, NEIGHBOUR_LEVELS - 1).astype(np.int64)
    ctx_b = np.searchsorted(PHASE_CHANNEL_BINS, ks.sum(axis=0), side="right") - 1
    return ctx_a * len(PHASE_CHANNEL_BINS) + ctx_b[None]


def phase_b_context(known_sig: np.ndarray, new_a: np.ndarray, ctx_a: np.ndarray | None = None) -> np.ndarray:
    """Phase B context (42..251): the phase A context refined by the pass's own phase A results.

    ``42 + a * 5 + m``: a = :func:`phase_a_context` (from the significance known before the
    pass, not updated by phase A), m = how many of the 4 direct neighbours in the same channel
    became significant in phase A of this pass (``new_a``, C x H x W bool). ``ctx_a``: the
    phase A contexts, if already computed.
    """
    pad = _pad1(new_a.astype(np.int16))
    new4 = pad[:, :-2, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:] + pad[:, 2:, 1:-1]
    if ctx_a is None:
        ctx_a = phase_a_context(known_sig)
    return PHASE_A_CONTEXTS + ctx_a * NEW_LEVELS + new4.astype(np.int64)


def sign_context(known_q: np.ndarray) -> np.ndarray:
    """Sign context (0..8) of each element from the signs known to both ends (C, H, W ints).

    ``(sgn(left + right) + 1) * 3 + sgn(up + down) + 1`` over the known signs (0 where not yet
    significant) of the same channel. The analysis transform leaves strong spatial sign
    correlations (smooth gradients, edges), different horizontally and vertically per channel.
    """
    s = _pad1(np.sign(known_q).astype(np.int16))
    horiz = s[:, 1:-1, :-2] + s[:, 1:-1, 2:]
    vert = s[:, :-2, 1:-1] + s[:, 2:, 1:-1]
    return ((np.sign(horiz) + 1) * 3 + np.sign(vert) + 1).astype(np.int64)


def sign_context_at(known_q: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``sign_context(known_q)[where]`` (``where`` a C x H x W mask), computed only there: the
    elements whose sign is coded are few, the grid is not."""
    c, y, x = np.nonzero(where)
    s = _pad1(np.sign(known_q).astype(np.int16))
    horiz = s[c, y + 1, x] + s[c, y + 1, x + 2]
    vert = s[c, y, x + 1] + s[c, y + 2, x + 1]
    return ((np.sign(horiz) + 1) * 3 + np.sign(vert) + 1).astype(np.int64)


def refinement_context(known_q: np.ndarray, plane: int) -> np.ndarray:
    """Refinement context (0..24) at plane ``plane`` of each element (C, H, W) from known latents.

    ``o * 5 + r``: o the bin of the element's level L = |k| >> (plane + 1) (:data:`REF_LEVEL_BINS`),
    r the bin of (sum over its 8 neighbours in the same channel of min(|k| >> (plane + 1), 15))
    // max(L, 1) (:data:`REF_NEIGHBOUR_BINS`). Where the neighbours are large next to the
    element, it tends to sit in the upper half of its interval: the density alone cannot say so.
    Only meaningful where L >= 1 (the elements a refinement pass codes).
    """
    level = np.abs(known_q).astype(np.int64) >> (plane + 1)
    pad = _pad1(np.minimum(level, 15))
    neigh = (
        pad[:, :-2, :-2] + pad[:, :-2, 1:-1] + pad[:, :-2, 2:]
        + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
        + pad[:, 2:, :-2] + pad[:, 2:, 1:-1] + pad[:, 2:, 2:]
    )
    own = _REF_LEVEL_BIN[np.maximum(level, 1)]
    rel = _REF_NEIGHBOUR_BIN[neigh // np.maximum(level, 1)]
    return own * len(REF_NEIGHBOUR_BINS) + rel


def _check_probabilities(name: str, table: np.ndarray, shape: tuple[int, ...]) -> None:
    if table.shape != shape:
        raise CodecError(
            f"probability table {name!r} has shape {table.shape}, not {shape}: these tables were "
            "made for another model or an older codec version (rerun `lpimg release`)")
    if (table <= 0).any() or (table >= CodecTables.PROB_ONE).any():
        raise CodecError(f"probability table {name!r} holds out-of-range entries")


@dataclass
class CodecTables:
    """The integer tables of one model; probabilities are stored as P * 2^16.

    ``pmf`` (C, 255): integer counts of latent values -127..127 (refinement bits, synthesis).
    ``sig2`` (C, 7, 252): P(significant) by (channel, plane, two-phase context).
    ``sign`` (C, 9): P(negative) by (channel, :func:`sign_context`).
    ``ref`` (C, 7, 25): P(bit = 1) of refinement bits by (channel, plane, :func:`refinement_context`).
    ``sig`` (C, 7, 16): P(significant) by (channel, plane, :func:`significance_context`), the
    intra statistics the conditional coder's tables start from.
    """

    pmf: np.ndarray
    sig: np.ndarray
    sig2: np.ndarray
    sign: np.ndarray
    ref: np.ndarray
    PROB_ONE = 1 << 16

    def __post_init__(self) -> None:
        self.pmf = np.asarray(self.pmf, dtype=np.int64)
        self.sig = np.asarray(self.sig, dtype=np.int64)
        self.sig2 = np.asarray(self.sig2, dtype=np.int64)
        self.sign = np.asarray(self.sign, dtype=np.int64)
        self.ref = np.asarray(self.ref, dtype=np.int64)
        c = self.pmf.shape[0]
        if self.pmf.ndim != 2 or self.pmf.shape != (c, 2 * QMAX + 1):
            raise CodecError("probability tables have the wrong shape for this model")
        if (self.pmf <= 0).any():
            raise CodecError("probability tables hold out-of-range entries")
        _check_probabilities("sig", self.sig, (c, NUM_PLANES, NUM_CONTEXTS))
        _check_probabilities("sig2", self.sig2, (c, NUM_PLANES, SIG2_CONTEXTS))
        _check_probabilities("sign", self.sign, (c, SIGN_CONTEXTS))
        _check_probabilities("ref", self.ref, (c, NUM_PLANES, REF_CONTEXTS))
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
        # sig2 is most of the size and every entry is below 2^16: uint16 halves it
        return {"pmf": self.pmf.astype(np.int32), "sig": self.sig.astype(np.int32),
                "sig2": self.sig2.astype(np.uint16), "sign": self.sign.astype(np.int32),
                "ref": self.ref.astype(np.int32)}

    @classmethod
    def from_dict(cls, d: dict) -> CodecTables:
        missing = [k for k in ("pmf", "sig", "sig2", "sign", "ref") if k not in d]
        if missing:
            raise CodecError(
                f"the weights' probability tables lack {missing}: they were made for an older "
                "version of the codec (one-phase significance passes, signs at even odds, static "
                "refinement); refit them with `lpimg release`")
        return cls(*(np.asarray(d[k]) for k in ("pmf", "sig", "sig2", "sign", "ref")))


def quantize_pmf(pmf: np.ndarray, total_bits: int = 20) -> np.ndarray:
    """Float pmf (C, 255) -> integer counts, every value possible (count >= 1)."""
    total = 1 << total_bits
    counts = np.maximum(np.round(pmf * total), 1).astype(np.int64)
    return counts


def uninformed_tables(pmf_counts: np.ndarray) -> CodecTables:
    """The density with every significance and sign decision at even odds (a fitting start)."""
    c = pmf_counts.shape[0]
    half = CodecTables.PROB_ONE // 2
    return CodecTables(pmf_counts, np.full((c, NUM_PLANES, NUM_CONTEXTS), half),
                       np.full((c, NUM_PLANES, SIG2_CONTEXTS), half), np.full((c, SIGN_CONTEXTS), half),
                       np.full((c, NUM_PLANES, REF_CONTEXTS), half))


def base_sig_probability(pmf_counts: np.ndarray) -> np.ndarray:
    """P(|q| >= 2^p | |q| < 2^(p+1)) per (channel, plane) from the density alone."""
    t = uninformed_tables(pmf_counts)
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


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class ContextCounter:
    """Counts the two-phase significance, sign and refinement decisions of training latents.

    Filled by :func:`lpimg.codec.bitplane.count_decisions`, which replays the coder's own pass
    logic, so the fitted contexts are by construction the ones the coder uses.
    """

    def __init__(self, channels: int) -> None:
        self.sig_ones = np.zeros((channels, NUM_PLANES, SIG2_CONTEXTS), dtype=np.int64)
        self.sig_total = np.zeros_like(self.sig_ones)
        self.sign_ones = np.zeros((channels, SIGN_CONTEXTS), dtype=np.int64)
        self.sign_total = np.zeros_like(self.sign_ones)
        self.ref_ones = np.zeros((channels, NUM_PLANES, REF_CONTEXTS), dtype=np.int64)
        self.ref_total = np.zeros_like(self.ref_ones)
        self.ref_static = np.zeros(self.ref_ones.shape, dtype=np.float64)  # sum of density P(1)

    def add(self, table: str, index: np.ndarray, bits: np.ndarray, static: np.ndarray | None = None) -> None:
        """Count decisions ``bits`` (0/1) at flat indices of table ``sig2``, ``sign`` or ``ref``
        (``static``: for ``ref``, the density's P(1) of each decision, the prior of its cell)."""
        ones, total = {"sig2": (self.sig_ones, self.sig_total), "sign": (self.sign_ones, self.sign_total),
                       "ref": (self.ref_ones, self.ref_total)}[table]
        total.reshape(-1)[:] += np.bincount(index, minlength=total.size)
        ones.reshape(-1)[:] += np.bincount(index, weights=bits, minlength=total.size).astype(np.int64)
        if table == "ref" and static is not None:
            self.ref_static.reshape(-1)[:] += np.bincount(index, weights=static, minlength=total.size)

    def sig2_table(self, pmf_counts: np.ndarray, prior_weight: float = 16.0) -> np.ndarray:
        """Smoothed where a (channel, plane, context) cell has few samples.

        252 contexts are too many for every channel to fill, so the prior of a cell combines
        the channel's own rate at that plane (itself smoothed toward the density's estimate)
        with the context's effect pooled over all channels, added in log-odds.
        """
        w = prior_weight
        ones, total = self.sig_ones.astype(np.float64), self.sig_total.astype(np.float64)
        base = base_sig_probability(pmf_counts)
        chan_rate = (ones.sum(2) + w * base) / (total.sum(2) + w)  # (C, 7)
        pool = (ones.sum(0) + w * chan_rate.mean(0)[:, None]) / (total.sum(0) + w)  # (7, K)
        plane_rate = (ones.sum((0, 2)) + 1) / (total.sum((0, 2)) + 2)  # (7,)
        shift = _logit(pool) - _logit(plane_rate)[:, None]
        prior = 1 / (1 + np.exp(-(_logit(chan_rate)[:, :, None] + shift[None])))
        p = (ones + w * prior) / (total + w)
        one = CodecTables.PROB_ONE
        return np.clip(np.round(p * one), 1, one - 1).astype(np.int64)

    def sign_table(self, prior_weight: float = 16.0) -> np.ndarray:
        """P(negative) per (channel, context), smoothed toward the context's rate over channels."""
        pool = (self.sign_ones.sum(0) + 1) / (self.sign_total.sum(0) + 2)
        p = (self.sign_ones + prior_weight * pool) / (self.sign_total + prior_weight)
        one = CodecTables.PROB_ONE
        return np.clip(np.round(p * one), 1, one - 1).astype(np.int64)

    def ref_table(self, prior_weight: float = 16.0) -> np.ndarray:
        """P(bit = 1) per (channel, plane, context), smoothed toward the density's mean P(1) of
        the cell's decisions (1/2 for a cell never seen)."""
        prior = (self.ref_static + 0.5) / (self.ref_total + 1)
        p = (self.ref_ones + prior_weight * prior) / (self.ref_total + prior_weight)
        one = CodecTables.PROB_ONE
        return np.clip(np.round(p * one), 1, one - 1).astype(np.int64)
