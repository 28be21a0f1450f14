"""Transmit budgets: the regulatory duty cycle and The Things Network's fair-use policy.

On a LoRaWAN link these budgets, not the bit rate, decide how long an image takes: at EU868 DR0
a full frame is 2.79 s on air, after which the 1 % duty cycle keeps the device silent for
another 276 s. Both are modelled as "earliest time the next transmission may start", which is
what a well-behaved LoRaWAN stack computes before it keys the radio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lpimg.errors import LinkError


class DutyCycle:
    """Duty-cycle bookkeeping over one or more sub-bands.

    After a transmission of airtime T in a sub-band, that sub-band stays closed for
    T * (1/dc - 1), i.e. until ``start + T / dc``. With several sub-bands the transmitter takes
    whichever opens first, as LoRaMac-node's channel selection does.
    """

    def __init__(self, fraction: float, sub_bands: int = 1) -> None:
        if not 0.0 < fraction <= 1.0:
            raise LinkError(f"duty cycle must be in (0, 1], got {fraction}")
        if sub_bands < 1:
            raise LinkError(f"sub_bands must be >= 1, got {sub_bands}")
        self.fraction = fraction
        self._open_at = [-math.inf] * sub_bands

    def ready_at(self) -> float:
        """Earliest time any sub-band accepts a transmission."""
        return min(self._open_at)

    def transmit(self, start: float, airtime: float) -> None:
        """Charge a transmission starting at ``start`` to the first open sub-band."""
        band = min(range(len(self._open_at)), key=self._open_at.__getitem__)
        if self._open_at[band] > start + 1e-9:
            raise LinkError(
                f"transmission at t={start:.3f} s violates the duty cycle "
                f"(next allowed at {self._open_at[band]:.3f} s)"
            )
        self._open_at[band] = start + airtime / self.fraction


@dataclass(frozen=True)
class FairUsePolicy:
    """A per-device airtime and downlink allowance per fixed time window.

    The default is The Things Network's fair-use policy: 30 s of uplink airtime and 10 downlinks
    per device per 24 h.
    """

    uplink_airtime_s: float = 30.0
    downlinks: int = 10
    window_s: float = 86_400.0

    def __post_init__(self) -> None:
        if self.uplink_airtime_s <= 0 or self.downlinks < 0 or self.window_s <= 0:
            raise LinkError(f"fair-use policy needs positive budgets and window, got {self}")


TTN_FAIR_USE = FairUsePolicy()


class FairUseBudget:
    """Enforces a :class:`FairUsePolicy` over fixed windows ``[k * window_s, (k + 1) * window_s)``.

    Policy chosen for uplinks: **delay, never refuse**. The device is not asked for a frame
    unless the current window still has room for a frame of the largest size the link allows
    (``worst_uplink_airtime_s``); otherwise it waits for the next window. Checking the worst case
    before asking keeps the sans-I/O contract intact (a frame the device produced is always sent
    at once) at the price of leaving up to one full frame's airtime of each window unused.
    Downlinks beyond the allowance are simply not offered: the server is not asked in that window.
    """

    def __init__(self, policy: FairUsePolicy, worst_uplink_airtime_s: float) -> None:
        if worst_uplink_airtime_s > policy.uplink_airtime_s:
            raise LinkError(
                f"a full frame needs {worst_uplink_airtime_s:.3f} s of airtime, more than the "
                f"whole fair-use budget of {policy.uplink_airtime_s} s per window"
            )
        self.policy = policy
        self._worst = worst_uplink_airtime_s
        self._airtime: dict[int, float] = {}
        self._downlinks: dict[int, int] = {}

    def _window(self, now: float) -> int:
        return math.floor(now / self.policy.window_s)

    def uplink_ready_at(self, now: float) -> float:
        """``now`` if a full frame still fits this window, else the start of the next window."""
        window = self._window(now)
        if self._airtime.get(window, 0.0) + self._worst <= self.policy.uplink_airtime_s:
            return now
        return (window + 1) * self.policy.window_s

    def charge_uplink(self, now: float, airtime: float) -> None:
        """Book an uplink's airtime to the window it starts in."""
        window = self._window(now)
        self._airtime[window] = self._airtime.get(window, 0.0) + airtime

    def downlink_allowed(self, now: float) -> bool:
        """Whether another downlink fits the window containing ``now``."""
        return self._downlinks.get(self._window(now), 0) < self.policy.downlinks

    def charge_downlink(self, now: float) -> None:
        """Book one downlink to the window containing ``now``."""
        window = self._window(now)
        self._downlinks[window] = self._downlinks.get(window, 0) + 1

    def uplink_airtime_used(self, window: int) -> float:
        """Airtime booked in window number ``window`` (for reports and tests)."""
        return self._airtime.get(window, 0.0)

    def downlinks_used(self, window: int) -> int:
        """Downlinks booked in window number ``window``."""
        return self._downlinks.get(window, 0)
