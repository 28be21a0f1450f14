"""Protocol constants and the abort reason codes shared by both directions.

They live apart from the frame declarations because the protocol state machines, the spec
generator and the C-facing test vectors all need them without pulling in construct.
"""

from __future__ import annotations

from enum import IntEnum

PROTOCOL_VERSION = 1
"""The version a session start carries (3 bits on the wire; 0 is never valid)."""

DATA_HEADER_SIZE = 2
"""Bytes of header in a data fragment: the budget that SCHC-style addressing makes possible."""

START_HEADER_SIZE = 5
"""Bytes of header in a session start before its share of the session stream (fragment 0)."""

FRAGMENT_INDEX_BITS = 14
MAX_FRAGMENTS = (1 << FRAGMENT_INDEX_BITS) - 1
"""Fragments one session may use (indices 0..16382), so that an ACK's ``next`` (which can be one
past the last index) still fits its 14 bits."""

MAX_LAYER_COUNT = (1 << 14) - 1
"""Most layers a session can announce: the width of a layer-complete frame's count."""

MIN_MTU = 11
MAX_MTU = 1500
"""Uplink payload sizes the protocol is specified for (US915 DR0 to an Ethernet-sized bearer)."""

LATENT_UNIT_PIXELS = 16
"""One latent position of the codec covers a 16x16 pixel block; regions are in these units."""


class AbortReason(IntEnum):
    """Why a session ended without delivering everything (4 bits in either abort frame).

    Values 13-15 are reserved; a receiver MUST treat them as ``UNSPECIFIED``.
    """

    UNSPECIFIED = 0
    UNKNOWN_SESSION = 1
    """The server has no session for this device (lost start, server restart, evicted)."""
    TOO_MANY_RETRIES = 2
    """The sender exhausted its attempts or polls."""
    REJECTED = 3
    """The server application refused the session (model, geometry, manifest)."""
    SERVER_FULL = 4
    INTERNAL = 5
    UNSUPPORTED_VERSION = 6
    LIMIT_EXCEEDED = 7
    """A layer, the layer count, the stream or a header is larger than the server accepts."""
    IDLE_TIMEOUT = 8
    CANCELLED = 9
    """The device application gave the session up."""
    CORRUPTED = 10
    """Layers kept failing their CRC after retransmission."""
    MALFORMED = 11
    """A session descriptor or group header was well framed but meaningless."""
    UNKNOWN_REFERENCE = 12
    """The session is coded against a reference the server does not hold: none under that
    reference frame id, or one whose hash differs. The device codes the picture again without a
    reference (intra) in a new session; it never gets a picture decoded against the wrong state."""

    @classmethod
    def from_code(cls, code: int) -> AbortReason:
        """Map a wire value to a reason, folding the reserved values into UNSPECIFIED."""
        try:
            return cls(code)
        except ValueError:
            return cls.UNSPECIFIED

    @property
    def text(self) -> str:
        """The reason as the lower-case words a ``reason`` string uses ("unknown session")."""
        return self.name.lower().replace("_", " ")
