"""``lpimg bench ...``: benchmarks that print JSON, so targets are measured, not asserted in tests.

Each benchmark module exposes ``add_parser(subparsers)``; this package wires them under ``bench``.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = [
    "rd", "exact", "fixedcam", "fixedlink", "link", "wire", "crash", "toa", "feedback", "serve", "flood",
    "forge", "colour", "speed", "preview",
]


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (JSON with --json)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name in BENCHMARKS:
        importlib.import_module(f"lpimg.bench.{name}").add_parser(bench_sub)
