"""``lpimg bench wire``: parse plus build throughput of every frame type, on one core.

The issue's target is 50,000 parse+build per second on one core: a gateway serving thousands of
devices, and the simulator running days of airtime per test, both spend their time here. One
operation is ``build(parse(frame_bytes))`` through the public dispatchers
(:func:`~lpimg.wire.parse_uplink` / :func:`~lpimg.wire.build_uplink` and their downlink twins),
so type dispatch and the dataclass checks are counted, as the protocol cores pay them.

Frames are typical of EU868 DR0 (a 51-byte MTU): a full data fragment, a start frame with
its first chunk, an ACK with a bitmap. The process is single-threaded; the figure is per core
by construction, and ``--declared`` also times the construct declarations the fast paths are
proven equal to (tests/test_wire_fast.py), to show what the fast paths buy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from collections.abc import Callable
from typing import Any

from lpimg.errors import LpimgError
from lpimg.wire import (
    AbortReason,
    AckFrame,
    AuthStartFrame,
    DataFrame,
    DeviceAbortFrame,
    LayerCompleteFrame,
    PollFrame,
    RefineFrame,
    Region,
    ResumeFrame,
    ServerAbortFrame,
    StartFrame,
    StopFrame,
    build_downlink,
    build_uplink,
    parse_downlink,
    parse_uplink,
)
from lpimg.wire.downlink import DOWNLINK_SPECS
from lpimg.wire.uplink import UPLINK_SPECS

TARGET_PER_S = 50_000
"""Parse+build operations per second on one core that the issue asks for."""

DEFAULT_SECONDS = 3.0


def sample_frames() -> list[tuple[str, str, object]]:
    """(name, direction, frame) for every frame type, with DR0-sized payloads."""
    rng = random.Random("lpimg-bench-wire")
    return [
        ("START", "uplink", StartFrame(0x1234, 49, rng.randbytes(46))),
        ("START_AUTH", "uplink", AuthStartFrame(0x1234, 49, rng.randbytes(46))),
        ("DATA", "uplink", DataFrame(300, rng.randbytes(49), ack=True)),
        ("POLL", "uplink", PollFrame()),
        ("RESUME", "uplink", ResumeFrame(0x1234)),
        ("ABORT (up)", "uplink", DeviceAbortFrame(AbortReason.TOO_MANY_RETRIES)),
        ("ACK", "downlink", AckFrame.from_received(32, [34, 35, 41, 60], 8)),
        ("LAYER_COMPLETE", "downlink", LayerCompleteFrame(3)),
        ("REFINE", "downlink", RefineFrame(3, Region(2, 3, 4, 5), 9, priority=1)),
        ("STOP", "downlink", StopFrame()),
        ("ABORT (down)", "downlink", ServerAbortFrame(AbortReason.UNKNOWN_SESSION)),
    ]


def _rate(operation: Callable[[], object], seconds: float) -> tuple[float, int]:
    """Operations per second of ``operation`` over about ``seconds`` (at least one batch)."""
    operation()  # warm up (first-call caches, enum lookups)
    batch, done, elapsed = 64, 0, 0.0
    clock = time.perf_counter
    while True:
        start = clock()
        for _ in range(batch):
            operation()
        elapsed += clock() - start
        done += batch
        if elapsed >= seconds:
            return done / elapsed, done
        if elapsed * 8 < seconds:
            batch *= 2


def run(seconds: float = DEFAULT_SECONDS, declared: bool = False) -> dict[str, Any]:
    """Time every frame type for an equal share of ``seconds``; the slowest type's rate, and the
    overall rate of a stream holding one frame of each type."""
    if not seconds > 0:
        raise LpimgError(f"--seconds must be positive, got {seconds}")
    cases = sample_frames()
    share = seconds / (len(cases) * (2 if declared else 1))
    specs = {spec.frame_type: spec for spec in UPLINK_SPECS + DOWNLINK_SPECS}
    rows = []
    for name, direction, frame in cases:
        parse, build = (
            (parse_uplink, build_uplink) if direction == "uplink" else (parse_downlink, build_downlink)
        )
        data = build(frame)  # type: ignore[arg-type]
        if parse(data) != frame or build(parse(data)) != data:  # type: ignore[arg-type]
            raise LpimgError(f"{name} does not round-trip; run the wire tests")

        def operation(data: bytes = data, parse: Any = parse, build: Any = build) -> object:
            return build(parse(data))

        rate, _ = _rate(operation, share)
        row: dict[str, Any] = {
            "frame": name,
            "direction": direction,
            "bytes": len(data),
            "parse_build_per_s": rate,
        }
        if declared:
            spec = specs[type(frame)]

            def reference(data: bytes = data, spec: Any = spec) -> object:
                return spec.build_declared(spec.parse_declared(data))

            row["declared_per_s"], _ = _rate(reference, share)
            row["speedup"] = rate / row["declared_per_s"]
        rows.append(row)
    slowest = min(rows, key=lambda row: row["parse_build_per_s"])
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    summary: dict[str, Any] = {}
    if declared:
        summary["declared_min_per_s"] = min(row["declared_per_s"] for row in rows)
        summary["declared_overall_per_s"] = len(rows) / sum(1.0 / row["declared_per_s"] for row in rows)
    return {
        "seconds": seconds,
        "python": platform.python_version(),
        "cpus_allowed": cpus,
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "target_per_s": TARGET_PER_S,
        "types": rows,
        "min_per_s": slowest["parse_build_per_s"],
        "min_frame": slowest["frame"],
        # one frame of each type: the harmonic mean, so that the 1-byte frames, which parse
        # in a blink, do not flatter the figure the way an average of rates would
        "overall_per_s": len(rows) / sum(1.0 / row["parse_build_per_s"] for row in rows),
        "meets_target": slowest["parse_build_per_s"] >= TARGET_PER_S,
        **summary,
    }


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("wire", help="parse+build frames per second per frame type (one core)")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                   help=f"total measuring time, shared by the frame types (default {DEFAULT_SECONDS:g})")
    p.add_argument("--declared", action="store_true",
                   help="also time the construct declarations (the reference path)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    result = run(args.seconds, declared=args.declared)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    extra = "  construct/s  speedup" if args.declared else ""
    print(f"{'frame':<15} {'dir':<8} {'bytes':>5} {'parse+build/s':>14}{extra}")
    for row in result["types"]:
        line = (f"{row['frame']:<15} {row['direction']:<8} {row['bytes']:>5} "
                f"{row['parse_build_per_s']:>14,.0f}")
        if args.declared:
            line += f"  {row['declared_per_s']:>11,.0f}  {row['speedup']:>6.1f}x"
        print(line)
    if args.declared:
        print(f"construct declarations: min {result['declared_min_per_s']:,.0f}/s, overall "
              f"{result['declared_overall_per_s']:,.0f}/s")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"min {result['min_per_s']:,.0f}/s ({result['min_frame']}), overall "
          f"{result['overall_per_s']:,.0f}/s on one core; {verdict} the "
          f"{result['target_per_s']:,}/s target (1-min load {result['load_average_1min']})")
    return 0
