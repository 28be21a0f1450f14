"""Counters each side keeps of what it did and what it dropped.

Bad input never raises out of ``receive_frame``; it is counted here, so a gateway can export
these as metrics and a test can assert on them. Besides the historical named counters, every
rejection is counted by cause in ``rejections`` (a stable, small set of names, listed in
:data:`SERVER_CAUSES` and :data:`DEVICE_CAUSES`), and the causes of the latest rejections wait
in a short queue (:meth:`take_fresh`) so that an endpoint can log each (cause, device) once
without diffing counters.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

SERVER_CAUSES: dict[str, str] = {
    "malformed": "an uplink that does not parse",
    "unknown_session": "a frame for a session the server does not hold",
    "out_of_window": "a fragment beyond the receive span",
    "bad_length": "a fragment whose length cannot be right for its index",
    "after_finish": "data for a session that has ended",
    "bad_record": "a record that failed its CRC-32 (plain) or its AES-CMAC tag (authenticated)",
    "unsupported_version": "a session start of another protocol version",
    "limit": "a session start over a limit (fragment size)",
    "server_full": "a session start while every session slot is busy",
    "auth_required": "a plain session start from a device that has a key",
    "no_key": "an authenticated session start from a device without a key",
}
"""Why a server drops or refuses an uplink (the keys of ``ServerStats.rejections``)."""

DEVICE_CAUSES: dict[str, str] = {
    "malformed": "a downlink that does not parse",
    "bad_mic": "a sealed downlink whose MIC does not verify (forged, damaged, another key)",
    "replay": "a sealed downlink whose counter is not above the last accepted one",
    "unexpected": "a downlink that makes no sense now (stale refine, count past the plan)",
    "after_finish": "a downlink after the session ended",
}
"""Why a device drops a downlink (the keys of ``DeviceStats.rejections``)."""

FRESH_QUEUE = 64


@dataclass
class _Rejections:
    rejections: dict[str, int] = field(default_factory=dict)
    """Rejected frames by cause."""
    _fresh: deque[str] = field(
        default_factory=lambda: deque(maxlen=FRESH_QUEUE), repr=False, compare=False
    )

    def reject(self, cause: str) -> None:
        """Count one rejection (and queue its cause for :meth:`take_fresh`)."""
        self.rejections[cause] = self.rejections.get(cause, 0) + 1
        self._fresh.append(cause)

    def take_fresh(self) -> list[str]:
        """Causes of the rejections since the last call (at most the last 64), oldest first."""
        fresh = list(self._fresh)
        self._fresh.clear()
        return fresh

    @property
    def rejected(self) -> int:
        """Every rejection, whatever its cause."""
        return sum(self.rejections.values())


@dataclass
class DeviceStats(_Rejections):
    """What one device session sent and received."""

    uplinks: int = 0
    fragments_sent: int = 0
    retransmissions: int = 0
    ack_requests: int = 0
    polls: int = 0
    restarts: int = 0
    acknowledged_resent: int = 0
    """Fragments sent again after the server had reported them held (a server that forgot
    what it acknowledged: a restart without its state, or an eviction)."""
    downlinks: int = 0
    malformed: int = 0
    """Downlinks that did not parse."""
    unexpected: int = 0
    """Downlinks that parsed but made no sense now (stale refine, count past the plan...)."""
    after_finish: int = 0


@dataclass
class ServerStats(_Rejections):
    """What a server saw across all devices."""

    uplinks: int = 0
    downlinks: int = 0
    malformed: int = 0
    """Uplinks that did not parse."""
    unknown_session: int = 0
    duplicates: int = 0
    out_of_window: int = 0
    bad_length: int = 0
    """Fragments whose length cannot be right for their index."""
    after_finish: int = 0
    crc_failures: int = 0
    sessions_started: int = 0
    sessions_rejected: int = 0
    sessions_evicted: int = 0
    limit_rejections: dict[str, int] = field(default_factory=dict)
    """What the resource bounds refused or ended, by cause: the config field that was hit
    (``max_active_sessions``, ``max_sessions``, ``max_total_buffer``, ``max_session_buffer``,
    ``rate_limit``, ``start_timeout``, ``idle_timeout``, ``max_layers``...)."""

    def limited(self, cause: str) -> None:
        """Count one rejection by a resource bound."""
        self.limit_rejections[cause] = self.limit_rejections.get(cause, 0) + 1
