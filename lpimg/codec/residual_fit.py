"""Fitting the tables of reference-frame coding (``lpimg fit-residual``).

Tables are fitted on the latents of the model they ship with, so they must be refitted whenever the
weights change (the file records the model id and any other model refuses it). Training pairs:

- frame pairs ``(t, t + k)`` of a fixed camera, ``k`` = 25..250, drawn from the *first half* of
  ``../shared/data/fixedcam`` only (frames 0..449): the benchmark measures on the second half;
- synthetic pairs made from still training images: a global or graded lighting change, objects
  pasted from another image, 1-3 px of camera shake, sensor noise and JPEG recompression.

Each pair is coded the way the encoder codes it: the first picture becomes a reference cut after a
random number of bitplane passes (a server stops a picture at whatever quality it needed), then the
real :class:`~lpimg.codec.reference.ConditionalEncoder` codes the second against it and every
binary decision is counted by the indices its probability is looked up with. Kodak is never used.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from lpimg.codec.bitplane import LayerSpec, num_coarse_passes, top_plane
from lpimg.codec.pipeline import LearnedCodec
from lpimg.codec.reference import (
    DEFAULT_TILE,
    DEFAULT_TOLERANCE,
    MODE_CONTEXTS,
    NUM_MODES,
    PROB_ONE,
    REF_SAYS0,
    REF_SAYS1,
    SIG_CLASSES,
    SKIP,
    ConditionalEncoder,
    ReferenceState,
    ResidualTables,
    mode_contexts,
)
from lpimg.codec.tables import NUM_CONTEXTS, NUM_PLANES
from lpimg.errors import CodecError

FIT_FRAMES = range(0, 450)  # first half of the fixed-camera sequence; the benchmark uses 450..899
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def frame_paths(folder: str | Path) -> list[Path]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CodecError(f"no frames in {folder}")
    return paths


def _refuse_kodak(path: str | Path) -> None:
    if "kodak" in str(path).lower():
        raise CodecError("refusing to fit on Kodak: it is the evaluation set")


def _load(path: Path | io.BytesIO) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return _load(io.BytesIO(buf.getvalue()))


def synthetic_pair(
    images: list[Path], rng: np.random.Generator, size: tuple[int, int] = (320, 240),
) -> tuple[np.ndarray, np.ndarray]:
    """Two views of one still image as a fixed camera would take them some time apart."""
    src = _load(images[rng.integers(len(images))])
    h, w = src.shape[:2]
    cw, ch = min(size[0], w - 6), min(size[1], h - 6)
    x, y = int(rng.integers(3, w - cw - 2)), int(rng.integers(3, h - ch - 2))
    a = src[y:y + ch, x:x + cw].astype(np.float64)
    dx, dy = (rng.integers(-3, 4, size=2) if rng.random() < 0.35 else (0, 0))
    b = src[y + dy:y + dy + ch, x + dx:x + dx + cw].astype(np.float64)
    if rng.random() < 0.5:  # lighting: gain and offset, sometimes graded like a cloud shadow
        gain = rng.uniform(0.85, 1.15) * rng.uniform(0.97, 1.03, size=3)
        if rng.random() < 0.4:
            ramp = np.linspace(0, 1, cw if rng.random() < 0.5 else ch)
            ramp = ramp[None, :, None] if ramp.size == cw else ramp[:, None, None]
            gain = 1 + (gain - 1) * ramp
        b = b * gain + rng.uniform(-12, 12)
    if rng.random() < 0.5:  # objects entering the scene
        for _ in range(int(rng.integers(1, 4))):
            other = _load(images[rng.integers(len(images))])
            ph = int(rng.integers(16, min(128, ch, other.shape[0]) + 1))
            pw = int(rng.integers(16, min(128, cw, other.shape[1]) + 1))
            oy, ox = rng.integers(0, other.shape[0] - ph + 1), rng.integers(0, other.shape[1] - pw + 1)
            ty, tx = rng.integers(0, ch - ph + 1), rng.integers(0, cw - pw + 1)
            b[ty:ty + ph, tx:tx + pw] = other[oy:oy + ph, ox:ox + pw]
    sigma = rng.uniform(0, 2.5)
    a = a + rng.normal(0, sigma, a.shape)
    b = b + rng.normal(0, sigma, b.shape)
    a8 = np.clip(np.round(a), 0, 255).astype(np.uint8)
    b8 = np.clip(np.round(b), 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        q = int(rng.integers(70, 96))
        a8, b8 = _jpeg(a8, q), _jpeg(b8, q)
    return a8, b8


class ResidualCounter:
    """Counts the decisions conditional streams make, by the indices their probabilities use.

    Each pair is coded by the real encoder (:meth:`ConditionalEncoder.decisions`, whole-picture
    passes in order, as :meth:`ConditionalEncoder.default_layers` sends them), so the fitted
    statistics are those of the coder, skipped tiles and contexts included.
    """

    def __init__(self, codec: LearnedCodec, tile: int, tolerance: int) -> None:
        self.codec = codec
        self.tile = tile
        self.tolerance = tolerance
        self.provisional = ResidualTables.uninformed(codec, tile)
        rows = SIG_CLASSES * codec.channels
        self.sig_ones = np.zeros((rows, NUM_PLANES, NUM_CONTEXTS), dtype=np.int64)
        self.sig_total = np.zeros_like(self.sig_ones)
        self.sign_agree = np.zeros(NUM_PLANES, dtype=np.int64)
        self.sign_total = np.zeros_like(self.sign_agree)
        self.ref_ones = np.zeros((2, NUM_PLANES), dtype=np.int64)
        self.ref_total = np.zeros_like(self.ref_ones)
        self.modes = np.zeros((MODE_CONTEXTS, NUM_MODES), dtype=np.int64)
        self.skipped = 0
        self.tiles = 0
        self.pairs = 0

    def add(self, q_ref: np.ndarray, q_new: np.ndarray, ref_passes: int, width: int,
            height: int) -> None:
        top = top_plane(q_ref)
        passes = np.full(q_ref.shape[1:], min(ref_passes, num_coarse_passes(top)), dtype=np.int64)
        reference = ReferenceState.from_latents(self.codec.model_id, q_ref, width, height, top, passes)
        enc = ConditionalEncoder.from_latents(self.codec, q_new, width, height, reference,
                                              tables=self.provisional, tolerance=self.tolerance)
        ctx = mode_contexts(enc.modes)
        self.modes += np.bincount((ctx * NUM_MODES + enc.modes).ravel(),
                                  minlength=MODE_CONTEXTS * NUM_MODES).reshape(MODE_CONTEXTS, NUM_MODES)
        self.skipped += int((enc.modes == SKIP).sum())
        self.tiles += enc.modes.size
        shape = self.sig_ones.shape
        for spec in enc.default_layers()[1:]:
            for d in enc.decisions(LayerSpec(spec.index - 1)):
                if not d.bits.size:
                    continue
                if d.kind == "sig":
                    idx = np.ravel_multi_index((d.rows, np.full_like(d.rows, d.plane), d.ctx), shape)
                    self.sig_total += np.bincount(idx, minlength=self.sig_total.size).reshape(shape)
                    self.sig_ones += np.bincount(idx, weights=d.bits, minlength=self.sig_total.size
                                                 ).astype(np.int64).reshape(shape)
                elif d.kind == "sign":
                    known = d.classes != 0
                    self.sign_total[d.plane] += int(known.sum())
                    self.sign_agree[d.plane] += int((d.bits[known] == (d.classes[known] < 0)).sum())
                else:
                    for cls in (REF_SAYS0, REF_SAYS1):
                        m = d.classes == cls
                        self.ref_total[cls, d.plane] += int(m.sum())
                        self.ref_ones[cls, d.plane] += int(d.bits[m].sum())
        self.pairs += 1

    def tables(self, meta: dict, prior_weight: float = 16.0) -> ResidualTables:
        one = PROB_ONE
        c = self.codec.channels
        intra = self.codec.tables.sig.astype(np.float64) / one  # (C, 7, 16)
        ones = self.sig_ones.reshape(SIG_CLASSES, c, NUM_PLANES, NUM_CONTEXTS)
        total = self.sig_total.reshape(ones.shape)
        # channels of one class share a pooled estimate where a channel has few samples, and the
        # pool falls back on the intra table where the class itself is rare
        pool = (ones.sum(1) + prior_weight * intra.mean(0)) / (total.sum(1) + prior_weight)
        p = (ones + prior_weight * pool[:, None]) / (total + prior_weight)
        sig = np.clip(np.round(p * one), 1, one - 1).astype(np.int64).reshape(self.sig_ones.shape)
        sign = np.clip(np.round((self.sign_agree + 1) / (self.sign_total + 2) * one), 1, one - 1)
        refbit = np.clip(np.round((self.ref_ones + 1) / (self.ref_total + 2) * one), 1, one - 1)
        modes = self.modes + 1
        while modes.sum(axis=1).max() > 1 << 20:
            modes = np.maximum(modes // 2, 1)
        meta = dict(meta, pairs=self.pairs, skipped_tiles=self.skipped, tiles=self.tiles)
        return ResidualTables(self.codec.model_id, self.tile, sig, sign.astype(np.int64),
                              refbit.astype(np.int64), modes, meta)


def fit_residual_tables(
    codec: LearnedCodec, frames: str | Path, train: Iterable[str | Path], *,
    fixed_pairs: int = 300, synthetic_pairs: int = 300, frame_range: range = FIT_FRAMES,
    spacing: tuple[int, int] = (25, 250), tile: int = DEFAULT_TILE,
    tolerance: int = DEFAULT_TOLERANCE, seed: int = 0,
    progress: Callable[[Iterable, str], Iterable] | None = None,
) -> ResidualTables:
    """Fit residual tables for ``codec`` (deterministic for a given seed and data)."""
    _refuse_kodak(frames)
    train = [Path(t) for t in train]
    for t in train:
        _refuse_kodak(t)
    rng = np.random.default_rng(seed)
    counter = ResidualCounter(codec, tile, tolerance)
    track = progress or (lambda items, desc: items)

    paths = frame_paths(frames)
    usable = [i for i in frame_range if i < len(paths)]
    kmin, kmax = spacing
    if fixed_pairs and len(usable) <= kmin:
        raise CodecError(f"frame range {frame_range} is too short for spacing {spacing}")
    cache: dict[int, np.ndarray] = {}

    def latents(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = codec.analyse(_load(paths[i]))
        return cache[i]

    pairs = []
    for _ in range(fixed_pairs):
        k = int(rng.integers(kmin, min(kmax, len(usable) - 1) + 1))
        a = int(rng.integers(0, len(usable) - k))
        pairs.append((usable[a], usable[a + k], int(rng.integers(1, 14))))
    height, width = _load(paths[0]).shape[:2]
    for a, b, cut in track(pairs, "fixed-camera pairs"):
        counter.add(latents(a), latents(b), cut, width, height)
    cache.clear()

    stills = [p for t in train for p in sorted(t.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES
              and "kodak" not in str(p).lower()]
    if synthetic_pairs and not stills:
        raise CodecError(f"no still images under {[str(t) for t in train]}")
    for _ in track(range(synthetic_pairs), "synthetic pairs"):
        a, b = synthetic_pair(stills, rng)
        counter.add(codec.analyse(a), codec.analyse(b), int(rng.integers(1, 14)), a.shape[1],
                    a.shape[0])

    meta = {"model": codec.name, "model_id": f"{codec.model_id:#06x}", "frames": str(frames),
            "frame_range": [frame_range.start, frame_range.stop], "spacing": list(spacing),
            "fixed_pairs": fixed_pairs, "train": [str(t) for t in train],
            "synthetic_pairs": synthetic_pairs, "tile": tile, "tolerance": tolerance, "seed": seed}
    return counter.tables(meta)
