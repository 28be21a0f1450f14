"""Reference-frame (conditional) coding: a fixed camera sends only what changed since the last picture.

The device cannot run the synthesis transform, so the reference is not a picture but the *latent
state the server acknowledged* of an earlier picture: its partial latent integers, per-position
pass counters and top plane, exactly what a :class:`~lpimg.codec.bitplane.BitplaneDecoder` holds.
The device mirrors it without decoding anything (it knows its latents and which layers were
received, :meth:`ReferenceState.from_encoder`); both ends hash it (:meth:`ReferenceState.hash`) and
a stream names the hash it was coded against, so a missing or different reference is refused
before a single layer is applied.

A conditional picture is coded as its *own* bitplanes, pass for pass the same quantizer as an intra
picture, but every binary decision is coded with a probability conditioned on what the reference
knows of the same latent element (its known interval). Where the scene did not change the
reference nearly predicts each decision, which makes those decisions almost free; where it
changed they cost about what they cost intra. Because the quantizer is the intra one, a conditional
picture cut after n passes decodes to the same latent intervals, so the same quality, as the intra
picture cut after n passes, and the state it leaves is again an ordinary reference state: chains
of pictures cannot drift. (Where a picture was cut before it got as far as the reference, the
reference's knowledge of a position is kept if the picture agrees with it: :func:`merge_states`.)

Layers of a conditional stream (all integer work on the device's CPU; the KPU runs the analysis
transform exactly as for an intra picture and nothing more):

- layer 0, the *tile-mode map*: the latent grid is cut into ``tile`` x ``tile`` tiles; a tile is
  ``SKIP`` when every new latent lies within ``tolerance`` of the interval the reference knows for
  it. A skipped tile takes over the reference's state (values and pass counters; the device clips
  its latents into those intervals, an error of at most ``tolerance``), so it costs a fraction of
  a bit and is still refined by later passes below the reference's precision. The map is range
  coded with integer counts in the context of the left and upper tiles.
- layer j + 1: bitplane pass j over the positions whose counter is j (skipped tiles start where
  the reference's knowledge puts them), with :class:`ResidualTables` probabilities. The passes are
  the intra stream's (:func:`~lpimg.codec.bitplane.pass_kind`): every significance pass in
  four quarters, two per checkerboard phase, the second phase seeing the first's results, so a
  server can stop a conditional picture where it can stop an intra one. Pass
  counters count these passes; what a position knows is their coarse count
  (:func:`~lpimg.codec.bitplane.coarse_passes`), and the reference state keeps coarse counters.
  Probabilities:
  significance by (class of the reference interval against the plane, channel, plane, the intra
  neighbourhood context); signs by whether the reference knows the sign; refinement bits by
  whether the reference interval lies in the lower or upper half of the new element's interval,
  else the intra density.

Decoding reconstructs like an intra picture from the new state, except that while an element is
known less precisely than the reference knew it, the estimate is taken from the intersection of
both intervals (a prefix of a few bytes shows the reference where nothing changed).

An earlier design coded a residual ``q - ref_value`` with its own bitplanes; it needed whole extra
planes to reach intra's quality (docs/REFERENCE-CODING.md has the measurements) and was replaced.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import constriction
import numpy as np
import torch

from lpimg.codec.bitplane import (
    LayerSpec,
    Region,
    _binary_probs,
    _bytes_to_words,
    _PassCoder,
    _words_to_bytes,
    coarse_passes,
    num_coarse_passes,
    num_passes,
    pass_kind,
    passes_covering,
    phase_positions,
    replay_passes,
    sig_plane_of,
    top_plane,
)
from lpimg.codec.image import as_rgb, check_geometry
from lpimg.codec.model import interval_expectation, known_interval
from lpimg.codec.pipeline import WEIGHTS_DIR, Condition, ImageDecoder, ImageEncoder, StreamHeader
from lpimg.codec.tables import (
    NUM_CONTEXTS,
    NUM_PLANES,
    QMAX,
    CodecTables,
    significance_context,
)
from lpimg.codec.tiling import DOWNSCALE
from lpimg.errors import CodecError

if TYPE_CHECKING:
    from lpimg.codec.pipeline import LearnedCodec

CODED, SKIP = 0, 1
NUM_MODES = 2
MODE_CONTEXTS = 3  # how many of the left and upper tiles are SKIP

# what the reference says about "is |q| >= 2**p" for an element not yet significant at p+1
SIG_INSIG, SIG_BAND, SIG_ABOVE, SIG_UNKNOWN = 0, 1, 2, 3
SIG_CLASSES = 4
# what the reference says about refinement bit p
REF_SAYS0, REF_SAYS1, REF_UNKNOWN = 0, 1, 2

DEFAULT_TILE = 2
DEFAULT_TOLERANCE = 1
HASH_BYTES = 8
RESIDUAL_FORMAT = 2
PROB_ONE = CodecTables.PROB_ONE
_STATE_MAGIC = b"LPR2"

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
_BINARY = constriction.stream.model.Categorical(perfect=False)


def convert_passes(passes: np.ndarray, from_top: int, to_top: int) -> np.ndarray:
    """Pass counters under top plane ``from_top`` -> the counters meaning the same under ``to_top``.

    A stream with a higher top plane has 2 more passes per extra plane in front; a position
    that has seen nothing under ``from_top`` still knows that its magnitude is below
    ``2**(from_top + 1)``, which is one pass short of that under a higher top.
    """
    if to_top < from_top:
        raise CodecError("a conditional stream's top plane is never below its reference's")
    n = np.asarray(passes, dtype=np.int32)
    if to_top == from_top:
        return n.copy()
    shift = 2 * (to_top - from_top)
    return np.where(n > 0, n + shift, shift - 1).astype(np.int32)


def partial_latents(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The decoder's partial integers (known high bits, sign; 0 if insignificant) of intervals."""
    return np.where(lo > 0, lo, np.where(hi < 0, hi, 0)).astype(np.int32)


def merge_states(
    model_id: int, width: int, height: int, top: int, q: np.ndarray, passes: np.ndarray,
    reference: ReferenceState,
) -> ReferenceState:
    """The state a conditional picture leaves: its own, except at positions where it did not get
    as far as the reference and everything it said there agrees with the reference.

    A picture cut early (the server had enough after a few layers because the scene barely
    changed) must not throw away what the server knew of the picture before; but knowledge the
    newest picture contradicts (some latent of the position left the reference's interval) is
    dropped, so the state never goes stale against what the server was told. Per position, so the
    result is again a (latents, pass counters) state; both ends compute it from what they hold.
    """
    ref_passes = convert_passes(reference.passes, reference.top, top)
    lo, hi = known_interval(torch.from_numpy(np.asarray(q, np.int64)),
                            torch.from_numpy(np.asarray(passes, np.int64))[None], top)
    lo_r, hi_r = reference.intervals
    agrees = ((lo_r >= lo.numpy()) & (hi_r <= hi.numpy())).all(axis=0)
    keep_ref = (passes < ref_passes) & agrees
    return ReferenceState(model_id, width, height, top,
                          np.where(keep_ref[None], reference.q, q), np.where(keep_ref, ref_passes, passes))


# --------------------------------------------------------------------------------------------
# the reference state


@dataclass(frozen=True, eq=False)
class ReferenceState:
    """What both ends hold of an earlier picture: partial latents, pass counters, top plane.

    ``q`` (C, H, W) holds the known high bits of each latent with its sign (0 while
    insignificant), ``passes`` (H, W) how many passes each position has seen, ``top`` the top plane
    they count from; ``model_id`` and the picture geometry are part of the state and of its hash,
    because latents mean nothing under another model or size. Immutable, so a hash once taken
    stays true.
    """

    model_id: int
    width: int
    height: int
    top: int
    q: np.ndarray
    passes: np.ndarray

    def __post_init__(self) -> None:
        q = np.array(self.q, dtype=np.int16)
        passes = np.array(self.passes, dtype=np.int16)
        lw, lh = -(-self.width // DOWNSCALE), -(-self.height // DOWNSCALE)
        if q.ndim != 3 or q.shape[1:] != (lh, lw) or passes.shape != (lh, lw):
            raise CodecError(f"reference arrays {q.shape}/{passes.shape} do not fit a "
                             f"{self.width}x{self.height} picture")
        if not 0 <= self.top <= NUM_PLANES - 1:
            raise CodecError(f"reference top plane {self.top} out of range")
        if (passes < 0).any() or (passes > num_coarse_passes(self.top)).any() or (np.abs(q) > QMAX).any():
            raise CodecError("reference state holds out-of-range values")
        q.setflags(write=False)
        passes.setflags(write=False)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "passes", passes)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.q.shape
        return c, h, w

    @cached_property
    def intervals(self) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi] each latent is known to lie in (int32 arrays)."""
        lo, hi = known_interval(torch.from_numpy(self.q.astype(np.int64)),
                                torch.from_numpy(self.passes.astype(np.int64))[None], self.top)
        return lo.numpy().astype(np.int32), hi.numpy().astype(np.int32)

    def hash(self) -> bytes:
        """8 bytes of SHA-256 over model id, geometry, top plane, latents and counters (LE int16)."""
        h = hashlib.sha256(b"lpimg-reference-v2")
        h.update(struct.pack("<HHHHB", self.model_id, self.width, self.height, self.shape[0],
                             self.top))
        h.update(self.q.astype("<i2").tobytes())
        h.update(self.passes.astype("<i2").tobytes())
        return h.digest()[:HASH_BYTES]

    # constructors -------------------------------------------------------------------------

    @classmethod
    def from_latents(
        cls, model_id: int, q: np.ndarray, width: int, height: int, top: int,
        passes: np.ndarray,
    ) -> ReferenceState:
        """The state ``passes`` bitplane passes leave of latents ``q`` (the truth or partial)."""
        lo, hi = known_interval(torch.from_numpy(np.asarray(q, np.int64)),
                                torch.from_numpy(np.asarray(passes, np.int64))[None], top)
        return cls(model_id, width, height, top, partial_latents(lo.numpy(), hi.numpy()), passes)

    @classmethod
    def from_decoder(cls, decoder: ImageDecoder | ConditionalDecoder) -> ReferenceState:
        """Server side: the state of a decoder after the layers it applied."""
        if isinstance(decoder, ConditionalDecoder):
            return decoder.next_reference()
        b = decoder.bitplanes
        h = decoder.header
        return cls(h.model_id, h.width, h.height, b.top, b.q, b.coarse_passes)

    @classmethod
    def from_encoder(
        cls, encoder: ImageEncoder | ConditionalEncoder, acknowledged: Iterable[LayerSpec],
    ) -> ReferenceState:
        """Device side: the server's state after it applied ``acknowledged`` (in that order).

        Computed from the device's latents and the list of received layers, with no entropy
        decoding; equal to :meth:`from_decoder` on the server (their hashes agree).
        """
        if isinstance(encoder, ConditionalEncoder):
            return encoder.next_reference(acknowledged)
        b = encoder.bitplanes
        h = encoder.header
        passes = replay_passes(list(acknowledged), b.q.shape[1:], b.total_passes)
        return cls.from_latents(h.model_id, b.q, h.width, h.height, b.top, coarse_passes(passes, b.top))

    # persistence --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """A compact self-checking serialization for the endpoints' persistent stores."""
        c, lh, lw = self.shape
        head = _STATE_MAGIC + struct.pack("<HHHHHHB", self.model_id, self.width, self.height,
                                          c, lh, lw, self.top)
        body = self.q.astype(np.int8).tobytes() + self.passes.astype(np.uint8).tobytes()
        return head + body + self.hash()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ReferenceState:
        size = len(_STATE_MAGIC) + 13
        if len(blob) < size + HASH_BYTES or not blob.startswith(_STATE_MAGIC):
            raise CodecError("not a stored lpimg reference state")
        model_id, width, height, c, lh, lw, top = struct.unpack("<HHHHHHB", blob[4:size])
        n = c * lh * lw
        if len(blob) != size + n + lh * lw + HASH_BYTES:
            raise CodecError("stored reference state is truncated or has trailing bytes")
        q = np.frombuffer(blob[size:size + n], dtype=np.int8).reshape(c, lh, lw)
        passes = np.frombuffer(blob[size + n:size + n + lh * lw], dtype=np.uint8).reshape(lh, lw)
        state = cls(model_id, width, height, top, q, passes)
        if state.hash() != blob[-HASH_BYTES:]:
            raise CodecError("stored reference state is corrupted (hash mismatch)")
        return state


# --------------------------------------------------------------------------------------------
# tables


@dataclass
class ResidualTables:
    """The integer probabilities of conditional streams, fitted for one model (``model_id``).

    ``sig`` (4 C, 7, 16): P(significant) * 2**16 by row ``class * C + channel`` (class: what the
    reference says, ``SIG_*``), plane and the intra neighbourhood context; ``sign`` (7,):
    P(sign equals the reference's) * 2**16 by plane; ``refbit`` (2, 7): P(bit = 1) * 2**16 when
    the reference says 0 / 1, by plane; ``modes`` (3, 2) counts of the tile-mode map by context;
    ``tile``: tile side in latent positions. ``residual_id`` (16 bits) names the set in headers.
    """

    model_id: int
    tile: int
    sig: np.ndarray
    sign: np.ndarray
    refbit: np.ndarray
    modes: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sig = np.asarray(self.sig, dtype=np.int64)
        self.sign = np.asarray(self.sign, dtype=np.int64)
        self.refbit = np.asarray(self.refbit, dtype=np.int64)
        self.modes = np.asarray(self.modes, dtype=np.int64)
        if not 1 <= self.tile <= 16:
            raise CodecError(f"tile side {self.tile} out of range 1..16")
        rows = self.sig.shape[0] if self.sig.ndim == 3 else 0
        if (self.sig.shape != (rows, NUM_PLANES, NUM_CONTEXTS) or rows % SIG_CLASSES or not rows
                or self.sign.shape != (NUM_PLANES,) or self.refbit.shape != (2, NUM_PLANES)
                or self.modes.shape != (MODE_CONTEXTS, NUM_MODES)):
            raise CodecError("residual tables have the wrong shapes")
        for t in (self.sig, self.sign, self.refbit):
            if (t <= 0).any() or (t >= PROB_ONE).any():
                raise CodecError("residual tables hold out-of-range probabilities")
        if (self.modes <= 0).any() or (self.modes.sum(axis=1) > 1 << 30).any():
            raise CodecError("tile-mode table holds out-of-range counts")

    @property
    def channels(self) -> int:
        return self.sig.shape[0] // SIG_CLASSES

    @cached_property
    def residual_id(self) -> int:
        h = hashlib.sha256(b"lpimg-residual-v5:passes-sigq,sigo,sigh,sigv,ref")
        h.update(struct.pack("<HH", self.model_id, self.tile))
        for t in (self.sig, self.sign, self.refbit, self.modes):
            h.update(t.astype("<i8").tobytes())
        return int.from_bytes(h.digest()[:2], "big")

    def mode_probabilities(self, ctx: np.ndarray) -> np.ndarray:
        """(n, 2) float64 rows, each one exact division of integers."""
        counts = self.modes[np.asarray(ctx, np.int64)].astype(np.float64)
        return counts / counts.sum(axis=1, keepdims=True)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(
            buf, format=np.int64(RESIDUAL_FORMAT), model_id=np.int64(self.model_id),
            tile=np.int64(self.tile), sig=self.sig.astype(np.int32), sign=self.sign.astype(np.int32),
            refbit=self.refbit.astype(np.int32), modes=self.modes,
            meta=np.array(json.dumps(self.meta, sort_keys=True)))
        path.write_bytes(buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> ResidualTables:
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                if int(z["format"]) != RESIDUAL_FORMAT:
                    raise CodecError(f"{path}: residual table format {int(z['format'])} is not "
                                     f"{RESIDUAL_FORMAT}; refit with `lpimg fit-residual`")
                return cls(int(z["model_id"]), int(z["tile"]), z["sig"], z["sign"], z["refbit"],
                           z["modes"], json.loads(str(z["meta"])))
        except (OSError, KeyError, ValueError) as exc:
            raise CodecError(f"{path}: not a residual table file ({exc})") from exc

    @staticmethod
    def path_for(codec: LearnedCodec) -> Path:
        """``<weights>.residual.npz`` next to the model's weights file."""
        src = getattr(codec, "source", None)
        if src is not None:
            return Path(src).with_name(Path(src).stem + ".residual.npz")
        return WEIGHTS_DIR / f"{codec.name}.residual.npz"

    @classmethod
    def for_codec(cls, codec: LearnedCodec, path: str | Path | None = None) -> ResidualTables:
        """The tables shipped with ``codec``; refused if they were fitted for another model."""
        path = Path(path) if path is not None else cls.path_for(codec)
        if not path.exists():
            raise CodecError(
                f"no residual tables for {codec.name} ({path}); fit them with "
                f"`lpimg fit-residual --model {codec.name}`")
        key = (str(path.resolve()), path.stat().st_mtime_ns)
        tables = _TABLE_CACHE.get(key)
        if tables is None:
            tables = _TABLE_CACHE[key] = cls.load(path)
        tables.check_model(codec)
        return tables

    def check_model(self, codec: LearnedCodec) -> None:
        if self.model_id != codec.model_id:
            raise CodecError(
                f"residual tables were fitted for model id {self.model_id:#06x}, but {codec.name} "
                f"is {codec.model_id:#06x}: refit them with `lpimg fit-residual --model {codec.name}`")
        if self.channels != codec.channels:
            raise CodecError("residual tables have the wrong channel count for this model")

    @classmethod
    def uninformed(cls, codec: LearnedCodec, tile: int = DEFAULT_TILE) -> ResidualTables:
        """Tables that ignore the reference (intra statistics, even odds): a fitting start point."""
        sig = np.concatenate([codec.tables.sig] * SIG_CLASSES)
        half = np.full(NUM_PLANES, PROB_ONE // 2)
        return cls(codec.model_id, tile, sig, half, np.stack([half, half]),
                   np.ones((MODE_CONTEXTS, NUM_MODES), np.int64), {"uninformed": True})


_TABLE_CACHE: dict[tuple[str, int], ResidualTables] = {}


# --------------------------------------------------------------------------------------------
# tiles and the mode map


def tile_grid(height: int, width: int, tile: int) -> tuple[int, int]:
    return -(-height // tile), -(-width // tile)


def tile_max(values: np.ndarray, tile: int) -> np.ndarray:
    """(H, W) non-negative -> (TH, TW) maximum over each tile."""
    h, w = values.shape
    th, tw = tile_grid(h, w, tile)
    pad = np.zeros((th * tile, tw * tile), dtype=values.dtype)
    pad[:h, :w] = values
    return pad.reshape(th, tile, tw, tile).max(axis=(1, 3))


def expand_tiles(tiles: np.ndarray, tile: int, height: int, width: int) -> np.ndarray:
    """(TH, TW) -> (H, W) per latent position."""
    return np.repeat(np.repeat(tiles, tile, axis=0), tile, axis=1)[:height, :width]


def mode_contexts(modes: np.ndarray) -> np.ndarray:
    """Context of each tile: how many of its left and upper neighbours are SKIP (0..2)."""
    skip = (modes == SKIP).astype(np.int64)
    ctx = np.zeros(modes.shape, dtype=np.int64)
    ctx[:, 1:] += skip[:, :-1]
    ctx[1:, :] += skip[:-1, :]
    return ctx


def encode_modes(modes: np.ndarray, tables: ResidualTables) -> bytes:
    enc = constriction.stream.queue.RangeEncoder()
    probs = tables.mode_probabilities(mode_contexts(modes).ravel())
    enc.encode(modes.ravel().astype(np.int32), _CATEGORICAL, probs)
    return _words_to_bytes(enc.get_compressed())


def decode_modes(data: bytes, shape: tuple[int, int], tables: ResidualTables) -> np.ndarray:
    """Raster order, one tile at a time: each context needs the tiles decoded before it."""
    dec = constriction.stream.queue.RangeDecoder(_bytes_to_words(data))
    th, tw = shape
    modes = np.zeros((th, tw), dtype=np.uint8)
    try:
        for y in range(th):
            for x in range(tw):
                ctx = int(x > 0 and modes[y, x - 1] == SKIP) + int(y > 0 and modes[y - 1, x] == SKIP)
                modes[y, x] = int(dec.decode(_CATEGORICAL, tables.mode_probabilities(np.array([ctx])))[0])
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise CodecError(f"tile-mode layer does not decode: {exc}") from exc
    return modes


# --------------------------------------------------------------------------------------------
# planning: what the encoder decides (shared with the table fitter)


@dataclass
class ConditionalPlan:
    """The encoder's decisions; the decoder learns ``modes`` from layer 0 and derives the rest."""

    latents: np.ndarray  # int32 (C, H, W): what is coded (the new latents, clipped in SKIP tiles)
    modes: np.ndarray  # uint8 (TH, TW)
    top: int
    initial_q: np.ndarray  # int32 (C, H, W): partial latents known before layer 1
    initial_passes: np.ndarray  # int32 (H, W): pass counters before layer 1 (not coarse ones)
    clipped: int = 0  # latents of SKIP tiles moved (by <= tolerance) into the reference's interval


def initial_state(
    modes: np.ndarray, reference: ReferenceState, top: int, tile: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(partial latents, pass counters) a conditional stream starts from, given its mode map.

    A skipped position starts at the fewest passes after which both checkerboard phases know
    what the reference knew of it (its coarse counter, under this stream's top plane).
    """
    _, h, w = reference.shape
    skip = expand_tiles(modes == SKIP, tile, h, w)
    covering = np.array([passes_covering(c, top) for c in range(num_coarse_passes(top) + 1)], np.int32)
    coarse = convert_passes(reference.passes, reference.top, top)
    passes = np.where(skip, covering[coarse], 0).astype(np.int32)
    q = np.where(skip[None], reference.q, 0).astype(np.int32)
    return q, passes


def plan_conditional(
    q: np.ndarray, reference: ReferenceState, tile: int, tolerance: int = DEFAULT_TOLERANCE,
) -> ConditionalPlan:
    """Decide the tile modes for latents ``q`` against ``reference``."""
    q = np.asarray(q, dtype=np.int32)
    if q.shape != reference.shape:
        raise CodecError(f"latents {q.shape} and reference {reference.shape} differ in shape")
    if tolerance < 0:
        raise CodecError("skip tolerance must be >= 0")
    _, h, w = q.shape
    lo, hi = reference.intervals
    outside = np.maximum(np.maximum(lo - q, q - hi), 0).max(axis=0)
    modes = np.where(tile_max(outside, tile) <= tolerance, SKIP, CODED).astype(np.uint8)
    skip = expand_tiles(modes == SKIP, tile, h, w)
    latents = np.where(skip[None], np.clip(q, lo, hi), q).astype(np.int32)
    top = max(reference.top, top_plane(latents))
    init_q, init_passes = initial_state(modes, reference, top, tile)
    return ConditionalPlan(latents, modes, top, init_q, init_passes, int((latents != q).sum()))


# --------------------------------------------------------------------------------------------
# the conditional pass model


@dataclass
class Decisions:
    """The binary decisions of one pass and what their probabilities were looked up by.

    The encoder range codes ``bits`` with ``p1``; the table fitter counts them by the indices.
    """

    kind: str
    plane: int
    bits: np.ndarray
    p1: np.ndarray
    rows: np.ndarray | None = None  # sig: table row
    ctx: np.ndarray | None = None  # sig: neighbourhood context
    classes: np.ndarray | None = None  # sign: the reference's sign (+1, -1, 0 unknown); ref: REF_*


class ConditionalModel:
    """Probabilities of conditional passes from a reference; identical at both ends."""

    def __init__(self, tables: ResidualTables, intra: CodecTables, reference: ReferenceState,
                 top: int) -> None:
        self.tables = tables
        self.channels = reference.shape[0]
        lo, hi = reference.intervals
        # the reference's magnitude interval and sign (0: sign unknown)
        self.ref_sign = np.where(lo > 0, 1, np.where(hi < 0, -1, 0)).astype(np.int8)
        self.mlo = np.where(lo > 0, lo, np.where(hi < 0, -hi, 0)).astype(np.int64)
        self.mhi = np.where(lo > 0, hi, np.where(hi < 0, -lo, np.maximum(-lo, hi))).astype(np.int64)
        self.intra = _PassCoder(intra, top)

    def sig_rows(self, sel: np.ndarray, plane: int) -> np.ndarray:
        mlo, mhi = self.mlo[sel], self.mhi[sel]
        cls = np.where(mlo >= (2 << plane), SIG_ABOVE,
                       np.where(mlo >= (1 << plane), SIG_BAND,
                                np.where(mhi < (1 << plane), SIG_INSIG, SIG_UNKNOWN)))
        chan = np.broadcast_to(np.arange(sel.shape[0])[:, None, None], sel.shape)[sel]
        return cls * self.channels + chan

    def sig(self, known_sig: np.ndarray, sel: np.ndarray, plane: int, bits: np.ndarray | None
            ) -> Decisions:
        rows = self.sig_rows(sel, plane)
        ctx = significance_context(known_sig)[sel]
        p1 = self.tables.sig[rows, plane, ctx] / float(PROB_ONE)
        return Decisions("sig", plane, bits if bits is not None else np.zeros(0, np.int32), p1,
                         rows=rows, ctx=ctx)

    def sign(self, newly: np.ndarray, plane: int, negative: np.ndarray | None) -> Decisions:
        """P(negative) of newly significant elements: the reference's sign, if it knows it."""
        ref = self.ref_sign[newly]
        agree = self.tables.sign[plane] / float(PROB_ONE)
        p_neg = np.where(ref < 0, agree, np.where(ref > 0, 1.0 - agree, 0.5))
        return Decisions("sign", plane, negative if negative is not None else np.zeros(0, np.int32),
                         p_neg, classes=ref.astype(np.int64))

    def ref(self, mag: np.ndarray, sign: np.ndarray, sel: np.ndarray, plane: int,
            bits: np.ndarray | None) -> Decisions:
        """P(bit ``plane`` = 1): from the reference where its interval sits in one half."""
        m = (mag[sel] >> (plane + 1)) << (plane + 1)
        half = m + (1 << plane)
        same = self.ref_sign[sel] == sign[sel]
        mlo, mhi = self.mlo[sel], self.mhi[sel]
        cls = np.where(same & (mlo >= m) & (mhi < half), REF_SAYS0,
                       np.where(same & (mlo >= half) & (mhi < m + (2 << plane)), REF_SAYS1, REF_UNKNOWN))
        p1 = self.intra.ref_probabilities(mag, sel, plane)
        known = cls != REF_UNKNOWN
        p1[known] = self.tables.refbit[cls[known], plane] / float(PROB_ONE)
        return Decisions("ref", plane, bits if bits is not None else np.zeros(0, np.int32), p1,
                         classes=cls.astype(np.int64))


def _area(spec: LayerSpec, h: int, w: int) -> np.ndarray:
    return np.ones((h, w), bool) if spec.region is None else spec.region.clip(w, h).mask(w, h)


# --------------------------------------------------------------------------------------------
# encoder and decoder


def _check_reference(codec: LearnedCodec, reference: ReferenceState, width: int, height: int) -> None:
    if reference.model_id != codec.model_id:
        raise CodecError(f"reference belongs to model id {reference.model_id:#06x}, the codec is "
                         f"{codec.model_id:#06x}")
    if (reference.width, reference.height) != (width, height):
        raise CodecError(f"reference is {reference.width}x{reference.height}, the picture "
                         f"{width}x{height}")
    if reference.shape[0] != codec.channels:
        raise CodecError("reference has the wrong channel count for this model")


class ConditionalEncoder:
    """Device side of one picture coded against a reference (the layer API of :class:`ImageEncoder`)."""

    def __init__(
        self, codec: LearnedCodec, image: np.ndarray, reference: ReferenceState, *,
        tables: ResidualTables | None = None, tolerance: int = DEFAULT_TOLERANCE,
    ) -> None:
        img = as_rgb(image)
        self._setup(codec, codec.analyse(img), img.shape[1], img.shape[0], reference, tables,
                    tolerance)

    @classmethod
    def from_latents(
        cls, codec: LearnedCodec, q: np.ndarray, width: int, height: int,
        reference: ReferenceState, *, tables: ResidualTables | None = None,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> ConditionalEncoder:
        """For a device that ran the (tiled) analysis itself."""
        self = cls.__new__(cls)
        self._setup(codec, q, width, height, reference, tables, tolerance)
        return self

    def _setup(
        self, codec: LearnedCodec, q: np.ndarray, width: int, height: int,
        reference: ReferenceState, tables: ResidualTables | None, tolerance: int,
    ) -> None:
        check_geometry(width, height)
        _check_reference(codec, reference, width, height)
        self.codec = codec
        self.reference = reference
        self.tables = tables if tables is not None else ResidualTables.for_codec(codec)
        self.tables.check_model(codec)
        self.source = np.asarray(q, dtype=np.int32)
        self.plan = plan_conditional(self.source, reference, self.tables.tile, tolerance)
        self.q = self.plan.latents
        self.mag = np.abs(self.q)
        self.top = self.plan.top
        self.passes = self.plan.initial_passes.copy()
        self.model = ConditionalModel(self.tables, codec.tables, reference, self.top)
        self._modes = encode_modes(self.plan.modes, self.tables)
        self.header = StreamHeader(codec.model_id, width, height, self.top,
                                   Condition(reference.hash(), self.tables.residual_id))

    @property
    def latents(self) -> np.ndarray:
        """What the stream codes: the new latents, clipped by at most the tolerance in SKIP tiles."""
        return self.q

    @property
    def modes(self) -> np.ndarray:
        return self.plan.modes

    @property
    def total_passes(self) -> int:
        return self.header.total_passes

    def default_layers(self) -> list[LayerSpec]:
        """The mode map, then every whole-picture pass that codes at least one position."""
        start = int(self.plan.initial_passes.min())
        return [LayerSpec(0)] + [LayerSpec(j + 1) for j in range(start, num_passes(self.top))]

    def refine_specs(self, region: Region, target_passes: int) -> list[LayerSpec]:
        """Layers bringing ``region`` to ``target_passes`` (counted as in the header, mode map included)."""
        _, h, w = self.q.shape
        region = region.clip(w, h)
        target = min(target_passes - 1, num_passes(self.top))
        sub = self.passes[region.y:region.y + region.h, region.x:region.x + region.w]
        return [LayerSpec(j + 1, region) for j in range(int(sub.min()), target)]

    def decisions(self, spec: LayerSpec) -> list[Decisions]:
        """Run one bitplane pass (index as in the bitplane coder) and advance the counters."""
        _, h, w = self.q.shape
        kind, plane = pass_kind(spec.index, self.top)
        area = _area(spec, h, w)
        if np.any(area & (self.passes < spec.index)):
            raise CodecError(f"pass {spec.index} requested before earlier passes of its region")
        pos = area & (self.passes == spec.index)
        sig_plane = sig_plane_of(coarse_passes(self.passes, self.top), self.top)
        known_sig = self.mag >= (1 << sig_plane)[None].astype(np.int64)
        if kind != "ref":
            sel = (pos & phase_positions(kind, h, w))[None] & ~known_sig
            bits = ((self.mag[sel] >> plane) & 1).astype(np.int32)
            out = [self.model.sig(known_sig, sel, plane, bits)]
            newly = np.zeros_like(sel)
            newly[sel] = bits == 1
            out.append(self.model.sign(newly, plane, (self.q[newly] < 0).astype(np.int32)))
        else:
            sel = pos[None] & (self.mag >= (2 << plane))
            bits = ((self.mag[sel] >> plane) & 1).astype(np.int32)
            out = [self.model.ref(self.mag, np.sign(self.q), sel, plane, bits)]
        self.passes[pos] += 1
        return out

    def encode(self, spec: LayerSpec) -> bytes:
        if spec.index == 0:
            if spec.region is not None:
                raise CodecError("the tile-mode layer covers the whole picture; it takes no region")
            return self._modes
        enc = constriction.stream.queue.RangeEncoder()
        for d in self.decisions(LayerSpec(spec.index - 1, spec.region)):
            if d.bits.size:
                enc.encode(d.bits.astype(np.int32), _BINARY, _binary_probs(d.p1))
        return _words_to_bytes(enc.get_compressed())

    def encode_all(self, limit: int | None = None) -> list[tuple[LayerSpec, bytes]]:
        return [(s, self.encode(s)) for s in self.default_layers()[:limit]]

    def next_reference(self, acknowledged: Iterable[LayerSpec]) -> ReferenceState:
        """The server's state after it applied ``acknowledged`` of this picture's layers, in order."""
        specs = list(acknowledged)
        if not specs:
            return self.reference
        if specs[0] != LayerSpec(0) or LayerSpec(0) in specs[1:]:
            raise CodecError("the tile-mode layer must come first, and only once")
        _, h, w = self.q.shape
        passes = coarse_passes(
            replay_passes([LayerSpec(s.index - 1, s.region) for s in specs[1:]], (h, w),
                          num_passes(self.top), self.plan.initial_passes), self.top)
        lo, hi = known_interval(torch.from_numpy(self.q.astype(np.int64)),
                                torch.from_numpy(passes.astype(np.int64))[None], self.top)
        return merge_states(self.codec.model_id, self.header.width, self.header.height, self.top,
                            partial_latents(lo.numpy(), hi.numpy()), passes, self.reference)


class ConditionalDecoder:
    """Server side of a conditional picture; refuses any reference but the one it was coded against."""

    def __init__(
        self, codec: LearnedCodec, header: StreamHeader, reference: ReferenceState | None, *,
        tables: ResidualTables | None = None,
    ) -> None:
        cond = header.condition
        if cond is None:
            raise CodecError("an intra stream: decode it with codec.decoder(header)")
        if reference is None:
            raise CodecError(f"stream is coded against reference {cond.reference.hex()}, and no "
                             "reference is held")
        if header.model_id != codec.model_id:
            raise CodecError(f"stream was coded by model id {header.model_id:#06x}; this decoder is "
                             f"{codec.name} ({codec.model_id:#06x})")
        check_geometry(header.width, header.height)
        _check_reference(codec, reference, header.width, header.height)
        held = reference.hash()
        if held != cond.reference:
            raise CodecError(f"stream is coded against reference {cond.reference.hex()}, but the "
                             f"reference held is {held.hex()}")
        self.tables = tables if tables is not None else ResidualTables.for_codec(codec)
        self.tables.check_model(codec)
        if cond.residual_id != self.tables.residual_id:
            raise CodecError(f"stream uses residual tables {cond.residual_id:#06x}, this decoder has "
                             f"{self.tables.residual_id:#06x}")
        if not reference.top <= header.top_plane <= NUM_PLANES - 1:
            raise CodecError(f"top plane {header.top_plane} is impossible against this reference")
        self.codec = codec
        self.header = header
        self.reference = reference
        self.top = header.top_plane
        self.modes: np.ndarray | None = None
        self.q = np.zeros(reference.shape, dtype=np.int32)
        self.passes = np.zeros(reference.shape[1:], dtype=np.int32)
        self.model = ConditionalModel(self.tables, codec.tables, reference, self.top)
        self.layers_applied = 0
        self._pmf = torch.from_numpy(codec.tables.pmf_float())

    def apply(self, spec: LayerSpec, data: bytes) -> None:
        _, h, w = self.reference.shape
        if spec.index == 0:
            if self.modes is not None:
                raise CodecError("tile-mode layer applied twice")
            if spec.region is not None:
                raise CodecError("the tile-mode layer covers the whole picture; it takes no region")
            tile = self.tables.tile
            self.modes = decode_modes(data, tile_grid(h, w, tile), self.tables)
            self.q, self.passes = initial_state(self.modes, self.reference, self.top, tile)
        else:
            if self.modes is None:
                raise CodecError(f"layer for pass {spec.index} arrived before the tile-mode layer")
            self._apply_pass(LayerSpec(spec.index - 1, spec.region), data)
        self.layers_applied += 1

    def _apply_pass(self, spec: LayerSpec, data: bytes) -> None:
        _, h, w = self.q.shape
        kind, plane = pass_kind(spec.index, self.top)
        area = _area(spec, h, w)
        if np.any(area & (self.passes < spec.index)):
            raise CodecError(f"layer for pass {spec.index} arrived before earlier passes")
        pos = area & (self.passes == spec.index)
        mag = np.abs(self.q)
        known_sig = mag > 0
        dec = constriction.stream.queue.RangeDecoder(_bytes_to_words(data))

        def decode(p1: np.ndarray) -> np.ndarray:
            return dec.decode(_BINARY, _binary_probs(p1)) if p1.size else np.zeros(0, np.int32)

        try:
            if kind != "ref":
                sel = (pos & phase_positions(kind, h, w))[None] & ~known_sig
                bits = decode(self.model.sig(known_sig, sel, plane, None).p1)
                newly = np.zeros_like(sel)
                newly[sel] = bits.astype(bool)
                neg = decode(self.model.sign(newly, plane, None).p1)
                self.q[newly] = np.where(neg.astype(bool), -(1 << plane), 1 << plane)
            else:
                sel = pos[None] & (mag >= (2 << plane))
                bits = decode(self.model.ref(mag, np.sign(self.q), sel, plane, None).p1)
                add = np.zeros_like(self.q)
                add[sel] = bits.astype(np.int32) << plane
                self.q += np.sign(self.q) * add
        except (AssertionError, ValueError, RuntimeError) as exc:  # constriction: corrupted stream
            raise CodecError(f"layer {spec.index + 1} does not decode: {exc}") from exc
        self.passes[pos] += 1

    def caught_up(self) -> bool:
        """Whether every position is known at least as precisely as the reference knew it.

        A server that stops a picture before this keeps parts of the older picture in the next
        reference where the new one agrees with them (:func:`merge_states`). Waiting for this
        before stopping keeps the reference entirely fresh, at a price: the reference's precision
        can then only grow along a chain (``lpimg bench fixedcam --catch-up`` measures it).
        """
        if self.modes is None:
            return False
        ref = convert_passes(self.reference.passes, self.reference.top, self.top)
        return bool((self.coarse_passes >= ref).all())

    @property
    def coarse_passes(self) -> np.ndarray:
        """What each position knows, in the coarse passes of :func:`known_interval`."""
        return coarse_passes(self.passes, self.top)

    def latent_estimate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float latents for the synthesis: E[q | what is known], the reference helping where
        this picture is still known less precisely than the reference was; and the width of
        what is known (hi - lo) per latent."""
        lo_r, hi_r = self.reference.intervals
        if self.modes is None:
            lo, hi = torch.from_numpy(lo_r.astype(np.int64)), torch.from_numpy(hi_r.astype(np.int64))
        else:
            lo, hi = known_interval(torch.from_numpy(self.q.astype(np.int64)),
                                    torch.from_numpy(self.coarse_passes.astype(np.int64))[None],
                                    self.top)
            both_lo = torch.maximum(lo, torch.from_numpy(lo_r.astype(np.int64)))
            both_hi = torch.minimum(hi, torch.from_numpy(hi_r.astype(np.int64)))
            use = both_lo <= both_hi
            lo, hi = torch.where(use, both_lo, lo), torch.where(use, both_hi, hi)
        chan = torch.arange(self.q.shape[0])[:, None, None].expand_as(lo)
        return interval_expectation(self._pmf, lo, hi, chan).to(torch.float32), hi - lo

    def reconstruct(self) -> np.ndarray:
        y, spread = self.latent_estimate()
        return self.codec.render(y, self.header.width, self.header.height, spread)

    def next_reference(self) -> ReferenceState:
        """The state this picture leaves, the reference for the next one (the device's mirror
        computes the same, :meth:`ConditionalEncoder.next_reference`): this picture's state
        where it got at least as far as the reference, the reference's elsewhere
        (:func:`merge_states`). Before the mode map arrived that is the old reference."""
        if self.modes is None:
            return self.reference
        return merge_states(self.codec.model_id, self.header.width, self.header.height, self.top,
                            self.q, self.coarse_passes, self.reference)


def conditional_or_intra(
    codec: LearnedCodec, image: np.ndarray, reference: ReferenceState | None,
    tables: ResidualTables | None = None,
) -> ImageEncoder | ConditionalEncoder:
    """The device's choice at a session start: conditional if it holds a reference, else intra."""
    if reference is None:
        return codec.encoder(image)
    return ConditionalEncoder(codec, image, reference, tables=tables)
