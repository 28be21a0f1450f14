"""``lpimg bench wire`` runs and reports every frame type (a smoke test: no timing assertion,
timings belong in the benchmark's output, not in a test on a shared machine)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

from lpimg.bench import wire as bench_wire
from lpimg.wire.downlink import DOWNLINK_SPECS
from lpimg.wire.uplink import UPLINK_SPECS


def test_every_frame_type_is_measured() -> None:
    result = bench_wire.run(seconds=0.01)
    frames = {row["frame"].split(" ")[0] for row in result["types"]}
    assert frames == {spec.name for spec in UPLINK_SPECS + DOWNLINK_SPECS}
    assert len(result["types"]) == len(UPLINK_SPECS) + len(DOWNLINK_SPECS)
    for row in result["types"]:
        assert row["parse_build_per_s"] > 0 and row["bytes"] >= 1
    assert result["min_per_s"] == min(row["parse_build_per_s"] for row in result["types"])
    assert result["overall_per_s"] >= result["min_per_s"]
    assert isinstance(result["meets_target"], bool)


def test_command_line_json_and_table() -> None:
    parser = argparse.ArgumentParser(prog="lpimg bench")
    bench_wire.add_parser(parser.add_subparsers(dest="bench", required=True))
    for extra, check in ((["--json", "--declared"], "json"), ([], "table")):
        args = parser.parse_args(["wire", "--seconds", "0.02", *extra])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert args.func(args) == 0
        if check == "json":
            result = json.loads(out.getvalue())
            assert all(row["declared_per_s"] > 0 for row in result["types"])
        else:
            assert "REFINE" in out.getvalue() and "one core" in out.getvalue()
