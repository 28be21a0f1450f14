"""Logging of bad input that stays bounded whatever a hostile peer sends.

Every rejection is counted elsewhere (link and server counters); the log is for a person, who
needs to hear of each *kind* of trouble and of each device that causes it, but not once per
frame, and not once per device either when the devices are invented: a flood of session starts
from ever new ids would otherwise be one WARNING per bogus id, as fast as the attacker sends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_DEVICES_PER_CAUSE = 100
"""Distinct devices named in a WARNING of their own, per cause; the rest are summarised."""
MAX_KEYS = 10_000
"""(cause, device) pairs remembered in all, so memory stays bounded."""
SUMMARY_INTERVAL = 60.0
"""Seconds between two summaries of the same cause."""
EXAMPLES = 3
"""Device ids a summary names."""


@dataclass
class _Overflow:
    suppressed: int = 0
    """Occurrences from unnamed devices since the last summary."""
    total: int = 0
    last_summary: float | None = None
    examples: list[str] = field(default_factory=list)


class OncePerDevice:
    """Log the first occurrence of each (cause, device) as a WARNING, and later ones at DEBUG.

    Once ``max_per_cause`` devices have been named for a cause (or ``max_keys`` pairs in all),
    occurrences from further devices are only counted, and one WARNING per cause per ``interval``
    seconds says how many there were since the last one, with a few of their ids. The first
    summary of a cause is logged at once, so the operator learns of a flood when it starts.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        max_per_cause: int = MAX_DEVICES_PER_CAUSE,
        max_keys: int = MAX_KEYS,
        interval: float = SUMMARY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        prefix: str = "",
    ) -> None:
        self.log = logger
        self.max_per_cause = max_per_cause
        self.max_keys = max_keys
        self.interval = interval
        self.clock = clock
        self.prefix = prefix
        self._seen: set[tuple[str, str]] = set()
        self._named: dict[str, int] = {}
        self._overflow: dict[str, _Overflow] = {}

    def overflowed(self, cause: str) -> int:
        """Occurrences of ``cause`` from devices that were not named in a WARNING of their own."""
        overflow = self._overflow.get(cause)
        return 0 if overflow is None else overflow.total

    def __call__(self, cause: str, device: str, message: str, *args: Any) -> None:
        log = self.log
        key = (cause, device)
        if key in self._seen:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(message, *args)
            return
        named = self._named.get(cause, 0)
        if named < self.max_per_cause and len(self._seen) < self.max_keys:
            self._seen.add(key)
            self._named[cause] = named + 1
            log.warning(message + "; further ones are only counted", *args)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug(message, *args)
        overflow = self._overflow.get(cause)
        if overflow is None:
            overflow = self._overflow[cause] = _Overflow()
        overflow.suppressed += 1
        overflow.total += 1
        if len(overflow.examples) < EXAMPLES and device not in overflow.examples:
            overflow.examples.append(device)
        now = self.clock()
        if overflow.last_summary is not None and now - overflow.last_summary < self.interval:
            return
        if overflow.last_summary is None:
            when = f"after {named} devices were named for it"
        else:
            when = f"in the last {now - overflow.last_summary:.0f} s"
        count = overflow.suppressed
        log.warning(
            "%s%d rejection%s for %r from devices not named before (%s%s), %s; one summary per "
            "%g s for this cause",
            self.prefix,
            count,
            "" if count == 1 else "s",
            cause,
            ", ".join(repr(d) for d in overflow.examples),
            ", ..." if count > len(overflow.examples) else "",
            when,
            self.interval,
        )
        overflow.last_summary = now
        overflow.suppressed = 0
        overflow.examples.clear()
