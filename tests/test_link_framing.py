"""SLIP/COBS + CRC-16 framing: known vectors, round trips, noise, bounded buffers."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpimg.errors import LinkError
from lpimg.link.framing import (
    Deframer,
    cobs_decode,
    cobs_encode,
    crc16,
    encode_frame,
    max_encoded_len,
    slip_escape,
    slip_unescape,
)

pytestmark = pytest.mark.timeout(60)

FRAMINGS = ["slip", "cobs"]
MTU = 64

frames_st = st.lists(st.binary(min_size=1, max_size=MTU), max_size=12)
# Bytes that are delimiters or escapes in either framing are over-represented on purpose.
noise_st = st.lists(
    st.one_of(st.sampled_from([0x00, 0xC0, 0xDB, 0xDC, 0xDD, 0xFF]), st.integers(0, 255)),
    max_size=40,
).map(bytes)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def test_crc16_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1  # the catalogue check value
    assert crc16(b"") == 0xFFFF


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [  # Wikipedia's COBS examples
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
        (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
        (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
        (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    ],
)
def test_cobs_known_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


def test_slip_escapes_per_rfc1055() -> None:
    assert slip_escape(b"\xc0\xdb\x01") == b"\xdb\xdc\xdb\xdd\x01"
    assert slip_unescape(b"\xdb\xdc\xdb\xdd\x01") == b"\xc0\xdb\x01"
    for bad in (b"\xdb", b"ab\xdb\x01", b"a\xc0b"):
        with pytest.raises(ValueError):
            slip_unescape(bad)


def test_frame_layout() -> None:
    frame = b"\x01\xc0\x02"
    crc = crc16(frame).to_bytes(2, "big")
    assert encode_frame(frame, "slip") == b"\xc0" + slip_escape(frame + crc) + b"\xc0"
    assert encode_frame(frame, "cobs") == b"\x00" + cobs_encode(frame + crc) + b"\x00"
    with pytest.raises(LinkError):
        encode_frame(frame, "hdlc")  # type: ignore[arg-type]
    with pytest.raises(LinkError):
        Deframer("hdlc")  # type: ignore[arg-type]


@given(data=st.binary(max_size=600))
def test_cobs_round_trip_and_no_zero(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert len(encoded) <= max_encoded_len(len(data), "cobs")
    assert cobs_decode(encoded) == data


@pytest.mark.parametrize("framing", FRAMINGS)
@given(frames=frames_st, cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_any_frame_list_survives_any_chunking(framing: str, frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f, framing) for f in frames)  # type: ignore[arg-type]
    deframer = Deframer(framing, MTU)  # type: ignore[arg-type]
    out = [f for chunk in chunked(stream, cuts) for f in deframer.feed(chunk)]
    assert out == frames
    assert not deframer.rejected
    assert deframer.buffered == 0


@pytest.mark.parametrize("framing", FRAMINGS)
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=frames_st,
    noises=st.lists(noise_st, min_size=13, max_size=13),
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
)
def test_noise_between_frames_never_corrupts_or_invents(
    framing: str, frames: list[bytes], noises: list[bytes], cuts: list[int]
) -> None:
    """Every frame sent survives whatever garbage precedes it, and the only extra frames are
    those the garbage alone would decode to (a noise burst that happens to carry a valid CRC):
    noise can never merge with, truncate or alter a real frame."""
    stream = b""
    expected: list[bytes] = []
    for i, frame in enumerate(frames):
        stream += noises[i] + encode_frame(frame, framing)  # type: ignore[arg-type]
        delim = b"\xc0" if framing == "slip" else b"\x00"
        expected += Deframer(framing, MTU).feed(delim + noises[i] + delim)  # type: ignore[arg-type]
        expected.append(frame)
    deframer = Deframer(framing, MTU)  # type: ignore[arg-type]
    out = [f for chunk in chunked(stream, cuts) for f in deframer.feed(chunk)]
    assert out == expected
    for f in out:
        assert 1 <= len(f) <= MTU


@pytest.mark.parametrize("framing", FRAMINGS)
@given(garbage=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_garbage_never_raises_and_stays_bounded(framing: str, garbage: bytes, cuts: list[int]) -> None:
    deframer = Deframer(framing, MTU)  # type: ignore[arg-type]
    limit = max_encoded_len(MTU + 2, framing)  # type: ignore[arg-type]
    for chunk in chunked(garbage, cuts):
        for frame in deframer.feed(chunk):
            assert 1 <= len(frame) <= MTU
        assert deframer.buffered <= limit


@pytest.mark.parametrize("framing", FRAMINGS)
def test_each_kind_of_damage_is_counted(framing: str) -> None:
    seen: list[str] = []
    deframer = Deframer(framing, 16, on_reject=seen.append)  # type: ignore[arg-type]
    good = encode_frame(b"hello", framing)  # type: ignore[arg-type]
    flipped = bytearray(good)
    flipped[2] ^= 0x01
    half = good[: len(good) // 2]
    long = encode_frame(b"x" * 17, framing)  # type: ignore[arg-type]
    endless = b"\x01" * 10_000  # no delimiter for a long time
    runt = b"\xc0\x01\xc0" if framing == "slip" else b"\x00\x02\x01\x00"
    stream = bytes(flipped) + half + long + endless + good + runt + good
    assert deframer.feed(stream) == [b"hello", b"hello"]
    assert deframer.rejected["crc"] >= 1
    assert deframer.rejected["oversize"] == 2
    assert deframer.rejected["runt"] == 1
    assert deframer.buffered == 0
    assert sorted(seen) == sorted(deframer.rejected.elements())
    if framing == "slip":
        assert Deframer("slip").feed(b"\xc0ab\xdb\x01cd\xc0") == []


@pytest.mark.parametrize("framing", FRAMINGS)
def test_largest_frame_passes_one_more_byte_does_not(framing: str) -> None:
    deframer = Deframer(framing, 240)  # type: ignore[arg-type]
    worst = b"\xc0\xdb\x00" * 80  # maximal escaping / zeros
    assert deframer.feed(encode_frame(worst, framing)) == [worst]  # type: ignore[arg-type]
    assert deframer.feed(encode_frame(worst + b"\xc0", framing)) == []  # type: ignore[arg-type]
    assert deframer.rejected == {"oversize": 1}
