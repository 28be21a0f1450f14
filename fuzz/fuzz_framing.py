"""Fuzz the serial deframers (SLIP and COBS, CRC-16): line noise must never crash or leak."""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from lpimg.link.framing import Deframer, encode_frame

from _harness import run

MAX_FRAME = 256


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    framing = "slip" if fdp.ConsumeBool() else "cobs"
    deframer = Deframer(framing, MAX_FRAME)
    while fdp.remaining_bytes():
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
        for frame in deframer.feed(chunk):
            # whatever comes out passed its CRC and respects the size bound
            assert 0 < len(frame) <= MAX_FRAME
            assert encode_frame(frame, framing)  # and can be sent again


if __name__ == "__main__":
    seeds = [encode_frame(b"\x01\x02\xc0\xdb", "slip"), b"\x00" + encode_frame(b"abc\x00", "cobs")]
    run(test_one_input, seeds)
