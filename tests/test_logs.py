"""Bad-input logging stays bounded: once per cause and device, and a flood of invented device ids
becomes one summary per cause per interval instead of a WARNING per id."""

from __future__ import annotations

import logging

import pytest

from lpimg.link.base import LinkStats, RejectLog
from lpimg.logs import OncePerDevice


def warnings_of(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == logging.WARNING]


def test_each_cause_and_device_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("lpimg.test.logs.once")
    once = OncePerDevice(logger, max_per_cause=10)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for _ in range(5):
            once("malformed", "cam-1", "bad frame from %r", "cam-1")
            once("malformed", "cam-2", "bad frame from %r", "cam-2")
            once("unknown", "cam-1", "unknown device %r", "cam-1")
    assert warnings_of(caplog, logger.name) == [
        "bad frame from 'cam-1'; further ones are only counted",
        "bad frame from 'cam-2'; further ones are only counted",
        "unknown device 'cam-1'; further ones are only counted",
    ]


def test_a_flood_of_new_devices_is_summarised_per_cause_and_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("lpimg.test.logs.flood")
    now = [0.0]
    once = OncePerDevice(logger, max_per_cause=3, interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for i in range(10_000):  # a flood: a new id every 10 ms for 100 s
            now[0] = i * 0.01
            once("start", f"bogus-{i}", "session start from %r", f"bogus-{i}")
        once("malformed", "cam-9", "bad frame from %r", "cam-9")  # other causes still named
    lines = warnings_of(caplog, logger.name)
    assert lines[:3] == [f"session start from 'bogus-{i}'; further ones are only counted" for i in range(3)]
    summaries = lines[3:-1]
    # the first summary at once (when the flood starts), the next after 60 s; none after that
    assert len(summaries) == 2
    assert summaries[0].startswith("1 rejection for 'start' from devices not named before ('bogus-3')")
    assert summaries[1].startswith("6000 rejections for 'start' from devices not named before "
                                   "('bogus-4', 'bogus-5', 'bogus-6', ...), in the last 60 s")
    assert once.overflowed("start") == 10_000 - 3
    assert lines[-1] == "bad frame from 'cam-9'; further ones are only counted"


def test_the_link_reject_log_counts_every_rejection_and_stays_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats = LinkStats()
    reject = RejectLog(stats, "test link")
    with caplog.at_level(logging.WARNING, logger="lpimg.link"):
        for i in range(5_000):
            reject("bad_topic", f"noise-{i}", "x")
    assert stats.rejected["bad_topic"] == 5_000
    assert len(warnings_of(caplog, "lpimg.link")) <= 100 + 1
