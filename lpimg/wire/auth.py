"""Byte layout of authenticated sessions: the sealed downlink and the tag sizes.

An authenticated session (one opened with START_AUTH, section 15 of spec/PROTOCOL.md) keeps
every frame and record of a plain one, with two changes of layout, both declared here:

- a record's 4-byte check is a truncated AES-CMAC tag instead of a CRC-32 (same size, so
  fragment sizes, F0 and every offset stay those of a plain session);
- every downlink frame is followed by a 4-byte downlink counter and a 4-byte MIC::

      frame (as in section 4) | counter (uint32 big-endian) | MIC (4 bytes)

Which bytes the tags cover (the domain-separated MIC inputs) is defined with the checks in
:mod:`lpimg.protocol.auth`; here is only where they sit.
"""

from __future__ import annotations

from construct import Bytes, Int32ub, Struct, Terminated

from lpimg.errors import WireError

TAG_SIZE = 4
"""Bytes of a truncated AES-CMAC tag: a record check (replacing the CRC-32) or a downlink MIC."""

COUNTER_SIZE = 4
"""Bytes of the downlink counter of a sealed downlink."""

MAX_COUNTER = (1 << 32) - 1

SEALED_TRAILER = Struct(
    "counter" / Int32ub * "downlink counter: above every counter the device accepted before",
    "mic" / Bytes(TAG_SIZE) * "AES-CMAC over the domain, counter and frame, first 4 bytes",
    Terminated,
)
"""What follows the frame of every downlink of an authenticated session."""

TRAILER_SIZE = COUNTER_SIZE + TAG_SIZE

_TRAILER = SEALED_TRAILER.compile()


def seal_layout(frame: bytes, counter: int, mic: bytes) -> bytes:
    """The bytes of a sealed downlink: ``frame`` then its trailer."""
    if not 0 <= counter <= MAX_COUNTER:
        raise WireError(f"downlink counter {counter} does not fit 32 bits")
    if len(mic) != TAG_SIZE:
        raise WireError(f"a MIC is {TAG_SIZE} bytes, got {len(mic)}")
    return bytes(frame) + bytes(_TRAILER.build({"counter": counter, "mic": bytes(mic)}))


def split_sealed(data: bytes) -> tuple[bytes, int, bytes]:
    """(frame, counter, MIC) of a sealed downlink; WireError if it cannot be one.

    Only the layout is checked here (a frame of at least one byte before the trailer); the
    frame itself is parsed, and the MIC verified, by the caller.
    """
    if len(data) < 1 + TRAILER_SIZE:
        raise WireError(
            f"a sealed downlink is a frame and a {TRAILER_SIZE}-byte trailer; got {len(data)} bytes"
        )
    cut = len(data) - TRAILER_SIZE
    trailer = _TRAILER.parse(bytes(data[cut:]))
    return bytes(data[:cut]), int(trailer.counter), bytes(trailer.mic)
