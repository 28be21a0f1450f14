"""Downlink frames (server to device), declared once with construct.

The downlink is the scarce direction (The Things Network allows 10 a day), so every frame is at
most a few bytes: the two most frequent ones pack a 14-bit value beside a 2-bit type. None
carries a session id: a class A downlink answers the uplink that opened its window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from construct import GreedyBytes, Int8ub, Struct, Terminated

from lpimg.errors import WireError
from lpimg.wire.codes import MAX_FRAGMENTS, MAX_LAYER_COUNT, AbortReason
from lpimg.wire.fields import BitFields, Bits
from lpimg.wire.region import Region, region_from_wire, region_to_wire
from lpimg.wire.registry import FrameSpec

# -- declarations --------------------------------------------------------------------------

ACK = Struct(
    "header"
    / BitFields(
        Bits("kind", 2, const=0b00, doc="00: bitmap ACK"),
        Bits("next", 14, doc="first fragment index not received; all below it were"),
    ),
    "bitmap"
    / GreedyBytes
    * "bit j of byte k (MSB first) = fragment next+1+8k+j received; no trailing zero byte",
)

LAYER_COMPLETE = Struct(
    "header"
    / BitFields(
        Bits("kind", 2, const=0b01, doc="01: layers complete"),
        Bits("count", 14, doc="layers 0..count-1 verified and delivered (count >= 1)"),
    ),
    Terminated,
)

REFINE = Struct(
    "header"
    / BitFields(
        Bits("kind", 2, const=0b10, doc="10: refine region"),
        Bits("priority", 2, doc="0 (normal) .. 3 (most urgent)"),
        Bits("seq", 4, doc="number of refine requests answered so far, modulo 16"),
    ),
    "x" / Int8ub * "rectangle left, latent units (16 px)",
    "y" / Int8ub * "rectangle top, latent units",
    "width" / Int8ub * "rectangle width, latent units (all four 0: whole image)",
    "height" / Int8ub * "rectangle height, latent units",
    "pass_index" / Int8ub * "send codec passes up to and including this one",
    Terminated,
)

STOP = Struct(
    "header"
    / BitFields(
        Bits("kind", 4, const=0b1100, doc="1100: stop, that is enough"),
        Bits("reserved", 4, const=0, doc="0"),
    ),
    Terminated,
)

ABORT = Struct(
    "header"
    / BitFields(
        Bits("kind", 4, const=0b1101, doc="1101: server abort"),
        Bits("reason", 4, doc="abort reason code"),
    ),
    Terminated,
)

# -- frames --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AckFrame:
    """Which fragments the server holds: all below ``next``, and those set in ``bitmap``.

    Like SCHC's compressed bitmap, nothing is spent on what the device can infer: the bit for
    ``next`` itself (always 0) is not sent, and the bitmap stops at the highest fragment
    received, so a loss-free window is acknowledged in two bytes.
    """

    next: int
    bitmap: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.next <= MAX_FRAGMENTS:
            raise WireError(f"ACK next {self.next} is outside 0..{MAX_FRAGMENTS}")
        if self.bitmap and self.bitmap[-1] == 0:
            raise WireError("an ACK bitmap never ends with a zero byte")
        if self.bitmap:
            last = self.bitmap[-1]
            highest = self.next + 8 * len(self.bitmap) - (last & -last).bit_length() + 1
            if highest >= MAX_FRAGMENTS:
                raise WireError("ACK bitmap reaches past the last fragment index")

    @classmethod
    def from_received(cls, next: int, received: Iterable[int], max_bytes: int) -> AckFrame:
        """Encode the fragments above ``next`` that were received, within ``max_bytes``."""
        bitmap = bytearray(max_bytes)
        for index in received:
            bit = index - next - 1
            if 0 <= bit < 8 * max_bytes:
                bitmap[bit >> 3] |= 0x80 >> (bit & 7)
        return cls(next, bytes(bitmap).rstrip(b"\0"))

    def received(self) -> list[int]:
        """The fragment indices above ``next`` that the bitmap marks as received."""
        found = []
        for position, byte in enumerate(self.bitmap):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    found.append(self.next + 1 + 8 * position + bit)
        return found


@dataclass(frozen=True, slots=True)
class LayerCompleteFrame:
    """Layers 0..count-1 are verified; the server holds no fragment beyond the last of them."""

    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_LAYER_COUNT:
            raise WireError(f"layer count {self.count} is outside 1..{MAX_LAYER_COUNT}")


@dataclass(frozen=True, slots=True)
class RefineFrame:
    """Asks for more codec passes over ``region`` (None: the whole image)."""

    seq: int
    region: Region | None
    pass_index: int
    priority: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= 15:
            raise WireError(f"refine seq {self.seq} is outside 0..15")
        if not 0 <= self.priority <= 3:
            raise WireError(f"refine priority {self.priority} is outside 0..3")
        if not 0 <= self.pass_index <= 255:
            raise WireError(f"pass index {self.pass_index} is outside 0..255")
        if self.region is not None and not isinstance(self.region, Region):
            raise WireError(f"region must be a Region or None, got {self.region!r}")


@dataclass(frozen=True, slots=True)
class StopFrame:
    """The server has enough; the device ends the session."""


@dataclass(frozen=True, slots=True)
class ServerAbortFrame:
    """The server ends (or does not know) the session, with a reason."""

    reason: AbortReason

    def __post_init__(self) -> None:
        if not isinstance(self.reason, AbortReason):
            raise WireError(f"reason must be an AbortReason, got {self.reason!r}")


DownlinkFrame = AckFrame | LayerCompleteFrame | RefineFrame | StopFrame | ServerAbortFrame

_STOP = StopFrame()


def _refine_fields(frame: RefineFrame) -> dict[str, Any]:
    x, y, width, height = region_to_wire(frame.region)
    return {
        "header": {"priority": frame.priority, "seq": frame.seq},
        "x": x,
        "y": y,
        "width": width,
        "height": height,
        "pass_index": frame.pass_index,
    }


# -- fast paths ------------------------------------------------------------------------------
# Hand-written equivalents of the declarations above, for the hot loop (see registry.py). The
# declarations stay normative; tests/test_wire_fast.py proves these accept, reject and build
# exactly the same bytes. A fast build returns None for a frame whose fields are not plain,
# which then takes the declared path.


def _fast_parse_ack(data: bytes) -> AckFrame:
    if len(data) < 2 or data[0] & 0xC0:
        raise WireError("malformed ACK frame: it starts with 00 and a 14-bit next")
    return AckFrame(((data[0] << 8) | data[1]) & 0x3FFF, bytes(data[2:]))


def _fast_build_ack(frame: AckFrame) -> bytes | None:
    bitmap = frame.bitmap
    if type(bitmap) is not bytes or type(frame.next) is not int:
        return None
    return frame.next.to_bytes(2, "big") + bitmap


def _fast_parse_layer_complete(data: bytes) -> LayerCompleteFrame:
    if len(data) != 2 or data[0] >> 6 != 0b01:
        raise WireError("malformed LAYER_COMPLETE frame: it is 01 and a 14-bit count")
    return LayerCompleteFrame(((data[0] << 8) | data[1]) & 0x3FFF)


def _fast_build_layer_complete(frame: LayerCompleteFrame) -> bytes | None:
    if type(frame.count) is not int:
        return None
    return (0x4000 | frame.count).to_bytes(2, "big")


def _fast_parse_refine(data: bytes) -> RefineFrame:
    if len(data) != 6 or data[0] >> 6 != 0b10:
        raise WireError("malformed REFINE frame: it is 10, priority, seq and five bytes")
    first = data[0]
    return RefineFrame(
        first & 0x0F,
        region_from_wire(data[1], data[2], data[3], data[4]),
        data[5],
        (first >> 4) & 0x03,
    )


def _fast_build_refine(frame: RefineFrame) -> bytes | None:
    seq, priority, pass_index = frame.seq, frame.priority, frame.pass_index
    if type(seq) is not int or type(priority) is not int or type(pass_index) is not int:
        return None
    region = frame.region
    if region is None:
        return bytes((0x80 | (priority << 4) | seq, 0, 0, 0, 0, pass_index))
    return bytes(
        (0x80 | (priority << 4) | seq, region.x, region.y, region.width, region.height, pass_index)
    )


_STOP_BYTES = b"\xc0"


def _fast_parse_stop(data: bytes) -> StopFrame:
    if data != _STOP_BYTES:
        raise WireError("malformed STOP frame: it is exactly the byte 0xc0")
    return _STOP


def _fast_parse_abort(data: bytes) -> ServerAbortFrame:
    if len(data) != 1 or data[0] >> 4 != 0b1101:
        raise WireError("malformed ABORT frame: it is one byte, 1101 and a reason")
    return ServerAbortFrame(AbortReason.from_code(data[0] & 0x0F))


def _fast_build_abort(frame: ServerAbortFrame) -> bytes | None:
    return bytes((0xD0 | frame.reason,))


ACK_SPEC = FrameSpec(
    "ACK",
    "downlink",
    ACK,
    AckFrame,
    lambda c: AckFrame(c.header.next, c.bitmap),
    lambda f: {"header": {"next": f.next}, "bitmap": f.bitmap},
    "bitmap ACK of the session stream",
    _fast_parse_ack,
    _fast_build_ack,
)
LAYER_COMPLETE_SPEC = FrameSpec(
    "LAYER_COMPLETE",
    "downlink",
    LAYER_COMPLETE,
    LayerCompleteFrame,
    lambda c: LayerCompleteFrame(c.header.count),
    lambda f: {"header": {"count": f.count}},
    "layers verified; with every announced layer, the session is complete",
    _fast_parse_layer_complete,
    _fast_build_layer_complete,
)
REFINE_SPEC = FrameSpec(
    "REFINE",
    "downlink",
    REFINE,
    RefineFrame,
    lambda c: RefineFrame(
        c.header.seq,
        region_from_wire(c.x, c.y, c.width, c.height),
        c.pass_index,
        c.header.priority,
    ),
    _refine_fields,
    "ask for more passes over a rectangle",
    _fast_parse_refine,
    _fast_build_refine,
)
STOP_SPEC = FrameSpec(
    "STOP",
    "downlink",
    STOP,
    StopFrame,
    lambda c: _STOP,
    lambda f: {"header": {}},
    "enough: the device ends the session",
    _fast_parse_stop,
    lambda f: _STOP_BYTES,
)
SERVER_ABORT_SPEC = FrameSpec(
    "ABORT",
    "downlink",
    ABORT,
    ServerAbortFrame,
    lambda c: ServerAbortFrame(AbortReason.from_code(c.header.reason)),
    lambda f: {"header": {"reason": int(f.reason)}},
    "the server ends or does not know the session",
    _fast_parse_abort,
    _fast_build_abort,
)

DOWNLINK_SPECS: tuple[FrameSpec[Any], ...] = (
    ACK_SPEC,
    LAYER_COMPLETE_SPEC,
    REFINE_SPEC,
    STOP_SPEC,
    SERVER_ABORT_SPEC,
)
_BY_TYPE: dict[type, FrameSpec[Any]] = {spec.frame_type: spec for spec in DOWNLINK_SPECS}
_BY_TOP2: dict[int, FrameSpec[Any]] = {0: ACK_SPEC, 1: LAYER_COMPLETE_SPEC, 2: REFINE_SPEC}
_BY_TOP4: dict[int, FrameSpec[Any]] = {0b1100: STOP_SPEC, 0b1101: SERVER_ABORT_SPEC}


def parse_downlink(data: bytes) -> DownlinkFrame:
    """Parse one downlink frame; any malformed input raises :class:`lpimg.WireError`."""
    if not data:
        raise WireError("empty downlink frame")
    first = data[0]
    spec = _BY_TOP2.get(first >> 6) or _BY_TOP4.get(first >> 4)
    if spec is None:
        raise WireError(f"unknown downlink frame type 0x{first >> 4:x}")
    return spec.parse(data)  # type: ignore[no-any-return]


def build_downlink(frame: DownlinkFrame) -> bytes:
    """The bytes of one downlink frame."""
    spec = _BY_TYPE.get(type(frame))
    if spec is None:
        raise WireError(f"not a downlink frame: {frame!r}")
    return spec.build(frame)
