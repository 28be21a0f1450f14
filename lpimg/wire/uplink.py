"""Uplink frames (device to server), declared once with construct.

The first bit tells a data fragment (1) from a control frame (0); a control frame's first byte
is a 4-bit type and a 4-bit argument. Nothing here carries the session id except the two frames
that establish or re-establish a session (start, resume): everything else takes its session
from the link's own addressing (the LoRaWAN DevAddr or the MQTT topic), as SCHC takes its rule
from the FPort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from construct import GreedyBytes, Int16ub, Struct, Terminated

from lpimg.errors import WireError
from lpimg.wire.codes import MAX_FRAGMENTS, PROTOCOL_VERSION, START_HEADER_SIZE, AbortReason
from lpimg.wire.fields import BitFields, Bits
from lpimg.wire.registry import FrameSpec

# -- declarations --------------------------------------------------------------------------

DATA = Struct(
    "header"
    / BitFields(
        Bits("kind", 1, const=1, doc="1: data fragment"),
        Bits("ack", 1, flag=True, doc="1: the device asks for an ACK after this frame"),
        Bits("index", 14, doc="fragment index in the session stream, 0..16382"),
    ),
    "payload" / GreedyBytes * "fragment bytes: F, the shorter last fragment of a group, or F0",
)

START = Struct(
    "header"
    / BitFields(
        Bits("kind", 4, const=0b0001, doc="0001: session start"),
        Bits("ack", 1, flag=True, doc="1: ACK wanted (the whole stream fits this frame)"),
        Bits("version", 3, doc="protocol version, 1 for this document"),
    ),
    "session_id" / Int16ub * "chosen by the device; the same id resumes the session",
    "fragment_size" / Int16ub * "F: payload bytes of every data fragment but a group's last",
    "chunk" / GreedyBytes * "fragment 0 of the stream: F0 = min(F - 3, size of group 0) bytes",
)

START_AUTH = Struct(
    "header"
    / BitFields(
        Bits("kind", 4, const=0b0101, doc="0101: authenticated session start (section 15)"),
        Bits("ack", 1, flag=True, doc="1: ACK wanted (the whole stream fits this frame)"),
        Bits("version", 3, doc="protocol version, 1 for this document"),
    ),
    "session_id" / Int16ub * "chosen by the device; the same id resumes the session",
    "fragment_size" / Int16ub * "F: payload bytes of every data fragment but a group's last",
    "chunk" / GreedyBytes * "fragment 0 of the stream: F0 = min(F - 3, size of group 0) bytes",
)

POLL = Struct(
    "header"
    / BitFields(
        Bits("kind", 4, const=0b0010, doc="0010: ACK request / poll"),
        Bits("reserved", 4, const=0, doc="0"),
    ),
    Terminated,
)

RESUME = Struct(
    "header"
    / BitFields(
        Bits("kind", 4, const=0b0011, doc="0011: resume after a device reboot"),
        Bits("reserved", 4, const=0, doc="0"),
    ),
    "session_id" / Int16ub * "the session the device re-created from its stored layers",
    Terminated,
)

ABORT = Struct(
    "header"
    / BitFields(
        Bits("kind", 4, const=0b0100, doc="0100: device abort"),
        Bits("reason", 4, doc="abort reason code"),
    ),
    Terminated,
)

# -- frames --------------------------------------------------------------------------------


def _check_index(index: int) -> None:
    if not isinstance(index, int) or not 0 <= index < MAX_FRAGMENTS:
        raise WireError(f"fragment index {index!r} is outside 0..{MAX_FRAGMENTS - 1}")


@dataclass(frozen=True, slots=True)
class DataFrame:
    """Fragment ``index`` of the session stream; ``ack`` asks the server for a downlink."""

    index: int
    payload: bytes
    ack: bool = False

    def __post_init__(self) -> None:
        _check_index(self.index)
        if not self.payload:
            raise WireError("a data fragment carries at least one byte")


@dataclass(frozen=True, slots=True)
class StartFrame:
    """Opens a session and carries its first ``len(chunk)`` stream bytes (fragment 0)."""

    session_id: int
    fragment_size: int
    chunk: bytes
    ack: bool = False
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if not 1 <= self.version <= 7:
            raise WireError(f"protocol version {self.version} is outside 1..7")
        if not 0 <= self.session_id <= 0xFFFF:
            raise WireError(f"session id {self.session_id} does not fit 16 bits")
        if not 1 <= self.fragment_size <= 0xFFFF:
            raise WireError(f"fragment size {self.fragment_size} is outside 1..65535")
        if not self.chunk:
            raise WireError("a session start carries at least one stream byte")


@dataclass(frozen=True, slots=True)
class AuthStartFrame(StartFrame):
    """A session start announcing an authenticated session (section 15 of the spec).

    Same fields as :class:`StartFrame`; the frame type alone says that the session's records
    end with AES-CMAC tags and that its downlinks are sealed, so a plain session's bytes are
    untouched and a server can refuse a plain start from a device it holds a key for.
    """


@dataclass(frozen=True, slots=True)
class PollFrame:
    """Asks for a downlink when the device has no fragment to carry the request."""


@dataclass(frozen=True, slots=True)
class ResumeFrame:
    """Sent by a rebooted device that re-created ``session_id``; the server answers its state."""

    session_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.session_id <= 0xFFFF:
            raise WireError(f"session id {self.session_id} does not fit 16 bits")


@dataclass(frozen=True, slots=True)
class DeviceAbortFrame:
    """The device ends its session; no answer is expected."""

    reason: AbortReason

    def __post_init__(self) -> None:
        if not isinstance(self.reason, AbortReason):
            raise WireError(f"reason must be an AbortReason, got {self.reason!r}")


UplinkFrame = DataFrame | StartFrame | AuthStartFrame | PollFrame | ResumeFrame | DeviceAbortFrame

_POLL = PollFrame()


def _data_fields(frame: DataFrame) -> dict[str, Any]:
    return {"header": {"ack": frame.ack, "index": frame.index}, "payload": frame.payload}


def _start_fields(frame: StartFrame) -> dict[str, Any]:
    return {
        "header": {"ack": frame.ack, "version": frame.version},
        "session_id": frame.session_id,
        "fragment_size": frame.fragment_size,
        "chunk": frame.chunk,
    }


# -- fast paths ------------------------------------------------------------------------------
# Hand-written equivalents of the declarations above, for the hot loop (see registry.py). The
# declarations stay normative; tests/test_wire_fast.py proves these accept, reject and build
# exactly the same bytes. A fast build returns None for a frame whose fields are not plain
# (a non-bool flag, a non-bytes payload), which then takes the declared path.


def _fast_parse_data(data: bytes) -> DataFrame:
    if len(data) < 2:
        raise WireError("malformed DATA frame: shorter than its 2-byte header")
    header = (data[0] << 8) | data[1]
    if not header & 0x8000:
        raise WireError("malformed DATA frame: kind must be 1")
    return DataFrame(header & 0x3FFF, bytes(data[2:]), bool(header & 0x4000))


def _fast_build_data(frame: DataFrame) -> bytes | None:
    ack, payload = frame.ack, frame.payload
    if type(ack) is not bool or type(payload) is not bytes or type(frame.index) is not int:
        return None
    return ((0xC000 if ack else 0x8000) | frame.index).to_bytes(2, "big") + payload


def _fast_parse_start(data: bytes) -> StartFrame:
    return _parse_start_like(data, StartFrame, 0b0001, "START")


def _fast_parse_start_auth(data: bytes) -> StartFrame:
    return _parse_start_like(data, AuthStartFrame, 0b0101, "START_AUTH")


def _parse_start_like(data: bytes, cls: type[StartFrame], kind: int, name: str) -> StartFrame:
    if len(data) < START_HEADER_SIZE:
        raise WireError(f"malformed {name} frame: shorter than its 5-byte header")
    first = data[0]
    if first >> 4 != kind:
        raise WireError(f"malformed {name} frame: kind must be {kind:04b}")
    return cls(
        (data[1] << 8) | data[2],
        (data[3] << 8) | data[4],
        bytes(data[START_HEADER_SIZE:]),
        bool(first & 0x08),
        first & 0x07,
    )


def _fast_build_start(frame: StartFrame) -> bytes | None:
    return _build_start_like(frame, 0x10) if type(frame) is StartFrame else None


def _fast_build_start_auth(frame: StartFrame) -> bytes | None:
    return _build_start_like(frame, 0x50) if type(frame) is AuthStartFrame else None


def _build_start_like(frame: StartFrame, kind_bits: int) -> bytes | None:
    ack, chunk = frame.ack, frame.chunk
    if type(ack) is not bool or type(chunk) is not bytes:
        return None
    if type(frame.session_id) is not int or type(frame.fragment_size) is not int:
        return None
    if type(frame.version) is not int:
        return None
    first = kind_bits | (0x08 if ack else 0)
    return (
        bytes((first | frame.version,))
        + ((frame.session_id << 16) | frame.fragment_size).to_bytes(4, "big")
        + chunk
    )


_POLL_BYTES = b"\x20"


def _fast_parse_poll(data: bytes) -> PollFrame:
    if data != _POLL_BYTES:
        raise WireError("malformed POLL frame: it is exactly the byte 0x20")
    return _POLL


def _fast_parse_resume(data: bytes) -> ResumeFrame:
    if len(data) != 3 or data[0] != 0x30:
        raise WireError("malformed RESUME frame: it is 0x30 and a 16-bit session id")
    return ResumeFrame((data[1] << 8) | data[2])


def _fast_build_resume(frame: ResumeFrame) -> bytes | None:
    if type(frame.session_id) is not int:
        return None
    return (0x300000 | frame.session_id).to_bytes(3, "big")


def _fast_parse_abort(data: bytes) -> DeviceAbortFrame:
    if len(data) != 1 or data[0] >> 4 != 0b0100:
        raise WireError("malformed ABORT frame: it is one byte, 0100 and a reason")
    return DeviceAbortFrame(AbortReason.from_code(data[0] & 0x0F))


def _fast_build_abort(frame: DeviceAbortFrame) -> bytes | None:
    return bytes((0x40 | frame.reason,))


DATA_SPEC = FrameSpec(
    "DATA",
    "uplink",
    DATA,
    DataFrame,
    lambda c: DataFrame(c.header.index, c.payload, c.header.ack),
    _data_fields,
    "one fragment of the session stream",
    _fast_parse_data,
    _fast_build_data,
)
START_SPEC = FrameSpec(
    "START",
    "uplink",
    START,
    StartFrame,
    lambda c: StartFrame(
        c.session_id, c.fragment_size, c.chunk, c.header.ack, c.header.version
    ),
    _start_fields,
    "session start, carrying fragment 0 of the stream",
    _fast_parse_start,
    _fast_build_start,
)
START_AUTH_SPEC = FrameSpec(
    "START_AUTH",
    "uplink",
    START_AUTH,
    AuthStartFrame,
    lambda c: AuthStartFrame(
        c.session_id, c.fragment_size, c.chunk, c.header.ack, c.header.version
    ),
    _start_fields,
    "authenticated session start, carrying fragment 0 of the stream",
    _fast_parse_start_auth,
    _fast_build_start_auth,
)
POLL_SPEC = FrameSpec(
    "POLL",
    "uplink",
    POLL,
    PollFrame,
    lambda c: _POLL,
    lambda f: {"header": {}},
    "ACK request when no fragment is left to carry the flag",
    _fast_parse_poll,
    lambda f: _POLL_BYTES,
)
RESUME_SPEC = FrameSpec(
    "RESUME",
    "uplink",
    RESUME,
    ResumeFrame,
    lambda c: ResumeFrame(c.session_id),
    lambda f: {"header": {}, "session_id": f.session_id},
    "resume request after a device reboot",
    _fast_parse_resume,
    _fast_build_resume,
)
DEVICE_ABORT_SPEC = FrameSpec(
    "ABORT",
    "uplink",
    ABORT,
    DeviceAbortFrame,
    lambda c: DeviceAbortFrame(AbortReason.from_code(c.header.reason)),
    lambda f: {"header": {"reason": int(f.reason)}},
    "the device gives the session up",
    _fast_parse_abort,
    _fast_build_abort,
)

UPLINK_SPECS: tuple[FrameSpec[Any], ...] = (
    START_SPEC,
    DATA_SPEC,
    POLL_SPEC,
    RESUME_SPEC,
    DEVICE_ABORT_SPEC,
    START_AUTH_SPEC,
)
_BY_TYPE: dict[type, FrameSpec[Any]] = {spec.frame_type: spec for spec in UPLINK_SPECS}
_BY_KIND: dict[int, FrameSpec[Any]] = {
    0b0001: START_SPEC,
    0b0010: POLL_SPEC,
    0b0011: RESUME_SPEC,
    0b0100: DEVICE_ABORT_SPEC,
    0b0101: START_AUTH_SPEC,
}


def parse_uplink(data: bytes) -> UplinkFrame:
    """Parse one uplink frame; any malformed input raises :class:`lpimg.WireError`."""
    if not data:
        raise WireError("empty uplink frame")
    first = data[0]
    if first & 0x80:
        return DATA_SPEC.parse(data)  # type: ignore[no-any-return]
    spec = _BY_KIND.get(first >> 4)
    if spec is None:
        raise WireError(f"unknown uplink frame type 0x{first >> 4:x}")
    return spec.parse(data)  # type: ignore[no-any-return]


def build_uplink(frame: UplinkFrame) -> bytes:
    """The bytes of one uplink frame."""
    spec = _BY_TYPE.get(type(frame))
    if spec is None:
        raise WireError(f"not an uplink frame: {frame!r}")
    return spec.build(frame)
