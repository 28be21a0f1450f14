"""lpimg.wire: every frame and record round-trips, and hostile bytes only raise WireError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpimg.errors import ManifestError, WireError
from lpimg.wire import (
    DATA_HEADER_SIZE,
    MAX_FRAGMENTS,
    START_HEADER_SIZE,
    AbortReason,
    AckFrame,
    DataFrame,
    Descriptor,
    DeviceAbortFrame,
    GroupHeader,
    LayerCompleteFrame,
    Manifest,
    PollFrame,
    RefineFrame,
    Region,
    ResumeFrame,
    ServerAbortFrame,
    StartFrame,
    StopFrame,
    build_descriptor,
    build_downlink,
    build_group_header,
    build_layer_record,
    build_uplink,
    check_layer_record,
    crc32,
    decode_manifest,
    encode_manifest,
    header_record_length,
    parse_descriptor,
    parse_downlink,
    parse_group_header,
    parse_uplink,
)
from lpimg.wire.fields import VarUInt, encode_varuint

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ------------------------------------------------------------------------------

session_ids = st.integers(0, 0xFFFF)
indices = st.integers(0, MAX_FRAGMENTS - 1)
payloads = st.binary(min_size=1, max_size=300)
reasons = st.sampled_from(list(AbortReason))
regions = st.one_of(
    st.none(),
    st.builds(
        Region,
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(1, 255),
        st.integers(1, 255),
    ),
)


@st.composite
def ack_frames(draw: st.DrawFn) -> AckFrame:
    next_index = draw(st.integers(0, MAX_FRAGMENTS))
    room = min(64, MAX_FRAGMENTS - 1 - next_index)
    if room <= 0:
        return AckFrame(next_index)
    held = draw(st.sets(st.integers(next_index + 1, next_index + room), max_size=room))
    return AckFrame.from_received(next_index, held, 8)


uplink_frames = st.one_of(
    st.builds(DataFrame, indices, payloads, st.booleans()),
    st.builds(StartFrame, session_ids, st.integers(9, 1498), payloads, st.booleans()),
    st.just(PollFrame()),
    st.builds(ResumeFrame, session_ids),
    st.builds(DeviceAbortFrame, reasons),
)
downlink_frames = st.one_of(
    ack_frames(),
    st.builds(LayerCompleteFrame, st.integers(1, (1 << 14) - 1)),
    st.builds(RefineFrame, st.integers(0, 15), regions, st.integers(0, 255), st.integers(0, 3)),
    st.just(StopFrame()),
    st.builds(ServerAbortFrame, reasons),
)
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
manifests = st.builds(
    Manifest,
    capture_time=st.none() | st.integers(0, 2**40),
    reference_id=st.none() | st.integers(0, 2**32),
    reference_hash=st.none() | st.binary(max_size=32),
    device=st.none() | st.dictionaries(st.text(max_size=6), st.text(max_size=6) | st.integers(0, 99)),
    extra=st.dictionaries(st.integers(24, 1000) | st.text(min_size=1, max_size=5), plain, max_size=3),
)
sizes = st.lists(st.integers(0, VarUInt.MAX), max_size=20).map(tuple)
descriptors = st.builds(
    Descriptor, st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), sizes, manifests
)
group_headers = st.builds(GroupHeader, regions, st.integers(0, 255), sizes)

# -- round trips: every frame type, both directions --------------------------------------------


@FAST
@given(uplink_frames)
def test_every_uplink_frame_round_trips(frame: object) -> None:
    data = build_uplink(frame)  # type: ignore[arg-type]
    assert parse_uplink(data) == frame
    assert build_uplink(parse_uplink(data)) == data


@FAST
@given(downlink_frames)
def test_every_downlink_frame_round_trips(frame: object) -> None:
    data = build_downlink(frame)  # type: ignore[arg-type]
    assert parse_downlink(data) == frame
    assert build_downlink(parse_downlink(data)) == data


@FAST
@given(descriptors)
def test_descriptor_record_round_trips(descriptor: Descriptor) -> None:
    record = build_descriptor(descriptor)
    assert parse_descriptor(record) == descriptor
    assert header_record_length(record[:4]) == len(record)


@FAST
@given(group_headers)
def test_group_header_record_round_trips(header: GroupHeader) -> None:
    record = build_group_header(header)
    assert parse_group_header(record) == header
    assert header_record_length(record) == len(record)


@FAST
@given(manifests)
def test_manifest_round_trips(manifest: Manifest) -> None:
    assert decode_manifest(encode_manifest(manifest)) == manifest


@FAST
@given(st.binary(max_size=2000))
def test_layer_record_round_trips(layer: bytes) -> None:
    assert check_layer_record(build_layer_record(layer)) == layer


@FAST
@given(st.integers(0, VarUInt.MAX))
def test_varint_round_trips_in_shortest_form(value: int) -> None:
    data = encode_varuint(value)
    assert VarUInt().parse(data) == value
    assert len(data) == (1 if value < 64 else 2 if value < 16384 else 4)


# -- hostile input: only WireError --------------------------------------------------------------

PARSERS = [parse_uplink, parse_downlink, parse_descriptor, parse_group_header, decode_manifest]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_wire_error(data: bytes) -> None:
    for parse in PARSERS:
        with contextlib.suppress(WireError):
            parse(data)


@st.composite
def mutated(draw: st.DrawFn, frames: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with a few bytes overwritten, cut or appended: close to valid, so the
    parsers' deeper branches are reached."""
    data = bytearray(draw(frames))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "cut", "append"]))
        if action == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif action == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        else:
            data += draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(
    mutated(
        st.one_of(
            uplink_frames.map(build_uplink),
            downlink_frames.map(build_downlink),
            descriptors.map(build_descriptor),
            group_headers.map(build_group_header),
        )
    )
)
def test_mutated_frames_raise_only_wire_error(data: bytes) -> None:
    for parse in PARSERS:
        try:
            result = parse(data)
        except WireError:
            continue
        if parse is parse_uplink:
            assert parse_uplink(build_uplink(result)) == result  # type: ignore[arg-type]
        if parse is parse_downlink:
            assert parse_downlink(build_downlink(result)) == result  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(descriptors, st.integers(0, 10_000), st.integers(0, 7))
def test_a_flipped_bit_never_passes_a_header_record(
    descriptor: Descriptor, position: int, bit: int
) -> None:
    record = bytearray(build_descriptor(descriptor))
    record[position % len(record)] ^= 1 << bit
    with pytest.raises(WireError):
        parse_descriptor(bytes(record))


# -- layouts the spec promises ------------------------------------------------------------------


def test_data_header_is_two_bytes_with_the_documented_bits() -> None:
    data = build_uplink(DataFrame(300, b"xyz", ack=True))
    assert DATA_HEADER_SIZE == 2
    assert data[:2] == bytes([0b1100_0001, 0b0010_1100])  # 1 | A=1 | index 300
    assert data[2:] == b"xyz"


def test_start_header_is_five_bytes() -> None:
    data = build_uplink(StartFrame(0x1234, 49, b"abc", ack=False))
    assert START_HEADER_SIZE == 5
    assert data == bytes([0x11, 0x12, 0x34, 0x00, 0x31]) + b"abc"


def test_small_control_frames() -> None:
    assert build_uplink(PollFrame()) == b"\x20"
    assert build_uplink(ResumeFrame(7)) == b"\x30\x00\x07"
    assert build_uplink(DeviceAbortFrame(AbortReason.CANCELLED)) == b"\x49"
    assert build_downlink(StopFrame()) == b"\xc0"
    assert build_downlink(ServerAbortFrame(AbortReason.UNKNOWN_SESSION)) == b"\xd1"
    assert build_downlink(LayerCompleteFrame(3)) == b"\x40\x03"


def test_loss_free_ack_is_two_bytes_and_bitmap_starts_after_next() -> None:
    assert build_downlink(AckFrame(42)) == b"\x00\x2a"
    ack = AckFrame.from_received(3, [5, 6, 20], max_bytes=8)
    assert build_downlink(ack) == b"\x00\x03\x60\x00\x80"
    assert ack.received() == [5, 6, 20]


def test_ack_bitmap_is_truncated_to_fit() -> None:
    ack = AckFrame.from_received(0, [1, 100], max_bytes=2)
    assert ack.received() == [1]


def test_refine_whole_image_is_all_zero_rectangle() -> None:
    data = build_downlink(RefineFrame(2, None, 7, priority=1))
    assert data == bytes([0b10_01_0010, 0, 0, 0, 0, 7])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00",  # data fragment without payload
        b"\x10\x00\x01\x00\x31x",  # start with version 0
        b"\x11\x00\x01\x00\x31",  # start without fragment 0
        b"\x21",  # poll with a reserved bit set
        b"\x20\x00",  # poll with a trailing byte
        b"\x30\x00",  # truncated resume
        b"\x50",  # unknown control type
        b"\x00",  # type 0 is never used
    ],
)
def test_malformed_uplinks(data: bytes) -> None:
    with pytest.raises(WireError):
        parse_uplink(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x05\x80\x00",  # bitmap ending in a zero byte (not canonical)
        b"\x40\x00",  # layer-complete count 0
        b"\x80\x00\x00\x00\x00",  # truncated refine
        b"\x80\x00\x00\x05\x00\x00",  # refine with a zero-height rectangle
        b"\xc1",  # stop with a reserved bit
        b"\xe0",  # reserved type
        b"\x3f\xff\x80",  # bitmap reaching past the last fragment index
    ],
)
def test_malformed_downlinks(data: bytes) -> None:
    with pytest.raises(WireError):
        parse_downlink(data)


def test_reserved_abort_codes_read_as_unspecified() -> None:
    assert parse_downlink(b"\xdf") == ServerAbortFrame(AbortReason.UNSPECIFIED)
    assert parse_uplink(b"\x4e") == DeviceAbortFrame(AbortReason.UNSPECIFIED)


@pytest.mark.parametrize(
    "frame",
    [
        lambda: DataFrame(MAX_FRAGMENTS, b"x"),
        lambda: DataFrame(0, b""),
        lambda: StartFrame(70_000, 49, b"x"),
        lambda: StartFrame(1, 49, b"x", version=0),
        lambda: LayerCompleteFrame(0),
        lambda: RefineFrame(16, None, 0),
        lambda: RefineFrame(0, None, 0, priority=4),
        lambda: AckFrame(5, b"\x00"),
        lambda: Region(0, 0, 0, 3),
        lambda: Region(256, 0, 1, 1),
    ],
)
def test_out_of_range_fields_raise_wire_error(frame: object) -> None:
    with pytest.raises(WireError):
        frame()  # type: ignore[operator]


def test_varint_rejects_longer_forms_and_the_eight_byte_form() -> None:
    with pytest.raises(Exception, match="shortest"):
        VarUInt().parse(b"\x40\x05")
    with pytest.raises(Exception, match="8-byte"):
        VarUInt().parse(b"\xc0" + bytes(7))


def test_crc_is_the_common_crc32() -> None:
    assert crc32(b"123456789") == 0xCBF43926
    assert build_layer_record(b"123456789")[-4:] == bytes.fromhex("cbf43926")


def test_layer_record_with_a_bad_crc_fails() -> None:
    record = bytearray(build_layer_record(b"some layer"))
    record[0] ^= 1
    with pytest.raises(WireError, match="CRC"):
        check_layer_record(bytes(record))


def test_descriptor_layout() -> None:
    record = build_descriptor(Descriptor(1, 320, 240, (2001,)))
    # length 9 | model 1 (u16) | 320 | 240 | 1 layer | 2001 | CRC
    assert record[:10] == bytes([9, 0x00, 0x01, 0x01, 0x40, 0x00, 0xF0, 1, 0x47, 0xD1])
    assert len(record) == 1 + 9 + 4


def test_empty_manifest_is_zero_bytes() -> None:
    assert encode_manifest(None) == b""
    assert encode_manifest(Manifest()) == b""
    assert decode_manifest(b"") == Manifest()


def test_manifest_uses_small_integer_keys() -> None:
    data = encode_manifest({"capture_time": 1_700_000_000, "reference_id": 3})
    assert data == bytes.fromhex("a2001a6553f1000103")


@pytest.mark.parametrize(
    "data",
    [
        b"\xa1\x00",  # truncated map
        b"\x01",  # not a map
        b"\xa1\x04\x01",  # reserved key 4
        b"\xa1\x00\x61x",  # capture time as text
        b"\xa1\x00\xc1\x1a\x51\x4b\x67\xb0",  # a tagged value
        b"\xa0\x00",  # trailing byte
        b"\xa1\xf5\x01",  # boolean key
    ],
)
def test_malformed_manifests(data: bytes) -> None:
    with pytest.raises(ManifestError):
        decode_manifest(data)


def test_manifest_from_dict_and_back() -> None:
    values = {"capture_time": 5, "device": {"fw": "1.2"}, "site": "north gate"}
    manifest = Manifest.from_dict(values)
    assert manifest.extra == {"site": "north gate"}
    assert manifest.to_dict() == values


def test_region_from_pixels() -> None:
    assert Region.from_pixels(17, 0, 16, 31) == Region(1, 0, 2, 2)
    assert Region(1, 0, 2, 2).to_pixels() == (16, 0, 32, 32)
