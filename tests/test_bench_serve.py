"""``lpimg bench serve`` with a handful of devices: its own mosquitto, the server in its own
process, lossy device links; every image completes and is exact, and the resource figures come
from the server process."""

from __future__ import annotations

import json

import pytest

from lpimg.bench import BENCHMARKS
from lpimg.bench.fleet import BenchSetupError, find_mosquitto
from lpimg.bench.serve import run
from lpimg.cli import main

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _needs_mosquitto() -> None:
    try:
        find_mosquitto()
    except BenchSetupError:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")


def test_every_image_completes_through_the_broker() -> None:
    result = run(8, 0.1, ramp=0.2, ack_timeout=0.5)
    assert result["all_completed"] and result["completed"] == 8
    assert result["server_exact"] == 8 and result["device_reasons"] == {"complete": 8}
    assert result["frames_dropped"]["up"] + result["frames_dropped"]["down"] > 0
    assert result["server_frames_in"] >= 8 * 2 and result["frames_per_s"] > 0
    assert result["cpu_s_serving"] > 0 and result["peak_rss_mb"] > 0
    assert result["server_counters"]["completed"] == 8


def test_cli_json_without_decoding(capsys) -> None:
    assert "serve" in BENCHMARKS
    code = main(["bench", "serve", "--devices", "3", "--loss", "0", "--no-decode", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["completed"] == 3 and result["decode"] is False
    assert result["server_exact"] == 0  # nothing decoded, nothing to compare
