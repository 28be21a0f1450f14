"""Latent integers <-> bitplane passes <-> range-coded layer bytes.

The latents of an image are int8 values q[c, y, x] (|q| <= 127). They are sent most significant
plane first, each plane as two passes (spec/PROTOCOL.md, "Layers and the codec"):

- pass 0: significance of the top plane T (is |q| >= 2^T?) and the sign of every element that
  became significant;
- then for p = T-1 .. 0: a significance pass at plane p (for elements not yet significant),
  followed by a refinement pass (bit p of elements that were significant before plane p).

A *layer* is one pass over a rectangle of latent positions (the whole grid by default). Both ends
keep a per-position pass counter ``passes[y, x]``; a layer (j, region) codes pass j for the
positions of the region whose counter is j and advances them. Every probability comes from the
integer tables of :class:`~lpimg.codec.tables.CodecTables` and the state both ends share, and is
converted to float64 by one exact division, so encoder and decoder agree bit for bit; all the
decisions of one pass are coded in one vectorized ``constriction`` call.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from lpimg.codec.tables import CodecTables, significance_context
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


def pass_kind(index: int, top: int) -> tuple[str, int]:
    """("sig" | "ref", plane) of pass ``index`` for top plane ``top``."""
    if index < 0 or index > 2 * top:
        raise CodecError(f"pass {index} does not exist for top plane {top}")
    if index == 0:
        return "sig", top
    plane = top - (index + 1) // 2
    return ("sig" if index % 2 == 1 else "ref"), plane


def num_passes(top: int) -> int:
    return 2 * top + 1


def sig_plane_of(passes: np.ndarray, top: int) -> np.ndarray:
    """Lowest plane whose significance has been sent, per position (top+1 = none yet)."""
    sig_done = np.where(passes > 0, 1 + passes // 2, 0)
    return top + 1 - sig_done


def top_plane(q: np.ndarray) -> int:
    peak = int(np.abs(q).max()) if q.size else 0
    return max(peak, 1).bit_length() - 1


def replay_passes(
    specs: list[LayerSpec], shape: tuple[int, int], top: int, initial: np.ndarray | None = None,
) -> np.ndarray:
    """The pass counters after ``specs`` were applied in order (from ``initial``, default zeros).

    What a device needs to mirror the server's state from the layers it knows were received,
    without coding anything; the rules of :meth:`BitplaneDecoder.apply`: a layer advances the
    positions of its region whose counter equals its pass index, and none may lag behind it.
    """
    h, w = shape
    passes = np.zeros((h, w), np.int32) if initial is None else np.array(initial, dtype=np.int32)
    if passes.shape != (h, w) or (passes < 0).any() or (passes > num_passes(top)).any():
        raise CodecError(f"initial pass counters must be ({h}, {w}) in 0..{num_passes(top)}")
    for spec in specs:
        pass_kind(spec.index, top)
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
    """The probabilities of one pass, computed identically by encoder and decoder."""

    def __init__(self, tables: CodecTables, top: int) -> None:
        self.tables = tables
        self.top = top

    def sig_probabilities(
        self, known_sig: np.ndarray, sel: np.ndarray, plane: int,
    ) -> np.ndarray:
        """P(significant) for the selected elements (sel: bool C,H,W)."""
        ctx = significance_context(known_sig)
        chan = np.broadcast_to(np.arange(sel.shape[0])[:, None, None], sel.shape)
        counts = self.tables.sig[chan[sel], plane, ctx[sel]].astype(np.float64)
        return counts / float(self.tables.PROB_ONE)

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
        kind, plane = pass_kind(spec.index, self.top)
        area = np.ones((h, w), bool) if spec.region is None else spec.region.clip(w, h).mask(w, h)
        if np.any(area & (self.passes < spec.index)):
            raise CodecError(f"pass {spec.index} requested before earlier passes of its region")
        pos = area & (self.passes == spec.index)
        enc = constriction.stream.queue.RangeEncoder()
        sig_plane = sig_plane_of(self.passes, self.top)  # per position, before this pass
        known_sig = self.mag >= (1 << sig_plane)[None].astype(np.int64)
        if kind == "sig":
            sel = pos[None] & ~known_sig
            bits = (self.mag[sel] >> plane) & 1
            p1 = self._coder.sig_probabilities(known_sig, sel, plane)
            if bits.size:
                enc.encode(bits.astype(np.int32), _BINARY, _binary_probs(p1))
            negative = (self.q[sel] < 0)[bits == 1].astype(np.int32)
            if negative.size:
                enc.encode(negative, _BINARY, _binary_probs(np.full(negative.size, 0.5)))
        else:
            sel = pos[None] & (self.mag >= (2 << plane))  # significant before this plane
            bits = (self.mag[sel] >> plane) & 1
            p1 = self._coder.ref_probabilities(self.mag, sel, plane)
            if bits.size:
                enc.encode(bits.astype(np.int32), _BINARY, _binary_probs(p1))
        self.passes[pos] += 1
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

    def apply(self, spec: LayerSpec, data: bytes) -> None:
        _, h, w = self.q.shape
        kind, plane = pass_kind(spec.index, self.top)
        area = np.ones((h, w), bool) if spec.region is None else spec.region.clip(w, h).mask(w, h)
        if np.any(area & (self.passes < spec.index)):
            raise CodecError(f"layer for pass {spec.index} arrived before earlier passes")
        pos = area & (self.passes == spec.index)
        mag = np.abs(self.q)
        known_sig = mag > 0
        dec = constriction.stream.queue.RangeDecoder(_bytes_to_words(data))
        try:
            if kind == "sig":
                sel = pos[None] & ~known_sig
                p1 = self._coder.sig_probabilities(known_sig, sel, plane)
                n = int(sel.sum())
                bits = dec.decode(_BINARY, _binary_probs(p1)) if n else np.zeros(0, np.int32)
                newly = np.zeros_like(sel)
                newly[sel] = bits.astype(bool)
                m = int(newly.sum())
                neg = (
                    dec.decode(_BINARY, _binary_probs(np.full(m, 0.5))) if m else np.zeros(0, np.int32)
                )
                values = np.where(neg.astype(bool), -(1 << plane), 1 << plane)
                self.q[newly] = values
            else:
                sel = pos[None] & (mag >= (2 << plane))
                p1 = self._coder.ref_probabilities(mag, sel, plane)
                n = int(sel.sum())
                bits = dec.decode(_BINARY, _binary_probs(p1)) if n else np.zeros(0, np.int32)
                add = np.zeros_like(self.q)
                add[sel] = bits.astype(np.int32) << plane
                self.q += np.sign(self.q) * add
        except (AssertionError, ValueError, RuntimeError) as exc:  # constriction: corrupted stream
            raise CodecError(f"layer {spec.index} does not decode: {exc}") from exc
        self.passes[pos] += 1
