"""Every example runs, as a user would run it: separate processes, a real socat pty pair and a
real mosquitto, a small picture and few layers so the suite stays fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from endpoint_helpers import crop, finish, wait_for_line
from PIL import Image

pytestmark = pytest.mark.timeout(90)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "cam.png"
    Image.fromarray(crop()).save(path)
    return path


def start(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def check_output(out: Path, device: str, layers: int) -> None:
    sidecars = list((out / device).glob("*.json"))
    assert len(sidecars) == 1, list(out.rglob("*"))
    doc = json.loads(sidecars[0].read_text())
    assert doc["final"] and doc["reason"] == "complete" and doc["layers"] == layers
    assert doc["bytes"] == sum(item["bytes"] for item in doc["received"])
    with Image.open(sidecars[0].with_suffix(".png")) as png:
        assert png.size == (64, 48)


def test_serial_sender_and_receiver_over_a_pty_pair(pty_pair: Any, picture: Path, tmp_path: Path) -> None:
    a, b = pty_pair
    out = tmp_path / "received"
    receiver = start("serial_receiver.py", b, "--out", str(out), "--once", "--device", "pty-cam")
    try:
        wait_for_line(receiver, "listening")
        sender = start("serial_sender.py", a, "--image", str(picture), "--layers", "4",
                       "--store", str(tmp_path / "store"))
        assert "complete" in finish(sender)
        finish(receiver)
    finally:
        receiver.kill()
    check_output(out, "pty-cam", 4)


def test_mqtt_sender_and_receiver(mosquitto: Any, picture: Path, tmp_path: Path) -> None:
    broker = f"127.0.0.1:{mosquitto.port}"
    out = tmp_path / "received"
    receiver = start("mqtt_receiver.py", broker, "--out", str(out), "--once")
    try:
        wait_for_line(receiver, "listening")
        sender = start("mqtt_sender.py", broker, "--device", "example-cam", "--image", str(picture),
                       "--layers", "4")
        assert "complete" in finish(sender)
        finish(receiver)
    finally:
        receiver.kill()
    check_output(out, "example-cam", 4)


def test_ttn_server_with_the_simulated_device(mosquitto: Any, picture: Path, tmp_path: Path) -> None:
    out = tmp_path / "received"
    server = start("ttn_server.py", f"127.0.0.1:{mosquitto.port}", "--app", "example-app",
                   "--out", str(out), "--simulate-device", "ttn-cam", "--image", str(picture),
                   "--layers", "3")
    try:
        text = finish(server)
    finally:
        server.kill()
    assert "simulated device ttn-cam: complete" in text
    check_output(out, "ttn-cam", 3)
