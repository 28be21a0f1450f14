"""The hand-written fast paths of lpimg.wire are the construct declarations, byte for byte.

The declarations are normative (the spec's tables are generated from them); the fast paths exist
only for speed (``lpimg bench wire``). So for every frame type, on generated frames, on frames
close to valid and on arbitrary bytes, the fast path must build the same bytes, parse to the same
frame, and reject exactly what the declaration rejects (both with :class:`WireError`).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpimg.errors import WireError
from lpimg.wire import (
    MAX_FRAGMENTS,
    AbortReason,
    AckFrame,
    AuthStartFrame,
    DataFrame,
    DeviceAbortFrame,
    LayerCompleteFrame,
    PollFrame,
    RefineFrame,
    Region,
    ResumeFrame,
    ServerAbortFrame,
    StartFrame,
    StopFrame,
)
from lpimg.wire.downlink import DOWNLINK_SPECS
from lpimg.wire.registry import FrameSpec
from lpimg.wire.uplink import UPLINK_SPECS

SPECS: tuple[FrameSpec[Any], ...] = UPLINK_SPECS + DOWNLINK_SPECS
BY_TYPE = {spec.frame_type: spec for spec in SPECS}
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

reasons = st.sampled_from(list(AbortReason))
regions = st.none() | st.builds(
    Region, st.integers(0, 255), st.integers(0, 255), st.integers(1, 255), st.integers(1, 255)
)


@st.composite
def ack_frames(draw: st.DrawFn) -> AckFrame:
    next_index = draw(st.integers(0, MAX_FRAGMENTS))
    room = min(64, MAX_FRAGMENTS - 1 - next_index)
    if room <= 0:
        return AckFrame(next_index)
    held = draw(st.sets(st.integers(next_index + 1, next_index + room), max_size=room))
    return AckFrame.from_received(next_index, held, 8)


frames = st.one_of(
    st.builds(DataFrame, st.integers(0, MAX_FRAGMENTS - 1), st.binary(min_size=1, max_size=64),
              st.booleans()),
    st.builds(StartFrame, st.integers(0, 0xFFFF), st.integers(1, 0xFFFF),
              st.binary(min_size=1, max_size=64), st.booleans(), st.integers(1, 7)),
    st.builds(AuthStartFrame, st.integers(0, 0xFFFF), st.integers(1, 0xFFFF),
              st.binary(min_size=1, max_size=64), st.booleans(), st.integers(1, 7)),
    st.just(PollFrame()),
    st.builds(ResumeFrame, st.integers(0, 0xFFFF)),
    st.builds(DeviceAbortFrame, reasons),
    ack_frames(),
    st.builds(LayerCompleteFrame, st.integers(1, (1 << 14) - 1)),
    st.builds(RefineFrame, st.integers(0, 15), regions, st.integers(0, 255), st.integers(0, 3)),
    st.just(StopFrame()),
    st.builds(ServerAbortFrame, reasons),
)


def _outcome(parse: Any, data: bytes) -> tuple[str, object]:
    try:
        return ("ok", parse(data))
    except WireError:
        return ("error", None)


def _same_everywhere(data: bytes) -> None:
    for spec in SPECS:
        assert _outcome(spec.parse, data) == _outcome(spec.parse_declared, data), (spec.name, data)


def test_every_frame_type_has_a_fast_path() -> None:
    for spec in SPECS:
        assert spec.fast_parse is not None and spec.fast_build is not None, spec.name


@EXAMPLES
@given(frames)
def test_fast_build_and_parse_equal_the_declaration(frame: Any) -> None:
    spec = BY_TYPE[type(frame)]
    data = spec.build(frame)
    assert data == spec.build_declared(frame)
    assert spec.parse(data) == spec.parse_declared(data) == frame
    _same_everywhere(data)


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid frame with a few bytes overwritten, cut or appended."""
    frame = draw(frames)
    data = bytearray(BY_TYPE[type(frame)].build_declared(frame))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "cut", "append", "flip"]))
        if action == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif action == "flip" and data:
            data[0] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        else:
            data += draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@EXAMPLES
@given(near_valid())
def test_fast_parse_rejects_what_the_declaration_rejects(data: bytes) -> None:
    _same_everywhere(data)


@EXAMPLES
@given(st.binary(max_size=12))
def test_fast_parse_agrees_on_arbitrary_bytes(data: bytes) -> None:
    _same_everywhere(data)


def test_fast_parse_agrees_on_every_first_byte() -> None:
    """Every first byte (every type, flag and reserved-bit combination), alone and followed by
    second bytes that set each bit; hypothesis covers the rest."""
    seconds = (0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFE, 0xFF)
    for first in range(256):
        _same_everywhere(bytes([first]))
        for second in seconds:
            _same_everywhere(bytes([first, second]))
            _same_everywhere(bytes([first, second, 0x5A]))


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(5, bytearray(b"xy"), ack=True),  # type: ignore[arg-type]
        DataFrame(5, b"xy", ack=1),  # type: ignore[arg-type]
        DataFrame(5, "xy", ack=False),  # type: ignore[arg-type]
        StartFrame(1, 49, memoryview(b"abc")),  # type: ignore[arg-type]
        StartFrame(True, 49, b"abc", ack=2),  # type: ignore[arg-type]
        AckFrame(3, bytearray(b"\x80")),  # type: ignore[arg-type]
        RefineFrame(True, Region(True, 0, 1, 1), 3),  # type: ignore[arg-type]
        ResumeFrame(True),  # type: ignore[arg-type]
        LayerCompleteFrame(True),  # type: ignore[arg-type]
    ],
    ids=lambda frame: type(frame).__name__,
)
def test_oddly_typed_frames_build_as_the_declaration_does(frame: Any) -> None:
    spec = BY_TYPE[type(frame)]
    try:
        expected: bytes | None = spec.build_declared(frame)
    except WireError:
        expected = None
    if expected is None:
        with pytest.raises(WireError):
            spec.build(frame)
    else:
        assert spec.build(frame) == expected


def test_fast_parse_accepts_bytearray_and_memoryview() -> None:
    for frame in (DataFrame(7, b"abc", True), StartFrame(9, 49, b"z"), RefineFrame(3, None, 2)):
        spec = BY_TYPE[type(frame)]
        data = spec.build(frame)
        for view in (bytearray(data), memoryview(data)):
            parsed = spec.parse(view)  # type: ignore[arg-type]
            assert parsed == frame
            assert parsed == spec.parse_declared(view)  # type: ignore[arg-type]
