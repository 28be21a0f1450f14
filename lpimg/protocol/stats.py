"""Counters each side keeps of what it did and what it dropped.

Bad input never raises out of ``receive_frame``; it is counted here, so a gateway can export
these as metrics and a test can assert on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DeviceStats:
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
class ServerStats:
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
