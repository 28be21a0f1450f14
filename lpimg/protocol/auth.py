"""Authenticated sessions: per-device keys, record tags and sealed downlinks (no I/O).

For links without security of their own (a raw LoRa modem, plain MQTT) a device may be
provisioned with a 128-bit key that the server also holds (a mapping of device id -> key;
:class:`lpimg.endpoint.keys.KeyStore` reads one from a file). Its sessions then start with
START_AUTH, and (spec/PROTOCOL.md section 15):

- every record of the stream closes with ``AES-CMAC(K, "lpimg" 01 "R" | session id | record
  number | record bytes)`` truncated to 4 bytes instead of a CRC-32: the server delivers
  nothing the key holder did not send, for this session, at this place in the stream;
- every downlink is sealed with a 32-bit counter and ``AES-CMAC(K, "lpimg" 01 "D" | session id
  | counter | frame)`` truncated to 4 bytes; the device accepts a downlink only if the MIC
  verifies for its own session and the counter is above the last one it accepted, so a
  downlink can be neither forged, nor replayed, nor carried over from another session (an
  answer the server sent for the previous session, delivered late, must not complete the
  next one). Answers to a device the server holds no such session for (it cannot know the
  session id of a DATA or POLL) use the label "U" and no session id, and a device accepts
  only an ABORT under that label.

The counter is per device and never goes back, across sessions and server restarts, without
the server having to store it: a server uses ``max(last + 1, clock)`` with ``clock`` whole
seconds of Unix time (:meth:`DownlinkSealer.next_counter`), which stays above every counter it
used before a restart as long as a device gets at most one downlink a second on average.

The MIC inputs are domain separated (a fixed 7-byte label per use, then fixed-size fields), so
a tag computed for one purpose never verifies for another. Comparisons are constant-time.
"""

from __future__ import annotations

import hmac
import math
from collections import OrderedDict

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from lpimg.errors import LpimgError, WireError
from lpimg.wire import TAG_SIZE, seal_layout, split_sealed
from lpimg.wire.auth import MAX_COUNTER
from lpimg.wire.records import RecordCheck

KEY_SIZE = 16
"""AES-128: a provisioned device key is 16 bytes."""

RECORD_DOMAIN = b"lpimg\x01R"
DOWNLINK_DOMAIN = b"lpimg\x01D"
"""A downlink about the device's session: the MIC covers the session id."""
NO_SESSION_DOMAIN = b"lpimg\x01U"
"""A server ABORT to a device it holds no session for (or not the one named)."""


class AuthError(LpimgError):
    """A key is unusable, or a key file cannot be read."""


def check_key(key: bytes) -> bytes:
    """``key`` as bytes, or AuthError if it is not a 128-bit key."""
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise AuthError(f"a device key is {KEY_SIZE} bytes (128 bits)")
    return bytes(key)


def cmac(key: bytes, message: bytes) -> bytes:
    """The full 16-byte AES-CMAC (RFC 4493) of ``message``."""
    mac = CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


def record_tag(key: bytes, session_id: int, record: int, covered: bytes) -> bytes:
    """The 4-byte check of record number ``record`` (0 = the descriptor) of a session."""
    message = RECORD_DOMAIN + session_id.to_bytes(2, "big") + record.to_bytes(4, "big") + covered
    return cmac(key, message)[:TAG_SIZE]


def record_check(key: bytes, session_id: int, record: int) -> RecordCheck:
    """The check function :mod:`lpimg.wire.records` applies to one record."""
    return lambda covered: record_tag(key, session_id, record, covered)


def downlink_mic(key: bytes, counter: int, frame: bytes, session_id: int | None) -> bytes:
    """The 4-byte MIC of a downlink frame sent with ``counter`` about session ``session_id``
    (None: an answer that belongs to no session the server holds)."""
    if session_id is None:
        message = NO_SESSION_DOMAIN + counter.to_bytes(4, "big") + frame
    else:
        message = DOWNLINK_DOMAIN + session_id.to_bytes(2, "big") + counter.to_bytes(4, "big") + frame
    return cmac(key, message)[:TAG_SIZE]


def seal_downlink(key: bytes, counter: int, frame: bytes, session_id: int | None) -> bytes:
    """A downlink frame with its counter and MIC appended."""
    return seal_layout(frame, counter, downlink_mic(key, counter, frame, session_id))


class DownlinkRejected(LpimgError):
    """A sealed downlink failed: ``cause`` is "malformed", "bad_mic" or "replay"."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def open_downlink(key: bytes, data: bytes, last_counter: int, session_id: int) -> tuple[bytes, int]:
    """(frame, counter) of a sealed downlink for session ``session_id`` that verifies and is
    fresh.

    Raises :class:`DownlinkRejected`: "malformed" if it cannot be a sealed frame, "bad_mic" if
    the MIC does not verify (forged, damaged, another key, another session; under the
    no-session label anything but an ABORT), "replay" if the MIC verifies but the counter is
    not above ``last_counter``. The MIC is checked before the counter, so an unauthenticated
    frame never reads as a replay.
    """
    try:
        frame, counter, mic = split_sealed(data)
    except WireError as error:
        raise DownlinkRejected("malformed", str(error)) from error
    bound = hmac.compare_digest(downlink_mic(key, counter, frame, session_id), mic)
    unbound = hmac.compare_digest(downlink_mic(key, counter, frame, None), mic)
    if not (bound or (unbound and _is_server_abort(frame))):
        raise DownlinkRejected("bad_mic", "downlink MIC does not verify")
    if counter <= last_counter:
        raise DownlinkRejected("replay", f"downlink counter {counter} is not above {last_counter}")
    return frame, counter


def _is_server_abort(frame: bytes) -> bool:
    return len(frame) == 1 and frame[0] >> 4 == 0b1101


class DownlinkSealer:
    """The server's downlink counters, one per device, and the sealing of frames.

    Counters are kept for at most ``capacity`` devices (least recently used forgotten); a
    forgotten device, like every device after a restart, continues from the clock.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._last: OrderedDict[str, int] = OrderedDict()

    def next_counter(self, device: str, clock: float) -> int:
        """The counter for the next downlink to ``device`` (``clock``: Unix seconds)."""
        floor = min(MAX_COUNTER, max(0, math.floor(clock)))
        counter = min(MAX_COUNTER, max(self._last.get(device, 0) + 1, floor))
        self._last[device] = counter
        self._last.move_to_end(device)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)
        return counter

    def seal(
        self, key: bytes, device: str, frame: bytes, clock: float, session_id: int | None
    ) -> bytes:
        return seal_downlink(key, self.next_counter(device, clock), frame, session_id)
