"""Every timer, attempt budget and memory limit of the protocol, in one dataclass.

One ``ProtocolConfig`` serves both sides (each reads the fields it needs), so a test or a
simulation can tighten a limit once and have both ends agree. Times are seconds of whatever
clock the caller passes as ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lpimg.wire import CRC_SIZE, MAX_MTU, MIN_MTU

RECEIVE_SPAN = 64
"""Protocol constant, not configurable: a device MUST NOT send fragment ``i`` unless
``i < next + RECEIVE_SPAN`` for the ``next`` of the latest ACK it received (0 before any), and a
server MAY discard fragments at or beyond its own ``next + RECEIVE_SPAN``. It bounds the
server's out-of-order buffer and the ACK bitmap (at most 8 bytes)."""

MIN_FRAGMENT_SIZE = MIN_MTU - 2
"""The smallest fragment size a server accepts in a session start."""


@dataclass(frozen=True)
class ProtocolConfig:
    """Tunable behaviour; the defaults suit LoRaWAN EU868 with a 1 % duty cycle."""

    # -- device ----------------------------------------------------------------------------
    window: int = 32
    """Fragments sent between two ACK requests (the last of a window carries the flag). 32
    keeps the bitmap within 4 bytes and acknowledges a 2 kB layer at 51 bytes in 2 downlinks."""
    ack_timeout: float = 20.0
    """Seconds after an ACK request before the device may poll. It must exceed the uplink
    airtime plus the class A RX2 delay (2 s) and window; the duty cycle usually delays the
    poll much longer anyway."""
    max_polls: int = 12
    """Consecutive polls without any downlink, after which the device gives up. With 30 %
    loss each way a poll goes unanswered half the time; 12 in a row happens once in 3,000."""
    max_stalled_polls: int = 24
    """Polls answered without any progress (no new fragment acknowledged, no layer verified),
    after which the device gives up: it bounds a session whose ends disagree."""
    max_attempts: int = 10
    """Transmissions of one fragment before the device gives up on the session."""
    max_restarts: int = 2
    """Times the device starts its session afresh after the server, which had acknowledged
    part of it, answers 'unknown session' (a server restart or eviction). A start frame that
    was simply lost is re-sent without counting here: fragment 0's attempts bound that."""
    refine_timeout: float = 600.0
    """Seconds the device application has to answer a refine request before the device
    declines it on its behalf (an empty group), so the server is not kept waiting."""
    ack_each_layer: bool = False
    """Also request an ACK on the last fragment of every layer (costs one downlink per layer;
    the default requests one per window and at the end of the stream)."""

    # -- server ----------------------------------------------------------------------------
    max_sessions: int = 1024
    """Sessions (one per device address) held at once, finished ones included until evicted."""
    max_layers: int = 1024
    """Layers one session may announce, refinements included."""
    max_layer_bytes: int = 65536
    """Largest layer, CRC excluded."""
    max_session_bytes: int = 1 << 20
    """Largest session stream (all records of all groups)."""
    max_header_bytes: int = 512
    """Largest descriptor or group header body (manifest included)."""
    max_fragment_size: int = MAX_MTU - 2
    """Largest fragment size F a session start may declare."""
    max_crc_failures: int = 4
    """Records that may fail their CRC (and be re-requested) before the session is aborted."""
    max_pending_refines: int = 4
    """Refine requests queued for one session; they are sent one at a time, in order."""
    idle_timeout: float = 3 * 86400.0
    """Seconds without an uplink after which an active session ends (completed if everything
    announced was delivered, aborted otherwise). Generous: under The Things Network's fair
    use a DR0 device sends about ten frames a day."""
    finished_retention: float = 86400.0
    """Seconds a finished session is remembered, so late polls get a proper answer."""
    downlink_mtu: int = 51
    """Largest downlink payload; only the ACK bitmap can grow, and is truncated to fit."""

    # -- server resource bounds (see spec section 7.7) -------------------------------------
    max_active_sessions: int = 1024
    """Sessions being received at once; a start beyond it is answered ABORT(SERVER_FULL) and
    the sessions already running are served as before."""
    max_session_buffer: int = 192 * 1024
    """Bytes one session may buffer. A start whose F, or a header whose largest layer record,
    could need more (the record plus 66 fragments) is refused with LIMIT_EXCEEDED, so a session
    admitted can always finish. The default admits every layer ``max_layer_bytes`` allows."""
    max_total_buffer: int = 128 << 20
    """Bytes all sessions together may buffer. Each admitted session reserves what it may need
    (the lesser of ``max_session_buffer`` and its worst case at its F) until it ends; a start
    that does not fit is answered ABORT(SERVER_FULL), so established sessions never starve."""
    start_timeout: float = 6 * 3600.0
    """Seconds an active session may go without a verified descriptor before it is dropped
    (aborted, IDLE_TIMEOUT): a start that leads nowhere does not hold a slot for days."""
    rate_limit: float | None = None
    """Frames per second one device address may send (a token bucket of ``rate_burst``
    frames); frames over it are dropped unread and unanswered. None: no limit."""
    rate_burst: int = 64
    """Frames a device may send at once before ``rate_limit`` applies."""

    def __post_init__(self) -> None:
        checks = {
            "window": 1 <= self.window <= RECEIVE_SPAN,
            "ack_timeout": self.ack_timeout > 0,
            "max_polls": self.max_polls >= 1,
            "max_stalled_polls": self.max_stalled_polls >= 1,
            "max_attempts": self.max_attempts >= 1,
            "max_restarts": self.max_restarts >= 0,
            "refine_timeout": self.refine_timeout > 0,
            "max_sessions": self.max_sessions >= 1,
            "max_layers": self.max_layers >= 1,
            "max_layer_bytes": self.max_layer_bytes >= 0,
            "max_session_bytes": self.max_session_bytes >= 1,
            "max_header_bytes": self.max_header_bytes >= 16,
            "max_fragment_size": self.max_fragment_size >= MIN_FRAGMENT_SIZE,
            "max_crc_failures": self.max_crc_failures >= 0,
            "max_pending_refines": self.max_pending_refines >= 1,
            "idle_timeout": self.idle_timeout > 0,
            "finished_retention": self.finished_retention >= 0,
            "downlink_mtu": self.downlink_mtu >= 3,
            "max_active_sessions": self.max_active_sessions >= 1,
            "max_session_buffer": self.max_session_buffer
            >= self.buffer_need(MIN_FRAGMENT_SIZE, self.max_header_bytes + 8),
            "max_total_buffer": self.max_total_buffer >= 1,
            "start_timeout": self.start_timeout > 0,
            "rate_limit": self.rate_limit is None or self.rate_limit > 0,
            "rate_burst": self.rate_burst >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid ProtocolConfig value(s): {', '.join(bad)}")

    @staticmethod
    def buffer_need(fragment_size: int, record: int) -> int:
        """Most bytes a server buffers for a record of ``record`` bytes at fragment size F: the
        record, the fragment it shares with the previous one, and the out-of-order span."""
        return record + fragment_size * (RECEIVE_SPAN + 2)

    def session_reservation(self, fragment_size: int) -> int:
        """What an admitted session reserves of ``max_total_buffer``."""
        return min(self.max_session_buffer, self.session_memory_bound(fragment_size))

    def session_memory_bound(self, fragment_size: int) -> int:
        """Most payload bytes a server holds for one session: the record being reassembled,
        the fragment it shares with the previous one, and the out-of-order span."""
        record = max(self.max_layer_bytes, self.max_header_bytes + 4) + CRC_SIZE
        return record + fragment_size * (RECEIVE_SPAN + 2)
