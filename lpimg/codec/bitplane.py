"""Latent integers <-> bitplane passes <-> range-coded layer bytes.

The latents of an image are int8 values q[c, y, x] (|q| <= 127). They are sent most significant
plane first (spec/PROTOCOL.md, "Layers and the codec"). The *coarse* passes of a top plane T are
the significance pass of plane T (is |q| >= 2^T? and the sign of every element that became
significant), then for p = T-1 .. 0 a significance pass at plane p (elements not yet significant)
and a refinement pass (bit p of the elements significant before plane p): 2T+1 in all. They
define what a decoder knows of every position (:func:`known_latents`,
:func:`lpimg.codec.model.known_interval`), and a reference state counts them.

A stream (intra, or reference-coded: :mod:`lpimg.codec.reference`) sends every coarse
significance pass as four *quarters*, each its own pass, over the four position classes of the
grid: Q (x and y even), O (x and y odd), H (x odd, y even) and V (x even, y odd). Q and O together
are phase A (the (x + y)-even checkerboard), coded with contexts from what was known before the
plane; H and V are phase B, whose contexts also see phase A's results at this plane. The quarters
only cut the decisions of a phase into separately delivered layers: every probability is the one
the undivided phase would use (no quarter's context sees a result of the other quarter of its
phase), so a stream costs the same few bytes more than whole phases would (one range-coder flush
per layer) and a server can stop at a quarter of any plane. The first layer of a stream carries a
quarter of the positions' top bits (a preview within 500 bytes for a 640x480 photo). 5T+4 passes
in all (:func:`pass_kind`); :func:`coarse_passes` says what a position knows after them.

A *layer* is one pass over a rectangle of latent positions (the whole grid by default). Both ends
keep a per-position pass counter ``passes[y, x]``; a layer (j, region) codes pass j for the
positions of the region whose counter is j and advances them (a phase advances the positions of
both parities; it codes one). Every probability comes from the integer tables of
:class:`~lpimg.codec.tables.CodecTables` and the state both ends share, and is converted to
float64 by one exact division, so encoder and decoder agree bit for bit. The decisions of a pass
are coded in one or two vectorized ``constriction`` calls: a phase's significance, then the signs
of its newly significant elements; a refinement pass is one call (spec/PROTOCOL.md 10.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import constriction
import numpy as np

from lpimg.codec.tables import (
    NUM_PLANES,
    QMAX,
    REF_CONTEXTS,
    SIG2_CONTEXTS,
    SIGN_CONTEXTS,
    CodecTables,
    ContextCounter,
    SignificanceCounter,
    first_phase,
    phase_a_context,
    phase_b_context,
    refinement_context,
    sign_context_at,
    uninformed_tables,
)
from lpimg.errors import CodecError

_BINARY = constriction.stream.model.Categorical(perfect=False)


@dataclass(frozen=True)
class Region:
    """A rectangle of latent positions (one unit = 16x16 pixels)."""

    x: int
    y: int
    w: int
    h: int

    def clip(self, width: int, height: int) -> Region:
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(width, self.x + self.w), min(height, self.y + self.h)
        if x1 <= x0 or y1 <= y0:
            raise CodecError(f"region {self} lies outside the {width}x{height} latent grid")
        return Region(x0, y0, x1 - x0, y1 - y0)

    def mask(self, width: int, height: int) -> np.ndarray:
        m = np.zeros((height, width), dtype=bool)
        m[self.y:self.y + self.h, self.x:self.x + self.w] = True
        return m


@dataclass(frozen=True)
class LayerSpec:
    """What a layer refines: pass ``index`` over ``region`` (None = the whole grid)."""

    index: int
    region: Region | None = None


def num_coarse_passes(top: int) -> int:
    """Coarse passes of top plane ``top`` (what reference states and intervals count)."""
    return 2 * top + 1


SIG_KINDS = ("sigq", "sigo", "sigh", "sigv")
_PLANE_KINDS = (*SIG_KINDS, "ref")
_TOP_PASSES = len(SIG_KINDS)  # the top plane has nothing to refine
_PASSES_PER_PLANE = len(_PLANE_KINDS)


def pass_kind(index: int, top: int) -> tuple[str, int]:
    """("sigq" | "sigo" | "sigh" | "sigv" | "ref", plane) of pass ``index`` of a stream with top
    plane ``top``.

    sigq/sigo: the two quarters of phase A of the significance of ``plane`` (x and y even, then x
    and y odd); sigh/sigv: the two of phase B (x odd and y even, then x even and y odd). The top
    plane has no refinement pass: sigq, sigo, sigh, sigv, then those and ref for every lower plane.
    """
    if index < 0 or index >= num_passes(top):
        raise CodecError(f"pass {index} does not exist for top plane {top}")
    if index < _TOP_PASSES:
        return SIG_KINDS[index], top
    k, r = divmod(index - _TOP_PASSES, _PASSES_PER_PLANE)
    return _PLANE_KINDS[r], top - 1 - k


def num_passes(top: int) -> int:
    """Passes of a stream with top plane ``top`` (its layers; a reference-coded stream adds its
    tile-mode map in front)."""
    return _PASSES_PER_PLANE * top + _TOP_PASSES


def pass_name(index: int, top: int) -> str:
    """Short name of a pass: ``sig6q``, ``sig6o``, ``sig5h``, ``sig5v``, ``ref5``."""
    return kind_name(*pass_kind(index, top))


def kind_name(kind: str, plane: int) -> str:
    """The name of the pass of ``kind`` at ``plane``, the same in every stream whatever its top."""
    return f"ref{plane}" if kind == "ref" else f"sig{plane}{kind[-1]}"


# position classes: what a position's counter means depends on which passes code it; class c
# is coded by the significance kind SIG_KINDS[c]
_CLASS_OF_KIND = {kind: number for number, kind in enumerate(SIG_KINDS)}


def position_classes(height: int, width: int) -> np.ndarray:
    """(H, W) int: 0 where x and y are even (sigq), 1 where both are odd (sigo), 2 where x is odd
    and y even (sigh), 3 where x is even and y odd (sigv). Classes 0 and 1 are phase A
    (:func:`~lpimg.codec.tables.first_phase`), 2 and 3 phase B."""
    yy, xx = np.indices((height, width))
    odd_x, odd_y = xx % 2 == 1, yy % 2 == 1
    return np.where(odd_x == odd_y, odd_x.astype(np.int32), 2 + odd_y.astype(np.int32)).astype(np.int32)


def phase_positions(kind: str, height: int, width: int) -> np.ndarray:
    """(H, W) bool: the positions a significance pass of ``kind`` codes (``siga`` and ``sigb``:
    a whole phase)."""
    classes = position_classes(height, width)
    if kind in _CLASS_OF_KIND:
        return classes == _CLASS_OF_KIND[kind]
    if kind == "siga":
        return classes < 2
    if kind == "sigb":
        return classes >= 2
    raise CodecError(f"{kind} is not a significance pass")


def _coarse_table(top: int) -> np.ndarray:
    """(4, 5T+5): coarse passes completed after n passes, for each position class.

    Coarse pass 0 (significance of T) is complete at a position of class c after pass c; coarse
    pass 2k-1 (significance of T-k) after pass 5k - 1 + c; coarse pass 2k (refinement of T-k)
    after pass 5k + 3 (all classes).
    """
    classes = np.arange(len(SIG_KINDS))
    done_at = np.zeros((len(SIG_KINDS), num_coarse_passes(top)), np.int64)  # pass completing each
    done_at[:, 0] = classes
    for k in range(1, top + 1):
        first = _TOP_PASSES + _PASSES_PER_PLANE * (k - 1)
        done_at[:, 2 * k - 1] = first + classes
        done_at[:, 2 * k] = first + len(SIG_KINDS)
    n = np.arange(num_passes(top) + 1)
    return (done_at[:, None, :] < n[None, :, None]).sum(2).astype(np.int32)


def coarse_passes(passes: np.ndarray, top: int) -> np.ndarray:
    """Pass counters (H, W) -> coarse pass counters: what each position knows."""
    passes = np.asarray(passes)
    return _coarse_table(top)[position_classes(*passes.shape), passes].astype(np.int32)


def passes_covering(coarse: int, top: int) -> int:
    """The fewest passes after which every position has completed ``coarse`` coarse passes
    (where a reference-coded stream starts a position that takes over its reference's state)."""
    if not 0 <= coarse <= num_coarse_passes(top):
        raise CodecError(f"{coarse} coarse passes do not exist for top plane {top}")
    return int(np.argmax((_coarse_table(top) >= coarse).all(0)))


def sig_plane_of(passes: np.ndarray, top: int) -> np.ndarray:
    """Lowest plane whose significance has been sent, per position (top+1 = none yet), from
    coarse pass counters."""
    sig_done = np.where(passes > 0, 1 + passes // 2, 0)
    return top + 1 - sig_done


_HIGH_BIT = np.array([0] + [1 << (v.bit_length() - 1) for v in range(1, QMAX + 1)], dtype=np.int32)


def known_latents(q: np.ndarray, passes: np.ndarray, top: int) -> np.ndarray:
    """What a decoder holds of latents ``q`` after ``passes[y, x]`` coarse passes at each position.

    Significant elements (|q| >= 2^s, s the lowest plane whose significance was sent) keep their
    sign, their top bit and their bits down to the lowest refined plane; the rest is 0. It only
    depends on the pass counters, so an encoder rebuilt from its counters (after a reboot: see
    :func:`replay_passes`) codes with the very contexts its decoder computes.
    """
    mag = np.abs(q).astype(np.int32)
    sig_plane = sig_plane_of(passes, top)[None]
    refined = np.where(passes > 0, top - (passes - 1) // 2, top + 1)[None]
    kmag = ((mag >> refined) << refined) | _HIGH_BIT[mag]
    return np.where(mag >= (1 << sig_plane), np.sign(q) * kmag, 0).astype(np.int32)


def top_plane(q: np.ndarray) -> int:
    peak = int(np.abs(q).max()) if q.size else 0
    return max(peak, 1).bit_length() - 1


def replay_passes(
    specs: list[LayerSpec], shape: tuple[int, int], total: int, initial: np.ndarray | None = None,
) -> np.ndarray:
    """The pass counters after ``specs`` were applied in order (from ``initial``, default zeros),
    in a stream of ``total`` passes (``num_passes(top)``; a conditional stream's bitplane
    passes, its layers after the tile-mode map, start from ``initial``).

    What a device needs to mirror the server's state from the layers it knows were received,
    without coding anything; the rules of :meth:`BitplaneDecoder.apply`: a layer advances the
    positions of its region whose counter equals its pass index, and none may lag behind it.
    """
    h, w = shape
    passes = np.zeros((h, w), np.int32) if initial is None else np.array(initial, dtype=np.int32)
    if passes.shape != (h, w) or (passes < 0).any() or (passes > total).any():
        raise CodecError(f"initial pass counters must be ({h}, {w}) in 0..{total}")
    for spec in specs:
        if not 0 <= spec.index < total:
            raise CodecError(f"pass {spec.index} does not exist in a stream of {total} passes")
        area = np.ones((h, w), bool) if spec.region is None else spec.region.clip(w, h).mask(w, h)
        if np.any(area & (passes < spec.index)):
            raise CodecError(f"layer for pass {spec.index} listed before earlier passes of its region")
        passes[area & (passes == spec.index)] += 1
    return passes


def _words_to_bytes(words: np.ndarray) -> bytes:
    data = words.astype("<u4").tobytes()
    return data.rstrip(b"\x00")  # the decoder pads with zeros again


def _bytes_to_words(data: bytes) -> np.ndarray:
    padded = data + b"\x00" * (-len(data) % 4 + 4)  # one zero word of slack past the end
    return np.frombuffer(padded, dtype="<u4").astype(np.uint32)


class _PassCoder:
    """The tables of a stream and the density's refinement probabilities (what the intra fitter
    and the conditional coder of reference.py use; the intra coder codes with ``tables.ref``)."""

    def __init__(self, tables: CodecTables, top: int) -> None:
        self.tables = tables
        self.top = top
        # the significance contexts of the last quarter coded, with what they were computed
        # from: the second quarter of a phase (or the same quarter over another rectangle) sees
        # the same significance, so it reuses them instead of computing them again
        self._contexts: tuple[tuple, np.ndarray] | None = None

    def significance_contexts(self, plane: int, phase_b: bool, before: np.ndarray,
                              new_a: np.ndarray) -> np.ndarray:
        """:func:`phase_b_context` or :func:`phase_a_context` of ``before`` (and ``new_a``),
        from the cache when they were last computed from exactly these arrays."""
        key = (plane, phase_b, np.packbits(before).tobytes(),
               np.packbits(new_a).tobytes() if phase_b else b"")
        if self._contexts is not None and self._contexts[0] == key:
            return self._contexts[1]
        ctx = phase_b_context(before, new_a) if phase_b else phase_a_context(before)
        self._contexts = (key, ctx)
        return ctx

    def ref_probabilities(self, mag: np.ndarray, sel: np.ndarray, plane: int) -> np.ndarray:
        """P(bit ``plane`` = 1) from the magnitude distribution within the known interval."""
        chan = np.broadcast_to(np.arange(sel.shape[0])[:, None, None], sel.shape)[sel]
        lo = (mag[sel] >> (plane + 1)) << (plane + 1)
        cum = self.tables.mag_cum
        total = cum[chan, lo + (2 << plane)] - cum[chan, lo]
        upper = cum[chan, lo + (2 << plane)] - cum[chan, lo + (1 << plane)]
        total_f = total.astype(np.float64)
        return np.where(total > 0, upper / np.maximum(total_f, 1.0), 0.5)


def _binary_probs(p1: np.ndarray) -> np.ndarray:
    p1 = np.clip(p1, 1.0 / 65536, 1.0 - 1.0 / 65536)
    return np.stack([1.0 - p1, p1], axis=1)


def _table_probability(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Entries of an integer table at flat indices, as probabilities (one exact division)."""
    return table.reshape(-1)[index].astype(np.float64) / float(CodecTables.PROB_ONE)


class _Decisions(Protocol):
    """What runs the binary decisions of a pass: the encoder, the decoder or a table fitter.

    ``decide`` gets the elements concerned (a C x H x W mask, in C order), their P(1), their flat
    indices into table ``table`` (``sig2``, ``sign``, ``ref``) and, for ``ref`` when fitting, the
    density's own P(1) (what the fitter smooths toward); it returns the decisions (0/1 ints, one
    per element of the mask).
    """

    def decide(self, table: str, mask: np.ndarray, p1: np.ndarray, index: np.ndarray,
               plane: int, static: np.ndarray | None = None) -> np.ndarray: ...


class _Encoding:
    def __init__(self, q: np.ndarray, mag: np.ndarray, enc: constriction.stream.queue.RangeEncoder) -> None:
        self.q, self.mag, self.enc = q, mag, enc

    def decide(self, table: str, mask: np.ndarray, p1: np.ndarray, index: np.ndarray,
               plane: int, static: np.ndarray | None = None) -> np.ndarray:
        bits = (self.q[mask] < 0) if table == "sign" else (self.mag[mask] >> plane) & 1
        bits = bits.astype(np.int32)
        if bits.size:
            self.enc.encode(bits, _BINARY, _binary_probs(p1))
        return bits


class _Decoding:
    def __init__(self, dec: constriction.stream.queue.RangeDecoder) -> None:
        self.dec = dec

    def decide(self, table: str, mask: np.ndarray, p1: np.ndarray, index: np.ndarray,
               plane: int, static: np.ndarray | None = None) -> np.ndarray:
        if not p1.size:
            return np.zeros(0, np.int32)
        return np.asarray(self.dec.decode(_BINARY, _binary_probs(p1)), dtype=np.int32)


class _Counting(_Encoding):
    """Replays the decisions of known latents into a :class:`ContextCounter` (no coding)."""

    def __init__(self, q: np.ndarray, counter: ContextCounter) -> None:
        super().__init__(q, np.abs(q), None)  # type: ignore[arg-type]
        self.counter = counter

    def decide(self, table: str, mask: np.ndarray, p1: np.ndarray, index: np.ndarray,
               plane: int, static: np.ndarray | None = None) -> np.ndarray:
        bits = ((self.q[mask] < 0) if table == "sign" else (self.mag[mask] >> plane) & 1).astype(np.int32)
        if bits.size:
            self.counter.add(table, index, bits, static)
        return bits


def _significance_phase(
    known: np.ndarray, pos: np.ndarray, plane: int, kind: str, coder: _PassCoder, io: _Decisions,
) -> None:
    """Significance of plane ``plane`` at the positions ``pos`` (H, W) of one phase.

    ``known`` (C, H, W) is what the decoder holds (unknown low bits zero); it is updated in
    place. Phase A (its quarters ``sigq`` and ``sigo``) codes the elements at (x + y) even
    positions with contexts from the significance known before the plane; phase B (``sigh`` and
    ``sigv``) the others, with contexts that also see phase A's results: the phase A elements
    whose top bit is ``plane`` became significant in phase A (they cannot have been significant
    before). Each quarter codes its significance decisions, then the signs of the newly
    significant elements (whose sign contexts, the 4 direct neighbours, all lie in the other
    phase).
    """
    c, h, w = known.shape
    tables = coder.tables
    first = first_phase(h, w)[None]
    chan = np.broadcast_to(np.arange(c)[:, None, None], known.shape)
    significant = known != 0
    mask = pos[None] & ~significant & phase_positions(kind, h, w)[None]
    # the elements that became significant at this plane (their top bit is ``plane``): phase A's
    # are what phase B sees; no context counts them as known before the plane, so the second
    # quarter of a phase codes with exactly the contexts of the whole phase
    new_here = (np.abs(known) >> plane) == 1
    phase_b = kind in ("sigh", "sigv")
    ctx = coder.significance_contexts(plane, phase_b, significant & ~new_here, first & new_here)
    index = (chan[mask] * NUM_PLANES + plane) * SIG2_CONTEXTS + ctx[mask]
    bits = io.decide("sig2", mask, _table_probability(tables.sig2, index), index, plane)
    newly = np.zeros_like(mask)
    newly[mask] = bits.astype(bool)
    sindex = chan[newly] * SIGN_CONTEXTS + sign_context_at(known, newly)
    negative = io.decide("sign", newly, _table_probability(tables.sign, sindex), sindex, plane)
    known[newly] = np.where(negative.astype(bool), -(1 << plane), 1 << plane)


def _refinement_pass(known: np.ndarray, pos: np.ndarray, plane: int, coder: _PassCoder,
                     io: _Decisions) -> None:
    """Bit ``plane`` of the elements at ``pos`` that were significant before this plane."""
    mag = np.abs(known)
    sel = pos[None] & (mag >= (2 << plane))
    chan = np.broadcast_to(np.arange(known.shape[0])[:, None, None], known.shape)
    index = (chan[sel] * NUM_PLANES + plane) * REF_CONTEXTS + refinement_context(known, plane)[sel]
    p1 = _table_probability(coder.tables.ref, index)
    static = coder.ref_probabilities(mag, sel, plane) if isinstance(io, _Counting) else None
    bits = io.decide("ref", sel, p1, index, plane, static=static)
    add = np.zeros_like(known)
    add[sel] = bits.astype(known.dtype) << plane
    known += np.sign(known) * add


def _run_pass(known: np.ndarray, pos: np.ndarray, index: int, coder: _PassCoder, io: _Decisions) -> None:
    """Pass ``index`` at positions ``pos``."""
    kind, plane = pass_kind(index, coder.top)
    if kind == "ref":
        _refinement_pass(known, pos, plane, coder, io)
    else:
        _significance_phase(known, pos, plane, kind, coder, io)


def count_decisions(q: np.ndarray, pmf_counts: np.ndarray, counter: ContextCounter) -> None:
    """Replay every pass of latents ``q`` (C, H, W) over the whole grid into ``counter``.

    The fitted tables' probabilities do not matter for counting (even odds stand in); the
    density (``pmf_counts``) gives the refinement bits' prior.
    """
    q = q.astype(np.int32)
    top = top_plane(q)
    coder = _PassCoder(uninformed_tables(pmf_counts), top)
    known = np.zeros_like(q)
    pos = np.ones(q.shape[1:], bool)
    io = _Counting(q, counter)
    for index in range(num_passes(top)):
        _run_pass(known, pos, index, coder, io)


def fit_codec_tables(pmf_counts: np.ndarray, latents: Iterable[np.ndarray]) -> CodecTables:
    """All the integer tables for a density (``pmf_counts``), fitted on training latents."""
    channels = pmf_counts.shape[0]
    sig_counter = SignificanceCounter(channels)
    counter = ContextCounter(channels)
    for q in latents:
        sig_counter.add(q)
        count_decisions(q, pmf_counts, counter)
    return CodecTables(pmf_counts, sig_counter.table(pmf_counts), counter.sig2_table(pmf_counts),
                       counter.sign_table(), counter.ref_table())


class BitplaneEncoder:
    """Device side: holds the latents and what has been sent of each position."""

    def __init__(self, q: np.ndarray, tables: CodecTables) -> None:
        if q.ndim != 3:
            raise CodecError("latents must be (channels, height, width)")
        self.q = q.astype(np.int32)
        self.mag = np.abs(self.q)
        self.tables = tables
        self.top = top_plane(self.q)
        self.passes = np.zeros(q.shape[1:], dtype=np.int32)
        self._coder = _PassCoder(tables, self.top)
        self._known: tuple[np.ndarray, np.ndarray] | None = None  # (counters, known latents)

    @property
    def known(self) -> np.ndarray:
        """The decoder's latents (what the contexts are computed from), from the pass counters.

        A function of the counters alone, so the state the last pass left is reused while the
        counters are still the ones it left (they may have been rebuilt since: a reboot)."""
        if self._known is not None and np.array_equal(self._known[0], self.passes):
            return self._known[1].copy()
        return known_latents(self.q, self.coarse_passes, self.top)

    @property
    def coarse_passes(self) -> np.ndarray:
        return coarse_passes(self.passes, self.top)

    @property
    def total_passes(self) -> int:
        return num_passes(self.top)

    def default_layers(self) -> list[LayerSpec]:
        return [LayerSpec(j) for j in range(self.total_passes)]

    def refine_specs(self, region: Region, target_passes: int) -> list[LayerSpec]:
        """Layers that bring every position of ``region`` to ``target_passes`` passes."""
        _, h, w = self.q.shape
        region = region.clip(w, h)
        target = min(target_passes, self.total_passes)
        sub = self.passes[region.y:region.y + region.h, region.x:region.x + region.w]
        return [LayerSpec(j, region) for j in range(int(sub.min()), target)]

    def encode(self, spec: LayerSpec) -> bytes:
        _, h, w = self.q.shape
        pass_kind(spec.index, self.top)
        area = np.ones((h, w), bool) if spec.region is None else spec.region.clip(w, h).mask(w, h)
        if np.any(area & (self.passes < spec.index)):
            raise CodecError(f"pass {spec.index} requested before earlier passes of its region")
        pos = area & (self.passes == spec.index)
        enc = constriction.stream.queue.RangeEncoder()
        # from the counters, not a mirror kept up to date: they may have been rebuilt (reboot)
        known = self.known
        _run_pass(known, pos, spec.index, self._coder, _Encoding(self.q, self.mag, enc))
        self.passes[pos] += 1
        self._known = (self.passes.copy(), known)
        return _words_to_bytes(enc.get_compressed())


class BitplaneDecoder:
    """Server side: the partially known latents (unknown low bits are zero) and pass counters."""

    def __init__(self, shape: tuple[int, int, int], top: int, tables: CodecTables) -> None:
        if not 0 <= top <= 6:
            raise CodecError(f"top plane {top} out of range 0..6")
        self.q = np.zeros(shape, dtype=np.int32)
        self.top = top
        self.tables = tables
        self.passes = np.zeros(shape[1:], dtype=np.int32)
        self._coder = _PassCoder(tables, top)

    @property
    def total_passes(self) -> int:
        return num_passes(self.top)

    @property
    def coarse_passes(self) -> np.ndarray:
        """What each position knows, in the coarse passes of :func:`known_interval`."""
        return coarse_passes(self.passes, self.top)

    def apply(self, spec: LayerSpec, data: bytes) -> None:
        _, h, w = self.q.shape
        pass_kind(spec.index, self.top)
        area = np.ones((h, w), bool) if spec.region is None else spec.region.clip(w, h).mask(w, h)
        if np.any(area & (self.passes < spec.index)):
            raise CodecError(f"layer for pass {spec.index} arrived before earlier passes")
        pos = area & (self.passes == spec.index)
        dec = constriction.stream.queue.RangeDecoder(_bytes_to_words(data))
        known = self.q.copy()  # a layer that does not decode leaves the state as it was
        try:
            _run_pass(known, pos, spec.index, self._coder, _Decoding(dec))
        except (AssertionError, ValueError, RuntimeError) as exc:  # constriction: corrupted stream
            raise CodecError(f"layer {spec.index} does not decode: {exc}") from exc
        self.q = known
        self.passes[pos] += 1
