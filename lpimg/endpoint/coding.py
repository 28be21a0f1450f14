"""Where the codec meets the protocol: layers, regions and the stream header on the wire.

The protocol moves opaque layers; this module is the one place that says what they are for
lpimg's codec (spec/PROTOCOL.md, section 10), so the device and the server cannot disagree:

- the layers of group 0 are codec passes 0, 1, ..., n-1 over the whole image;
- a refine group's layers are passes ``first_pass``, ``first_pass + 1``, ... over its region;
- the codec's top plane, the one piece of the stream header the session descriptor does not
  carry, rides in the manifest under application key :data:`TOP_PLANE_KEY`;
- a refine request asks for passes *up to and including* ``pass_index``, which is
  ``refine_specs(region, pass_index + 1)`` in the codec's terms (it counts passes);
- a picture coded against a reference (a fixed camera, docs/REFERENCE-CODING.md) names it in
  the manifest: protocol keys 1 (reference frame id: the session id whose acknowledged layers
  made the reference state) and 2 (the state's 8-byte hash), and application key
  :data:`RESIDUAL_ID_KEY` (the 16-bit id of the conditional tables). Its layer 0 is the
  tile-mode map and layer j + 1 bitplane pass j, so group 0 is still passes 0..n-1.

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
    from lpimg.codec.pipeline import Condition, ImageEncoder, LearnedCodec, StreamHeader
    from lpimg.codec.reference import ConditionalEncoder, ReferenceState

    Encoder = ImageEncoder | ConditionalEncoder

TOP_PLANE_KEY = 24
"""Manifest key (application range, >= 24) carrying the codec's top plane (the same key
``lpimg demo`` uses)."""

RESIDUAL_ID_KEY = 25
"""Manifest key (application range) carrying the 16-bit id of the conditional probability tables
a reference-coded picture uses; the server refuses tables it does not have (REJECTED)."""

REFERENCE_HASH_BYTES = 8
"""Bytes of the reference-state hash a reference-coded picture names (manifest key 2)."""


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


def with_reference(manifest: Manifest, reference_id: int, condition: Condition) -> Manifest:
    """``manifest`` naming the reference a conditional stream was coded against: its frame id
    (key 1), its state hash (key 2) and the conditional tables' id (:data:`RESIDUAL_ID_KEY`)."""
    extra = dict(manifest.extra)
    extra[RESIDUAL_ID_KEY] = int(condition.residual_id)
    return Manifest(
        capture_time=manifest.capture_time,
        reference_id=int(reference_id),
        reference_hash=bytes(condition.reference),
        device=manifest.device,
        extra=extra,
    )


def condition_of(manifest: Manifest) -> Condition | None:
    """The reference a session's manifest names (None: an intra picture); CodecError if it
    names one incompletely (an id without a hash, a hash of the wrong size, no table id)."""
    from lpimg.codec.pipeline import Condition

    if manifest.reference_id is None and manifest.reference_hash is None:
        return None
    if manifest.reference_id is None or manifest.reference_hash is None:
        raise CodecError("the manifest names a reference by only its frame id or only its hash")
    if len(manifest.reference_hash) != REFERENCE_HASH_BYTES:
        raise CodecError(f"a reference hash has {REFERENCE_HASH_BYTES} bytes, this one "
                         f"{len(manifest.reference_hash)}")
    residual = manifest.extra.get(RESIDUAL_ID_KEY)
    if isinstance(residual, bool) or not isinstance(residual, int) or not 0 <= residual <= 0xFFFF:
        raise CodecError(f"a reference-coded session needs its table id under manifest key "
                         f"{RESIDUAL_ID_KEY} (got {residual!r})")
    return Condition(bytes(manifest.reference_hash), residual)


def stream_header(model_id: int, geometry: tuple[int, int], manifest: Manifest) -> StreamHeader:
    """The codec's stream header of a session, from its descriptor (CodecError if unusable).

    A reference-coded session gets a header with its :class:`~lpimg.codec.pipeline.Condition`;
    whether the reference it names is held is the server's question, not this function's.
    """
    from lpimg.codec.pipeline import StreamHeader

    width, height = geometry
    return StreamHeader(model_id, width, height, top_plane_of(manifest), condition_of(manifest))


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
    codec: LearnedCodec, image: np.ndarray, layers: int | None = None,
    reference: ReferenceState | None = None,
) -> tuple[EncodedImage, Encoder]:
    """Encode ``image`` into its first ``layers`` default layers (all of them by default).

    With a ``reference`` the picture is coded against it (a
    :class:`~lpimg.codec.reference.ConditionalEncoder`): ``layers`` still counts bitplane
    passes, so the stream carries the tile-mode map plus that many passes (``layers + 1``
    protocol layers) and decodes to the same latent precision as the intra picture would. Group
    0 is always passes 0..n-1, as the protocol's group 0 is (a pass that codes no position is an
    empty layer). Returns the encoded image and the encoder, whose pass counters now reflect
    those layers (it answers refine requests).
    """
    from lpimg.codec.bitplane import LayerSpec
    from lpimg.codec.image import as_rgb

    if layers is not None and layers < 1:
        raise CodecError(f"--layers must be at least 1, got {layers}")
    pixels = as_rgb(image)
    digest = hashlib.sha256()
    encoder: Encoder
    if reference is None:
        encoder = codec.encoder(pixels)
        specs = encoder.default_layers()[:layers]
        latents = encoder.latents
    else:
        from lpimg.codec.reference import ConditionalEncoder

        encoder = ConditionalEncoder(codec, pixels, reference)
        total = encoder.header.total_passes
        count = total if layers is None else min(layers + 1, total)
        specs = [LayerSpec(i) for i in range(count)]
        latents = encoder.source  # unclipped: ConditionalEncoder.from_latents plans the same
        digest.update(b"reference:" + reference.hash())
    data = tuple(encoder.encode(spec) for spec in specs)
    digest.update(f"{codec.model_id}:{pixels.shape}:{len(specs)}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    encoded = EncodedImage(encoder.header, data, latents.astype(np.int8), digest.hexdigest())
    return encoded, encoder


def encoder_from_latents(
    codec: LearnedCodec, latents: np.ndarray, width: int, height: int, specs: Sequence[LayerSpec],
    reference: ReferenceState | None = None,
) -> Encoder:
    """Rebuild a device's encoder after a reboot: its latents, with the pass counters advanced
    by every layer already produced (so refinements continue where they left off). A picture
    coded against ``reference`` needs that same reference back."""
    from lpimg.codec.bitplane import num_passes, replay_passes
    from lpimg.codec.pipeline import ImageEncoder

    if reference is not None:
        from lpimg.codec.reference import ConditionalEncoder

        conditional = ConditionalEncoder.from_latents(codec, np.asarray(latents, dtype=np.int32),
                                                      width, height, reference)
        _, h, w = conditional.q.shape
        bitplane_specs = [LayerSpec(spec.index - 1, spec.region) for spec in specs if spec.index > 0]
        conditional.passes = replay_passes(bitplane_specs, (h, w), num_passes(conditional.top),
                                           conditional.plan.initial_passes)
        return conditional
    encoder = ImageEncoder(codec, np.asarray(latents, dtype=np.int32), width, height)
    bitplanes = encoder.bitplanes
    _, h, w = bitplanes.q.shape
    bitplanes.passes = replay_passes(list(specs), (h, w), bitplanes.total_passes)
    return encoder


def refine_layers(
    encoder: Encoder, region: WireRegion | None, pass_index: int
) -> tuple[list[LayerSpec], list[bytes], WireRegion | None]:
    """Answer a refine request: the layers bringing ``region`` (None: everything) to passes
    0..``pass_index``, their data, and the region to announce them for.

    A region outside the latent grid, or one already refined that far, gives no layers (the
    device then declines the request with an empty group).
    """
    _, h, w = encoder.latents.shape
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
