"""The codec as the rest of lpimg sees it: image -> header + layers -> image.

A device holds an :class:`ImageEncoder` (latents plus what has been sent of them) and produces
layers on demand: all passes over the whole picture by default, more passes over a rectangle when
the server asks for a region. The server holds an :class:`ImageDecoder`, applies layers in order
and reconstructs from whatever it has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lpimg.codec.bitplane import BitplaneDecoder, BitplaneEncoder, LayerSpec, Region, num_passes
from lpimg.codec.image import as_rgb, check_geometry
from lpimg.codec.model import Codec, ModelConfig, fill_unknown, interval_expectation, known_interval
from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.codec.tables import CodecTables
from lpimg.codec.tiling import DOWNSCALE, encode_tiled, pad_image
from lpimg.errors import CodecError

WEIGHTS_DIR = Path(__file__).parent / "weights"


# oneDNN picks its reduction order by thread count, so float results differ in the last bit and
# a pixel can round the other way. A fixed count keeps reconstructions identical everywhere.
SYNTHESIS_THREADS = 1


@contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class Condition:
    """What makes a stream conditional: it is coded against a reference state both ends hold.

    ``reference`` is the 8-byte hash of the :class:`~lpimg.codec.reference.ReferenceState` the
    stream was coded against and ``residual_id`` the 16-bit id of the conditional probability
    tables (:class:`~lpimg.codec.reference.ResidualTables`). See docs/REFERENCE-CODING.md.
    """

    reference: bytes
    residual_id: int


@dataclass(frozen=True)
class StreamHeader:
    """What a decoder must know before the first layer (carried by the session start / .lpi).

    ``condition`` is None for an intra stream, whose 5T+4 passes split every significance pass
    in four quarters, two per checkerboard phase (spec/PROTOCOL.md 10). A conditional stream's
    first layer (pass 0) is its tile-mode map and pass j+1 is the same pass j: 5T+5 passes.
    """

    model_id: int
    width: int
    height: int
    top_plane: int
    condition: Condition | None = None

    @property
    def latent_size(self) -> tuple[int, int]:
        return -(-self.width // DOWNSCALE), -(-self.height // DOWNSCALE)

    @property
    def is_conditional(self) -> bool:
        return self.condition is not None

    @property
    def total_passes(self) -> int:
        intra = num_passes(self.top_plane)
        return intra + 1 if self.condition is not None else intra  # + the tile-mode map


# the intra pass layout (spec/PROTOCOL.md 10); part of the model id
INTRA_LAYOUT = b"intra-passes:sigq,sigo,sigh,sigv,ref"


def model_id_of(state: dict, tables: CodecTables) -> int:
    """16-bit id that changes whenever the analysis weights, the tables or the pass layout change.

    The layout tag makes streams of an older pass layout (one intra layer per coarse
    significance pass, or whole checkerboard phases below the top plane) fail the model id
    check instead of decoding into garbage.
    """
    h = hashlib.sha256()
    h.update(INTRA_LAYOUT)
    for k in sorted(state):
        if k.startswith("analysis."):
            h.update(k.encode())
            h.update(state[k].detach().cpu().to(torch.float32).numpy().tobytes())
    h.update(tables.pmf.astype("<i8").tobytes())
    h.update(tables.sig.astype("<i8").tobytes())
    h.update(tables.sig2.astype("<i8").tobytes())
    h.update(tables.sign.astype("<i8").tobytes())
    h.update(tables.ref.astype("<i8").tobytes())
    return int.from_bytes(h.digest()[:2], "big")


class LearnedCodec:
    """A trained model plus its integer tables, identified by ``model_id``."""

    def __init__(self, model: Codec, tables: CodecTables, name: str, source: Path | None = None) -> None:
        self.model = model.eval()
        self.tables = tables
        self.name = name
        self.source = source  # the weights file, where companion files (residual tables) live
        self.model_id = model_id_of(model.state_dict(), tables)
        self._pmf = torch.from_numpy(tables.pmf_float())

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_MODEL) -> LearnedCodec:
        """Load shipped weights by name (``DEFAULT_MODEL``) or a weights file by path."""
        path = Path(name_or_path)
        if not path.suffix:
            path = WEIGHTS_DIR / f"{name_or_path}.pt"
        if not path.exists():
            shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))
            raise CodecError(f"no model {name_or_path!r} (shipped models: {shipped})")
        blob = torch.load(path, map_location="cpu", weights_only=False)
        if "tables" not in blob:
            raise CodecError(f"{path} has no probability tables (run `lpimg fit-tables`)")
        model = Codec(ModelConfig.from_dict(blob["config"]))
        state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()}
        model.load_state_dict(state)
        return cls(model, CodecTables.from_dict(blob["tables"]), path.stem, path)

    @property
    def channels(self) -> int:
        return self.model.cfg.latent_channels

    def analyse(self, image: np.ndarray, *, tiled: bool = False) -> np.ndarray:
        """uint8 HxWx3 -> latent integers (C, ceil(H/16), ceil(W/16)) with integer arithmetic.

        The device must work in KPU-sized tiles (``tiled=True``); because each tile's margin
        covers the receptive field, the result is identical to one whole-image pass, which is
        what a server-side or desktop encoder runs (faster: no overlap recomputed).
        """
        img = as_rgb(image)

        def encode_tile(pixels: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
            return self.model.analysis.integer_forward(x)[0].numpy()

        padded = pad_image(img)
        if not tiled:
            return encode_tile(padded)
        return encode_tiled(padded, self.channels, encode_tile)

    def encoder(self, image: np.ndarray) -> ImageEncoder:
        img = as_rgb(image)
        return ImageEncoder(self, self.analyse(img), img.shape[1], img.shape[0])

    def decoder(self, header: StreamHeader) -> ImageDecoder:
        if header.condition is not None:
            raise CodecError(
                "this stream is coded against a reference frame; decode it with "
                "lpimg.codec.reference.ConditionalDecoder and the reference it names")
        if header.model_id != self.model_id:
            raise CodecError(
                f"stream was coded by model id {header.model_id:#06x}; this decoder is "
                f"{self.name} ({self.model_id:#06x})")
        return ImageDecoder(self, header)

    @torch.no_grad()
    def synthesize(self, q_partial: np.ndarray, passes: np.ndarray, top: int,
                   width: int, height: int, fill: bool = True) -> np.ndarray:
        """Partially known latents -> uint8 picture of exactly width x height. ``fill=False``
        leaves the positions that know nothing at the prior's expectation instead of filling
        them from their neighbours: only to measure what the fill is worth."""
        q = torch.from_numpy(q_partial.astype(np.int64))
        n = torch.from_numpy(passes.astype(np.int64))[None]
        lo, hi = known_interval(q, n, top)
        chan = torch.arange(q.shape[0])[:, None, None].expand_as(q)
        y = interval_expectation(self._pmf, lo, hi, chan).to(torch.float32)
        spread = (hi - lo).to(torch.float32)
        if fill:
            y, spread = fill_unknown(y, spread, n == 0)
        return self.render(y, width, height, spread)

    @torch.no_grad()
    def render(self, y: torch.Tensor, width: int, height: int,
               spread: torch.Tensor | None = None) -> np.ndarray:
        """Latent estimates (C, H, W) float, and how wide each latent's known interval is
        (``hi - lo``; None: exact) -> uint8 picture (shared by intra and conditional)."""
        s = None if spread is None else spread.to(torch.float32)[None]
        with fixed_threads(SYNTHESIS_THREADS):
            x = self.model.synthesis(y.to(torch.float32)[None], s)[0, :, :height, :width]
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


class ImageEncoder:
    """Device side state of one picture."""

    def __init__(self, codec: LearnedCodec, q: np.ndarray, width: int, height: int) -> None:
        self.codec = codec
        self.bitplanes = BitplaneEncoder(q, codec.tables)
        self.header = StreamHeader(codec.model_id, width, height, self.bitplanes.top)

    @property
    def latents(self) -> np.ndarray:
        return self.bitplanes.q

    def default_layers(self) -> list[LayerSpec]:
        return self.bitplanes.default_layers()

    def refine_specs(self, region: Region, target_passes: int) -> list[LayerSpec]:
        return self.bitplanes.refine_specs(region, target_passes)

    def encode(self, spec: LayerSpec) -> bytes:
        return self.bitplanes.encode(spec)

    def encode_all(self, limit: int | None = None) -> list[tuple[LayerSpec, bytes]]:
        specs = self.default_layers()[:limit]
        return [(s, self.encode(s)) for s in specs]


class ImageDecoder:
    """Server side state of one picture: apply layers in order, reconstruct at any time."""

    def __init__(self, codec: LearnedCodec, header: StreamHeader) -> None:
        check_geometry(header.width, header.height)
        self.codec = codec
        self.header = header
        lw, lh = header.latent_size
        self.bitplanes = BitplaneDecoder((codec.channels, lh, lw), header.top_plane, codec.tables)
        self.layers_applied = 0

    def apply(self, spec: LayerSpec, data: bytes) -> None:
        self.bitplanes.apply(spec, data)
        self.layers_applied += 1

    def reconstruct(self) -> np.ndarray:
        b = self.bitplanes
        return self.codec.synthesize(b.q, b.coarse_passes, b.top, self.header.width, self.header.height)
