"""``lpimg bench flood`` small: a few legitimate sessions during a modest garbage flood through a
real mosquitto. The garbage really reaches the server (it is counted there), and the legitimate
sessions complete exactly."""

from __future__ import annotations

import json

import pytest

from lpimg.bench import BENCHMARKS
from lpimg.bench.fleet import BenchSetupError, find_mosquitto
from lpimg.bench.flooder import build_pool, publish_packet
from lpimg.cli import main

pytestmark = pytest.mark.timeout(120)


def test_publish_packet_layout() -> None:
    packet = publish_packet("a/b", b"\x01\x02")
    assert packet == b"\x30\x07\x00\x03a/b\x01\x02"
    long = publish_packet("t", bytes(200))
    assert long[:3] == b"\x30\xcb\x01"  # remaining length 203 as an MQTT varint


def test_pool_has_every_kind_and_fits_the_mtu() -> None:
    pool, counts = build_pool(300, 51, ["cam-1"], 1.0, 7, (1.0, 1.0, 1.0))
    assert len(pool) == 300 and all(counts[k] > 0 for k in ("noise", "truncated", "start"))
    assert sum(b"lpimg/cam-1/up" in p for p in pool) == counts["noise"] + counts["truncated"]
    assert sum(b"/bogus-7-" in p for p in pool) == counts["start"]


def test_sessions_complete_during_a_small_flood(capsys) -> None:
    try:
        find_mosquitto()
    except BenchSetupError:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    assert "flood" in BENCHMARKS
    code = main(["bench", "flood", "--sessions", "4", "--garbage-fps", "200", "--lead", "0.3", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["all_completed"] and result["completed"] == 4, result
    assert result["garbage_sent"] > 0 and result["garbage_fps"] > 0
    assert result["server_malformed"] > 0
    assert result["server_sessions_started"] > 4  # bogus starts opened sessions too
    assert result["cpu_s_serving"] > 0 and result["peak_rss_mb"] > 0
