"""Ten-second smoke runs of every atheris harness, plus what earlier fuzzing found.

``make fuzz`` runs each harness for ``FUZZ_SECONDS`` (default 60); this keeps them working.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lpimg.wire import decode_manifest, encode_manifest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
HARNESSES = sorted(p.name for p in FUZZ.glob("fuzz_*.py"))


def test_every_parser_has_a_harness():
    assert {"fuzz_wire.py", "fuzz_manifest.py", "fuzz_framing.py", "fuzz_lns.py",
            "fuzz_container.py"} <= set(HARNESSES)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("harness", HARNESSES)
def test_harness_smoke(harness, tmp_path):
    pytest.importorskip("atheris")
    env = {**os.environ, "FUZZ_SECONDS": os.environ.get("FUZZ_SMOKE_SECONDS", "10")}
    proc = subprocess.run([sys.executable, harness, f"-artifact_prefix={tmp_path}/"], cwd=FUZZ,
                          env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Done" in proc.stderr


def test_manifest_with_nan_reencodes_canonically():
    # found by fuzz_manifest: {0: 0, "": NaN (half float)}; NaN != NaN, so the harness compares
    # canonical bytes; the decoder must accept it and re-encode it identically
    data = bytes.fromhex("a2000060f9ffff")
    canonical = encode_manifest(decode_manifest(data))
    assert encode_manifest(decode_manifest(canonical)) == canonical
