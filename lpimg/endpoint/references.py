"""Reference states at both ends of a fixed camera's link: which one a picture names, and how the
server finds the one a device names.

A reference is the latent state the server holds of an earlier picture
(:class:`~lpimg.codec.reference.ReferenceState`), named on the wire by a *frame id* (the session id
whose acknowledged layers made it) and its 8-byte hash (spec/PROTOCOL.md, section 10).

The two ends cannot always agree on how many layers of a picture the server holds: a STOP, or a
LAYER_COMPLETE lost on the downlink, leaves the device knowing fewer layers than the server
verified. So the device names the state of what it *knows* was acknowledged, and the server keeps,
per device, what it needs to rebuild the state of *any* prefix of the layers it applied of its
last pictures (:class:`ReferenceSource`: the reference that picture was coded against, its stream
header and its layers) and looks for the prefix with the named hash. That costs one decode of a
picture at a session start, and no per-layer work while receiving; a state is materialized only
when named. A name that matches nothing (the server restarted, evicted the device, or holds a
different state) is answered with ABORT(UNKNOWN_REFERENCE), and the device sends the picture again
without a reference: a mismatch costs bytes, never a wrong picture.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lpimg.errors import CodecError

if TYPE_CHECKING:
    from lpimg.codec.bitplane import LayerSpec
    from lpimg.codec.pipeline import ImageDecoder, LearnedCodec, StreamHeader
    from lpimg.codec.reference import ConditionalDecoder, ReferenceState


@dataclass(frozen=True, eq=False)
class HeldReference:
    """A reference state and the frame id it is named by."""

    frame_id: int
    state: ReferenceState

    def __post_init__(self) -> None:
        if not 0 <= self.frame_id <= 0xFFFF:
            raise CodecError(f"a reference frame id is a 16-bit session id, got {self.frame_id}")

    @property
    def digest(self) -> bytes:
        """The state's 8-byte hash, as the manifest carries it."""
        return self.state.hash()

    def to_bytes(self) -> bytes:
        """Frame id (2 bytes, big-endian) and the self-checking state, for a device's store."""
        return self.frame_id.to_bytes(2, "big") + self.state.to_bytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> HeldReference:
        """The inverse of :meth:`to_bytes`; CodecError if the bytes are not one (or corrupted)."""
        from lpimg.codec.reference import ReferenceState

        if len(blob) < 3:
            raise CodecError("not a stored lpimg reference")
        return cls(int.from_bytes(blob[:2], "big"), ReferenceState.from_bytes(blob[2:]))


@dataclass(eq=False)
class ReferenceSource:
    """One picture as the server decoded it, kept so that the state of any prefix of its layers
    can be rebuilt: its session id (the frame id of those states), the reference it was coded
    against (None: intra), its stream header and the layers applied, in order."""

    frame_id: int
    header: StreamHeader
    base: HeldReference | None = None
    layers: list[tuple[LayerSpec, bytes]] = field(default_factory=list)

    def states(self, codec: LearnedCodec) -> Iterator[ReferenceState]:
        """The state after each prefix of 1, 2, ... layers, decoding the picture as it goes (a
        caller that finds what it looks for stops the decoding there)."""
        from lpimg.codec.reference import ConditionalDecoder, ReferenceState

        decoder: ImageDecoder | ConditionalDecoder
        if self.header.condition is not None:
            if self.base is None:
                return
            decoder = ConditionalDecoder(codec, self.header, self.base.state)
        else:
            decoder = codec.decoder(self.header)
        for spec, data in self.layers:
            decoder.apply(spec, data)
            yield ReferenceState.from_decoder(decoder)


class ReferenceBank:
    """The server's reference states: per device its last ``per_device`` pictures, for at most
    ``max_devices`` devices (the least recently active device is forgotten first).

    Bounded on purpose: a device names either a state made of its last picture's acknowledged
    layers, or, when nothing of that picture was acknowledged, the reference that picture was coded
    against (the base of the last source). Two sources cover an intra picture that got nothing
    acknowledged in between too; anything older is answered with "unknown reference".
    """

    def __init__(self, *, max_devices: int = 1024, per_device: int = 2) -> None:
        if max_devices < 1 or per_device < 1:
            raise ValueError("a reference bank holds at least one picture of one device")
        self.max_devices = max_devices
        self.per_device = per_device
        self._sources: OrderedDict[str, deque[ReferenceSource]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def sources(self, device: str) -> tuple[ReferenceSource, ...]:
        """The pictures kept for ``device``, oldest first."""
        return tuple(self._sources.get(device, ()))

    def resolve(self, device: str, frame_id: int, digest: bytes, codec: LearnedCodec) -> HeldReference | None:
        """The state ``device`` names by ``frame_id`` and ``digest``, or None if none kept matches."""
        for source in reversed(self._sources.get(device, ())):
            base = source.base
            if base is not None and base.frame_id == frame_id and base.digest == digest:
                return base
            if source.frame_id != frame_id:
                continue
            try:
                for state in source.states(codec):
                    if state.hash() == digest:
                        return HeldReference(frame_id, state)
            except CodecError:  # a source that no longer decodes names nothing more
                continue
        return None

    def begin(
        self, device: str, frame_id: int, header: StreamHeader, base: HeldReference | None
    ) -> ReferenceSource:
        """Record a new picture of ``device`` (call :meth:`resolve` for its reference first: this
        may forget the oldest picture); append its layers to the returned source as they are
        applied."""
        source = ReferenceSource(frame_id, header, base)
        queue = self._sources.pop(device, None)
        if queue is None:
            queue = deque(maxlen=self.per_device)
        queue.append(source)
        self._sources[device] = queue
        while len(self._sources) > self.max_devices:
            self._sources.popitem(last=False)
        return source

    def forget(self, device: str) -> None:
        """Drop every reference of ``device``."""
        self._sources.pop(device, None)
