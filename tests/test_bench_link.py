"""``lpimg bench link``: the real protocol over the simulated link, and the issue's frame targets.

Frame and downlink counts are deterministic for a given seed (virtual time, seeded losses), so
they are asserted here; timings are not (they belong in the benchmark output).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from typing import Any

import pytest

from lpimg.bench import BENCHMARKS
from lpimg.bench import link as bench_link
from lpimg.bench.link import BenchInputError, parse_seeds, run_link, run_sweep, split_payload
from lpimg.errors import LinkError, LpimgError
from lpimg.link.sim import GilbertElliott, IndependentLoss, NoLoss

N = 2001


def _cli(*argv: str) -> str:
    """Run ``bench link`` through its own argparse registration; return stdout."""
    parser = argparse.ArgumentParser(prog="lpimg bench")
    bench_link.add_parser(parser.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(["link", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return out.getvalue()


def test_registered_as_benchmarks() -> None:
    assert "link" in BENCHMARKS and "wire" in BENCHMARKS


def test_json_has_the_promised_keys_and_types() -> None:
    result = json.loads(_cli("--payload-bytes", "500", "--link", "lorawan-eu868:dr3", "--json"))
    types: dict[str, type | tuple[type, ...]] = {
        "uplink_frames": int,
        "uplink_bytes": int,
        "downlink_frames": int,
        "downlink_bytes": int,
        "airtime_s": float,
        "duration_s": float,
        "completed": bool,
        "reason": str,
        "lower_bound_frames": int,
        "mtu": int,
        "link": str,
        "payload_bytes": int,
        "uplink_loss": (int, float),
        "downlink_loss": (int, float),
        "fair_use": bool,
    }
    for key, kind in types.items():
        assert isinstance(result[key], kind), (key, result[key])
    assert result["link"] == "lorawan-eu868:dr3"
    assert result["mtu"] == 115
    assert result["lower_bound_frames"] == 5  # ceil(500 / 115)
    assert result["completed"] is True and result["reason"] == "complete"
    assert result["delivered_bytes"] == 500


def test_table_output_names_the_figures() -> None:
    text = _cli("--payload-bytes", "300", "--link", "lorawan-eu868:dr5")
    for key in ("uplink_frames", "lower_bound_frames", "completed", "reason", "airtime_s"):
        assert key in text
    assert not text.lstrip().startswith("{")


def test_loss_free_2001_bytes_at_dr0_beats_schc() -> None:
    result = run_link(N, "lorawan-eu868:dr0", 0.0, seed=1)
    assert result["completed"]
    assert result["lower_bound_frames"] == 40
    assert result["uplink_frames"] <= 42  # SCHC ACK-on-Error: 43 frames
    assert result["downlink_frames"] <= 2  # SCHC: 4 ACKs
    assert result["uplinks_lost"] == result["downlinks_lost"] == 0


def test_loss_free_2001_bytes_at_dr5() -> None:
    result = run_link(N, "lorawan-eu868:dr5", 0.0, seed=1)
    assert result["completed"]
    assert result["mtu"] == 242
    assert result["uplink_frames"] <= 9


def test_total_loss_gives_up_in_bounded_virtual_time() -> None:
    result = run_link(N, "lorawan-eu868:dr0", 1.0, seed=1)
    assert result["completed"] is False
    assert result["delivered_bytes"] == 0
    assert result["reason"].startswith("gave up")
    assert result["ended_by"] == "finished"  # the device ended it, not the --until horizon
    assert result["duration_s"] < 86_400


def test_ten_percent_loss_completes() -> None:
    result = run_link(N, "lorawan-eu868:dr0", 0.1, seed=3)
    assert result["completed"]
    assert result["uplinks_lost"] > 0
    assert result["uplink_frames"] > 42


def test_a_small_sweep_aggregates_medians() -> None:
    result = run_sweep(N, [1, 2, 3], link="lorawan-eu868:dr5", loss=0.1)
    assert result["seeds"] == [1, 2, 3]
    assert [row["seed"] for row in result["runs"]] == [1, 2, 3]
    assert result["completed_all"] is True
    assert result["ideal_uplink_bytes"] == pytest.approx(N / 0.9)
    ratio = result["median_uplink_bytes"] / result["ideal_uplink_bytes"]
    assert result["median_ratio_to_ideal"] == pytest.approx(ratio)
    text = bench_link.format_table(result)
    assert "completed_all" in text and "duration" in text


def test_sweep_through_the_command_line() -> None:
    result = json.loads(_cli("--payload-bytes", "400", "--link", "lorawan-eu868:dr4",
                             "--loss", "0.2", "--seeds", "1-4", "--json"))
    assert len(result["runs"]) == 4
    assert isinstance(result["completed_all"], bool)


def test_layers_split_and_arrive_in_order() -> None:
    assert [len(piece) for piece in split_payload(bytes(10), 3)] == [4, 3, 3]
    result = run_link(N, "lorawan-eu868:dr3", 0.1, seed=2, layers=5)
    assert result["completed"] and result["delivered_bytes"] == N and result["layers"] == 5


def test_bursty_loss_and_separate_downlink_loss() -> None:
    result = run_link(N, "lorawan-eu868:dr3", 0.2, seed=5, burst=4.0, downlink_loss=0.0)
    assert result["burst"] == 4.0 and result["downlink_loss"] == 0.0
    assert result["downlinks_lost"] == 0 and result["uplinks_lost"] > 0
    assert result["completed"]
    assert isinstance(bench_link.loss_model(0.2, 4.0), GilbertElliott)
    assert isinstance(bench_link.loss_model(0.0, 4.0), NoLoss)
    assert isinstance(bench_link.loss_model(1.0, 4.0), IndependentLoss)


def test_fair_use_stretches_a_dr0_transfer_over_days() -> None:
    result = run_link(N, "lorawan-eu868:dr0", 0.0, seed=1, fair_use=True)
    assert result["completed"] and result["fair_use"] is True
    assert result["fair_use_deferrals"] > 0
    assert result["duration_s"] > 3 * 86_400  # 116 s of airtime at 30 s a day


def test_until_cuts_a_transfer_short() -> None:
    result = run_link(N, "lorawan-eu868:dr0", 0.0, seed=1, until=600.0)
    assert result["completed"] is False
    assert result["ended_by"] == "until"
    assert "600" in result["reason"]


def test_seed_ranges() -> None:
    assert parse_seeds("1-20") == list(range(1, 21))
    assert parse_seeds("7") == [7]
    assert parse_seeds("1,3,10-12,3") == [1, 3, 10, 11, 12]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"payload_bytes": -5}, BenchInputError, "at least 1 byte"),
        ({"payload_bytes": 0}, BenchInputError, "at least 1 byte"),
        ({"loss": 1.5}, BenchInputError, "[0, 1]"),
        ({"loss": -0.1}, BenchInputError, "[0, 1]"),
        ({"loss": float("nan")}, BenchInputError, "[0, 1]"),
        ({"downlink_loss": 2.0}, BenchInputError, "downlink loss"),
        ({"link": "lorawan-eu999:dr0"}, LinkError, "unknown LoRaWAN region"),
        ({"link": "wifi"}, LinkError, "unknown link kind"),
        ({"link": "lorawan-eu868:dr9"}, LinkError, "DR0-DR5"),
        ({"layers": 0}, BenchInputError, "layers"),
        ({"payload_bytes": 3, "layers": 4}, BenchInputError, "layers"),
        ({"burst": 0.5, "loss": 0.1}, BenchInputError, "burst"),
        ({"until": 0.0}, BenchInputError, "until"),
    ],
)
def test_bad_input_raises_a_clear_lpimg_error(
    kwargs: dict[str, Any], error: type[LpimgError], words: str
) -> None:
    arguments: dict[str, Any] = {"payload_bytes": 100, **kwargs}
    with pytest.raises(error, match=None) as caught:
        run_link(**arguments)
    assert isinstance(caught.value, LpimgError)
    assert words in str(caught.value)


@pytest.mark.parametrize("text", ["5-1", "x", "1-", "-3", ""])
def test_bad_seed_ranges(text: str) -> None:
    with pytest.raises(BenchInputError, match="seed range"):
        parse_seeds(text)


def test_the_lpimg_command_reports_bad_input_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lpimg.cli import main

    assert main(["bench", "link", "--payload-bytes", "2001", "--loss", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "loss must be a probability in [0, 1]" in err and "Traceback" not in err
