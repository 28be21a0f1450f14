"""Byte-stream framing for serial links: SLIP or COBS around a frame plus a CRC-16.

A LoRa modem in transparent mode, a UART or a TCP serial bridge moves a stream of bytes, not
frames, and it corrupts, drops and invents bytes. Each lpimg frame is therefore sent as::

    frame || CRC-16/CCITT-FALSE(frame), big-endian      (2 bytes)

wrapped in one of two framings (the two ends must agree, ``?framing=`` in the link URL):

``slip``
    RFC 1055: ``END (0xC0)`` + body with ``0xC0 -> 0xDB 0xDC`` and ``0xDB -> 0xDB 0xDD`` + ``END``.
    Up to 2x overhead on unlucky data; widely understood (Wireshark, many modem firmwares).
``cobs``
    Consistent Overhead Byte Stuffing with ``0x00`` as delimiter: ``0x00`` + COBS(body) +
    ``0x00``. At most 1 byte per 254 of overhead, which matters at 240-byte MTUs.

Both put the delimiter *before* as well as after the body (RFC 1055 recommends the leading
END): whatever line noise or half frame preceded is then closed off and discarded on its own
instead of corrupting the good frame that follows.

CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout; check value of
``b"123456789"`` is ``0x29B1``) catches every error burst up to 16 bits and all but 1 in 65536 of
the rest, which is enough for the short noisy runs between frames; the protocol adds its own
end-to-end checks on top.

:class:`Deframer` is sans-I/O: feed it whatever chunks the port produced, get back good frames.
It never raises on input; everything it throws away is counted by cause.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Literal, get_args

import crcmod.predefined

from lpimg.errors import LinkError

Framing = Literal["slip", "cobs"]
FRAMINGS: tuple[str, ...] = get_args(Framing)

CRC_LEN = 2

crc16: Callable[[bytes], int] = crcmod.predefined.mkCrcFun("crc-ccitt-false")
"""CRC-16/CCITT-FALSE of ``data`` as an int (``crc16(b"123456789") == 0x29B1``)."""

SLIP_END = 0xC0
SLIP_ESC = 0xDB
SLIP_ESC_END = 0xDC
SLIP_ESC_ESC = 0xDD

_SLIP_END_B = bytes([SLIP_END])
_SLIP_ESC_B = bytes([SLIP_ESC])
_COBS_DELIM = b"\x00"


def slip_escape(data: bytes) -> bytes:
    """Escape ``data`` for SLIP (without the END delimiters)."""
    return data.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")


def slip_unescape(data: bytes) -> bytes:
    """Undo :func:`slip_escape`. Raises ``ValueError`` on an END or a bad or dangling escape.

    RFC 1055 tolerates a bad escape by keeping the byte; we refuse the frame instead, because a
    bad escape on a noisy line means the frame is damaged anyway.
    """
    if _SLIP_END_B in data:
        raise ValueError("SLIP END inside a frame")
    if _SLIP_ESC_B not in data:
        return data
    parts = data.split(_SLIP_ESC_B)
    out = bytearray(parts[0])
    for part in parts[1:]:
        if not part:
            raise ValueError("dangling SLIP escape")
        if part[0] == SLIP_ESC_END:
            out.append(SLIP_END)
        elif part[0] == SLIP_ESC_ESC:
            out.append(SLIP_ESC)
        else:
            raise ValueError(f"bad SLIP escape 0xDB 0x{part[0]:02X}")
        out += part[1:]
    return bytes(out)


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiter added); canonical form, as in Cheshire & Baker 1999.

    ``b"\\x00" -> b"\\x01\\x01"``; 254 non-zero bytes -> ``0xFF`` + the bytes (no trailing code).
    """
    out = bytearray()
    segments = data.split(_COBS_DELIM)
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        while len(segment) >= 254:
            out.append(0xFF)
            out += segment[:254]
            segment = segment[254:]
            if not segment and last:
                # A full block at the very end needs no closing code: 0xFF implies no zero.
                return bytes(out)
        out.append(len(segment) + 1)
        out += segment
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS block sequence (without delimiter). Raises ``ValueError`` if malformed."""
    if _COBS_DELIM in data:
        raise ValueError("zero byte inside a COBS frame")
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        end = i + code
        if end > n:
            raise ValueError("COBS block runs past the end of the frame")
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def max_encoded_len(n: int, framing: Framing) -> int:
    """Upper bound of the encoded size of an ``n``-byte body, delimiters excluded."""
    if framing == "slip":
        return 2 * n
    return n + n // 254 + 1


def check_framing(framing: str) -> Framing:
    if framing not in FRAMINGS:
        raise LinkError(f"unknown framing {framing!r}; expected one of {', '.join(FRAMINGS)}")
    return framing  # type: ignore[return-value]


def encode_frame(frame: bytes, framing: Framing = "slip") -> bytes:
    """The bytes to write to the line for ``frame``: delimiter, escaped frame + CRC, delimiter."""
    body = bytes(frame) + crc16(bytes(frame)).to_bytes(CRC_LEN, "big")
    if framing == "slip":
        return _SLIP_END_B + slip_escape(body) + _SLIP_END_B
    if framing == "cobs":
        return _COBS_DELIM + cobs_encode(body) + _COBS_DELIM
    raise LinkError(f"unknown framing {framing!r}")


RejectCallback = Callable[[str], None]


class Deframer:
    """Incremental, bounded deframer: ``feed(chunk) -> [good frames]``.

    ``max_frame`` is the largest frame (CRC excluded) accepted; the buffer never holds more than
    the encoded size of such a frame, so a line that never sends a delimiter cannot grow memory.
    Candidates between two delimiters are dropped with a cause counted in :attr:`rejected` (and
    passed to ``on_reject``): ``oversize``, ``bad_framing``, ``runt`` (shorter than one byte plus
    the CRC), ``crc``. An empty candidate (two delimiters in a row, e.g. the trailing delimiter
    of one frame and the leading one of the next) is normal and not counted.
    """

    def __init__(
        self,
        framing: Framing = "slip",
        max_frame: int = 255,
        on_reject: RejectCallback | None = None,
    ) -> None:
        self.framing: Framing = check_framing(framing)
        if max_frame < 1:
            raise LinkError(f"max_frame must be at least 1, got {max_frame}")
        self.max_frame = max_frame
        self.on_reject = on_reject
        self.rejected: Counter[str] = Counter()
        self.frames = 0
        self._delim = _SLIP_END_B if framing == "slip" else _COBS_DELIM
        self._decode = slip_unescape if framing == "slip" else cobs_decode
        self._raw_limit = max_encoded_len(max_frame + CRC_LEN, self.framing)
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished candidate held right now (never above the encoded bound)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Consume a chunk of the byte stream; return the frames completed by it, in order."""
        out: list[bytes] = []
        pieces = bytes(data).split(self._delim)
        self._extend(pieces[0])
        for piece in pieces[1:]:
            self._finish(out)
            self._extend(piece)
        return out

    def _reject(self, cause: str) -> None:
        self.rejected[cause] += 1
        if self.on_reject is not None:
            self.on_reject(cause)

    def _extend(self, piece: bytes) -> None:
        if self._discarding or not piece:
            return
        if len(self._buf) + len(piece) > self._raw_limit:
            self._buf.clear()
            self._discarding = True
            self._reject("oversize")
            return
        self._buf += piece

    def _finish(self, out: list[bytes]) -> None:
        if self._discarding:
            self._discarding = False
            return
        if not self._buf:
            return
        raw = bytes(self._buf)
        self._buf.clear()
        try:
            body = self._decode(raw)
        except ValueError:
            self._reject("bad_framing")
            return
        if len(body) <= CRC_LEN:
            self._reject("runt")
            return
        if len(body) > self.max_frame + CRC_LEN:
            self._reject("oversize")
            return
        frame, crc = body[:-CRC_LEN], body[-CRC_LEN:]
        if crc16(frame) != int.from_bytes(crc, "big"):
            self._reject("crc")
            return
        self.frames += 1
        out.append(frame)
