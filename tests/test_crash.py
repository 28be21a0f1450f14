"""Real processes killed with SIGKILL mid-transfer and started again on their state: the server
(``lpimg serve --state``) and the device (``lpimg send --store``), over a real mosquitto."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from endpoint_helpers import codec, crop, finish, reference_reconstruction, wait_for_line
from PIL import Image

from lpimg.bench.crash import run_crash
from lpimg.endpoint import LayerInfo
from lpimg.endpoint.coding import layer_spec

pytestmark = pytest.mark.timeout(120)


def lpimg(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lpimg.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def layers_in(lines: list[str], device: str) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.match(rf"{device}/\S+: (\d+) layers", line))]


def check_picture(out: Path, device: str, image: np.ndarray) -> dict[str, Any]:
    """The final sidecar says complete, and the PNG is exactly the codec's for its layers."""
    (sidecar_path,) = (out / device).glob("*.json")
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["final"] and sidecar["reason"] == "complete"
    received = [LayerInfo(r["index"], r["pass"], None, r["bytes"], r["at"]) for r in sidecar["received"]]
    assert [layer.index for layer in received] == list(range(sidecar["layers"]))
    expected = reference_reconstruction(image, SimpleNamespace(received=received))  # type: ignore[arg-type]
    got = np.asarray(Image.open(out / device / sidecar["png"]))
    assert np.array_equal(got, expected)
    return sidecar


def test_a_killed_server_resumes_from_its_state_file(mosquitto: Any, tmp_path: Path) -> None:
    image = crop(width=128, height=96)
    picture = tmp_path / "cam.png"
    Image.fromarray(image).save(picture)
    out, state = tmp_path / "out", tmp_path / "state.db"
    serve = ("serve", "--link", mosquitto.url(), "--out", str(out), "--state", str(state), "--once")
    server = lpimg(*serve)
    sender = None
    try:
        wait_for_line(server, "serving")
        sender = lpimg("send", str(picture), "--link", mosquitto.url(mtu=24), "--device", "kill-srv",
                       "--ack-timeout", "3", "--min-interval", "0.01")
        before = wait_for_line(server, "kill-srv/", timeout=60)
        server.kill()  # SIGKILL, mid-transfer
        server.wait()
        assert sender.poll() is None
        server = lpimg(*serve)
        sent = finish(sender, timeout=90)
        served = finish(server, timeout=30)
    finally:
        server.kill()
        if sender is not None:
            sender.kill()
    assert "kill-srv: session" in sent and ": complete;" in sent
    assert "0 of acknowledged fragments" in sent  # nothing the first server acknowledged was lost
    after = layers_in(served.splitlines(), "kill-srv")
    assert after[0] > layers_in(before, "kill-srv")[-1]  # it went on, it did not start over
    assert "(complete)" in served.splitlines()[-1]
    check_picture(out, "kill-srv", image)


def test_a_killed_device_resumes_from_its_store(mosquitto: Any, tmp_path: Path) -> None:
    """The server only reassembles here (decoding across a restart is checked above)."""
    image = crop(width=96, height=64)
    picture = tmp_path / "cam.png"
    Image.fromarray(image).save(picture)
    out, state, store = tmp_path / "out", tmp_path / "state.db", tmp_path / "store"
    server = lpimg("serve", "--link", mosquitto.url(), "--out", str(out), "--state", str(state), "--once",
                   "--no-decode")
    send = ("send", str(picture), "--link", mosquitto.url(mtu=24), "--device", "kill-dev",
            "--store", str(store), "--ack-timeout", "3", "--min-interval", "0.01")
    sender = None
    try:
        wait_for_line(server, "serving")
        sender = lpimg(*send)
        wait_for_line(server, "kill-dev/", timeout=60)
        sender.kill()  # the camera loses power mid-transfer
        sender.wait()
        assert '"state": "active"' in (store / "session.json").read_text()
        sender = lpimg(*send)
        sent = finish(sender, timeout=90)
        served = finish(server, timeout=30)
    finally:
        server.kill()
        if sender is not None:
            sender.kill()
    assert ": complete;" in sent and ", resumed" in sent
    assert "(complete)" in served.splitlines()[-1]
    assert '"state": "finished"' in (store / "session.json").read_text()
    (sidecar_path,) = (out / "kill-dev").glob("*.json")
    sidecar = json.loads(sidecar_path.read_text())
    encoded = codec().encoder(image)
    sizes = [len(encoded.encode(layer_spec(i, None))) for i in range(encoded.header.total_passes)]
    assert sidecar["reason"] == "complete" and [r["bytes"] for r in sidecar["received"]] == sizes


def test_bench_crash_passes_every_run(mosquitto: Any) -> None:
    """The benchmark's kill-and-restart cycle, twice with two kills each (the benchmark's
    default is 100 runs)."""
    args = argparse.Namespace(runs=2, kills=2, broker=mosquitto.url(), layers=8, layer_bytes=100,
                              mtu=24, interval=0.005, ack_timeout=1.0, timeout=60.0, seed=3,
                              per_run=True, json=True)
    report = asyncio.run(run_crash(args))
    assert report["passes"] == 2, report["failures"]
    assert all(run["kills"] >= 1 for run in report["per_run"])
    assert report["acknowledged_resent_total"] == 0
    assert all(run["uplinks"] > 8 * 100 // 22 for run in report["per_run"])
