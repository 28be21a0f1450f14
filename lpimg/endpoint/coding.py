"""Where the codec meets the protocol: layers, regions and the stream header on the wire.

The protocol moves opaque layers; this module is the one place that says what they are for
lpimg's codec (spec/PROTOCOL.md, section 10), so the device and the server cannot disagree:

- the layers of group 0 are codec passes 0, 1, ..., n-1 over the whole image;
- a refine group's layers are passes ``first_pass``, ``first_pass + 1``, ... over its region;
- the codec's top plane, the one piece of the stream header the session descriptor does not
  carry, rides in the manifest under application key :data:`TOP_PLANE_KEY`;
- a refine request asks for passes *up to and including* ``pass_index``, which is
  ``refine_specs(region, pass_index + 1)`` in the codec's terms (it counts passes).

The codec's :class:`~lpimg.codec.bitplane.Region` has fields ``x, y, w, h``; the wire's
:class:`~lpimg.wire.Region` has ``x, y, width, height`` and ``None`` for the whole image. Both
are in latent units (16x16 pixels); convert with :func:`to_wire_region` / :func:`to_codec_region`.

Importing this module does not import torch; the functions that need the codec's pipeline
import it when called.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lpimg.codec.bitplane import LayerSpec
from lpimg.codec.bitplane import Region as CodecRegion
from lpimg.errors import CodecError
from lpimg.wire import Manifest
from lpimg.wire import Region as WireRegion

if TYPE_CHECKING:
    from lpimg.codec.pipeline import ImageEncoder, LearnedCodec, StreamHeader

TOP_PLANE_KEY = 24
"""Manifest key (application range, >= 24) carrying the codec's top plane (the same key
``lpimg demo`` uses)."""


def to_wire_region(region: CodecRegion | None) -> WireRegion | None:
    """Codec region (x, y, w, h) -> wire region (x, y, width, height); None stays None."""
    if region is None:
        return None
    return WireRegion(region.x, region.y, region.w, region.h)


def to_codec_region(region: WireRegion | None) -> CodecRegion | None:
    """Wire region -> codec region; None (the whole image) stays None."""
    if region is None:
        return None
    return CodecRegion(region.x, region.y, region.width, region.height)


def layer_spec(pass_index: int, region: WireRegion | None) -> LayerSpec:
    """The codec's name for a layer the protocol delivered (pass index and region)."""
    return LayerSpec(pass_index, to_codec_region(region))


def with_top_plane(manifest: Manifest | Mapping[str, Any] | None, top_plane: int) -> Manifest:
    """``manifest`` plus the codec's top plane under :data:`TOP_PLANE_KEY`."""
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_dict(dict(manifest or {}))
    extra = dict(manifest.extra)
    extra[TOP_PLANE_KEY] = int(top_plane)
    return Manifest(
        capture_time=manifest.capture_time,
        reference_id=manifest.reference_id,
        reference_hash=manifest.reference_hash,
        device=manifest.device,
        extra=extra,
    )


def top_plane_of(manifest: Manifest) -> int:
    """The codec top plane a session's manifest announces; CodecError if it does not."""
    value = manifest.extra.get(TOP_PLANE_KEY)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 6:
        raise CodecError(
            f"the session's manifest has no codec top plane (key {TOP_PLANE_KEY}: {value!r})"
        )
    return value


def stream_header(model_id: int, geometry: tuple[int, int], manifest: Manifest) -> StreamHeader:
    """The codec's stream header of a session, from its descriptor (CodecError if unusable)."""
    from lpimg.codec.pipeline import StreamHeader

    if manifest.reference_id is not None or manifest.reference_hash is not None:
        raise CodecError("the session is coded against a reference frame, which this server does not hold")
    width, height = geometry
    return StreamHeader(model_id, width, height, top_plane_of(manifest))


@dataclass(frozen=True)
class EncodedImage:
    """A picture as a device sends it: the codec's stream header and the group 0 layers.

    ``latents`` (optional) lets the device answer refine requests; without them it declines.
    """

    header: StreamHeader
    layers: tuple[bytes, ...]
    latents: np.ndarray | None = None
    digest: str = ""
    """Identifies picture, model and layer choice, so a stored session is only resumed for the
    same picture."""

    def __post_init__(self) -> None:
        if not self.layers:
            raise CodecError("an encoded image needs at least one layer")
        if len(self.layers) > self.header.total_passes:
            raise CodecError(
                f"{len(self.layers)} layers, but the stream has only {self.header.total_passes} passes"
            )

    @property
    def total_bytes(self) -> int:
        return sum(len(layer) for layer in self.layers)


def encode_image(
    codec: LearnedCodec, image: np.ndarray, layers: int | None = None
) -> tuple[EncodedImage, ImageEncoder]:
    """Encode ``image`` into its first ``layers`` default layers (all of them by default).

    Returns the encoded image and the encoder, whose pass counters now reflect those layers
    (it answers refine requests).
    """
    from lpimg.codec.image import as_rgb

    if layers is not None and layers < 1:
        raise CodecError(f"--layers must be at least 1, got {layers}")
    pixels = as_rgb(image)
    encoder = codec.encoder(pixels)
    specs = encoder.default_layers()[:layers]
    data = tuple(encoder.encode(spec) for spec in specs)
    digest = hashlib.sha256()
    digest.update(f"{codec.model_id}:{pixels.shape}:{len(specs)}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    encoded = EncodedImage(encoder.header, data, encoder.latents.astype(np.int8), digest.hexdigest())
    return encoded, encoder


def encoder_from_latents(
    codec: LearnedCodec, latents: np.ndarray, width: int, height: int, specs: Sequence[LayerSpec]
) -> ImageEncoder:
    """Rebuild a device's encoder after a reboot: its latents, with the pass counters advanced
    by every layer already produced (so refinements continue where they left off)."""
    from lpimg.codec.bitplane import replay_passes
    from lpimg.codec.pipeline import ImageEncoder

    encoder = ImageEncoder(codec, np.asarray(latents, dtype=np.int32), width, height)
    bitplanes = encoder.bitplanes
    _, h, w = bitplanes.q.shape
    bitplanes.passes = replay_passes(list(specs), (h, w), bitplanes.top)
    return encoder


def refine_layers(
    encoder: ImageEncoder, region: WireRegion | None, pass_index: int
) -> tuple[list[LayerSpec], list[bytes], WireRegion | None]:
    """Answer a refine request: the layers bringing ``region`` (None: everything) to passes
    0..``pass_index``, their data, and the region to announce them for.

    A region outside the latent grid, or one already refined that far, gives no layers (the
    device then declines the request with an empty group).
    """
    _, h, w = encoder.bitplanes.q.shape
    whole = CodecRegion(0, 0, w, h)
    wanted = whole if region is None else to_codec_region(region)
    assert wanted is not None
    try:
        clipped = wanted.clip(w, h)
    except CodecError:
        return [], [], region
    specs = encoder.refine_specs(clipped, pass_index + 1)
    data = [encoder.encode(spec) for spec in specs]
    announced = None if region is None else to_wire_region(clipped)
    if region is None:
        specs = [LayerSpec(spec.index, None) for spec in specs]
    return specs, data, announced
