"""Shared runner of the atheris harnesses: seed corpus from spec/vectors, time limit, crashes.

Every harness feeds arbitrary bytes to one parser entry point; the only acceptable failure is
the library's own :class:`lpimg.LpimgError` (or a documented ``None``/drop). Anything else is a
crash, which atheris reports with the input that caused it (save it under
``fuzz/crashes/`` and add it to ``tests/test_fuzz_regressions.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "spec" / "vectors"


def vector_seeds() -> list[bytes]:
    """Every hex string found in the golden vectors: frames, records, transcripts."""
    seeds: list[bytes] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("hex", "frame_hex", "record_hex") and isinstance(value, str):
                    with contextlib.suppress(ValueError):
                        seeds.append(bytes.fromhex(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in sorted(VECTORS.glob("*.json")):
        walk(json.loads(path.read_text()))
    return seeds


def run(test_one_input: Callable[[bytes], None], seeds: list[bytes]) -> None:
    """Fuzz for ``FUZZ_SECONDS`` (default 60) seconds, starting from ``seeds``."""
    import atheris

    seconds = int(os.environ.get("FUZZ_SECONDS", "60"))
    corpus = Path(tempfile.mkdtemp(prefix="lpimg-fuzz-"))
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i:04d}").write_bytes(seed)
    artifacts = ROOT / "fuzz" / "crashes"
    artifacts.mkdir(exist_ok=True)
    # options given on the command line come after ours, so they win (libFuzzer takes the last)
    argv = [sys.argv[0], f"-max_total_time={seconds}", "-rss_limit_mb=2048",
            f"-artifact_prefix={artifacts}/", "-print_final_stats=1", *sys.argv[1:], str(corpus)]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
