"""``lpimg send``, ``lpimg serve`` and ``lpimg inspect`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from endpoint_helpers import crop, finish, wait_for_line
from PIL import Image

from lpimg.cli import main
from lpimg.protocol import DeviceSession
from lpimg.wire import AckFrame, RefineFrame, Region, StopFrame, build_downlink

pytestmark = pytest.mark.timeout(60)


def lpimg(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lpimg.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def session_frames() -> list[bytes]:
    """The uplinks of a small session (two layers, 24-byte frames), as a capture would hold."""
    session = DeviceSession(0x0BAD, [b"\x11" * 30, b"\x22" * 40], mtu=24, now=0.0, model_id=0x1234,
                            geometry=(64, 48), manifest={"capture_time": 1_700_000_000, 24: 6})
    frames = []
    while (frame := session.next_frame(0.0)) is not None:
        frames.append(frame)
    return frames


def test_inspect_dissects_hex_frames_and_reassembles_the_stream(capsys: pytest.CaptureFixture[str]) -> None:
    frames = session_frames()
    assert main(["inspect", *(frame.hex() for frame in frames)]) == 0
    out = capsys.readouterr().out
    assert "#0 START (uplink)" in out and "session=0x0bad" in out
    assert "[  3]      fragment_size  22" in out  # byte offset, field, value
    assert "DATA (uplink)" in out and "index          1" in out
    assert "session stream reassembled from the uplinks" in out
    assert "DESCRIPTOR" in out and "model 0x1234, 64x48, 2 layers" in out
    assert "capture_time" in out and "LAYER 1" in out and "CRC ok" in out


def test_inspect_downlinks_files_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "capture.txt"
    capture.write_text(
        "# a capture\n"
        f"down {build_downlink(AckFrame.from_received(3, [5, 7], 4)).hex()}\n"
        f"down: {build_downlink(RefineFrame(0, Region(1, 2, 3, 4), 5)).hex()}\n"
        f"{build_downlink(StopFrame()).hex()}   # direction unknown\n"
        "up ff ff\n"
    )
    assert main(["inspect", "--file", str(capture)]) == 0
    out = capsys.readouterr().out
    assert "ACK (downlink)" in out and "also held: 5, 7" in out
    assert "REFINE (downlink)" in out and "pass_index     5" in out
    assert "STOP (downlink)" in out  # parsed as a downlink only: no uplink is 0xc0
    assert "malformed: as uplink: fragment index 16383" in out
    assert main(["inspect", "zz"]) == 2
    assert "not hex" in capsys.readouterr().err


def test_inspect_records_marks_a_bad_crc(capsys: pytest.CaptureFixture[str]) -> None:
    frames = session_frames()
    from lpimg.endpoint.dissect import reassemble

    stream, _ = reassemble(frames)
    damaged = bytearray(stream)
    damaged[-1] ^= 0xFF  # the last layer's CRC
    assert main(["inspect", "--records", bytes(damaged).hex()]) == 0
    out = capsys.readouterr().out
    assert "CRC ok" in out and "CRC BAD" in out
    assert main(["inspect", "--records", stream[:10].hex()]) == 0
    assert "incomplete: the capture ends inside a header record" in capsys.readouterr().out


def test_inspect_a_live_link(mosquitto: Any) -> None:
    proc = lpimg("inspect", "--link", mosquitto.url(), "--count", "2")
    try:
        wait_for_line(proc, "listening")

        async def publish() -> None:
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
                for frame in session_frames()[:2]:
                    await client.publish("lpimg/live-cam/up", frame)

        asyncio.run(publish())
        out = finish(proc)
    finally:
        proc.kill()
    assert "from live-cam: START (uplink)" in out and "from live-cam: DATA (uplink)" in out


def test_send_and_serve(mosquitto: Any, tmp_path: Path) -> None:
    picture = tmp_path / "cam.png"
    Image.fromarray(crop()).save(picture)
    out = tmp_path / "out"
    # a budget of half the 6 layers' bytes, whatever the shipped model codes them in, so it stops
    from lpimg.codec.pipeline import LearnedCodec

    layer_bytes = sum(len(d) for _, d in LearnedCodec.load().encoder(crop()).encode_all(6))
    budget = str(layer_bytes // 2)
    server = lpimg("serve", "--link", mosquitto.url(), "--out", str(out), "--once", "--budget", budget)
    try:
        wait_for_line(server, "serving")
        sender = lpimg("send", str(picture), "--link", mosquitto.url(mtu=24), "--device", "cli-cam",
                       "--store", str(tmp_path / "store"), "--layers", "6", "--ack-timeout", "2")
        sent = finish(sender)
        served = finish(server)
    finally:
        server.kill()
    assert "cli-cam: session" in sent and ": stopped;" in sent
    assert f"(stopped: byte budget of {budget}" in served
    sidecar = json.loads(next((out / "cli-cam").glob("*.json")).read_text())
    assert sidecar["final"] and sidecar["reason"].startswith("stopped: byte budget")
    assert sidecar["bytes"] >= int(budget) and sidecar["timing"]["elapsed_s"] >= 0
    assert (out / "cli-cam" / sidecar["png"]).exists()


def test_a_fixed_camera_sends_against_its_reference(mosquitto: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Two ``send --reference auto`` runs through one ``serve``: the first picture is intra,
    the second is coded against what the server holds of the first (kept in the store)."""
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    base = crop(width=64, height=48)
    Image.fromarray(base).save(first)
    changed = base.copy()
    changed[8:24, 8:24] = 255 - changed[8:24, 8:24]
    Image.fromarray(changed).save(second)
    out = tmp_path / "out"
    server = lpimg("serve", "--link", mosquitto.url(), "--out", str(out))
    store = str(tmp_path / "store")
    try:
        wait_for_line(server, "serving")
        sent = []
        for picture in (first, second):  # in this process: a second torch start-up costs seconds
            code = main(["send", str(picture), "--link", mosquitto.url(mtu=51), "--device", "fixed-cam",
                         "--store", store, "--reference", "auto", "--ack-timeout", "2", "--quiet"])
            sent.append(capsys.readouterr().out)
            assert code == 0, sent
    finally:
        server.kill()
    assert ": complete;" in sent[0] and "intra (no reference yet)" in sent[0]
    assert ": complete;" in sent[1] and "coded against reference" in sent[1]
    sidecars = [json.loads(path.read_text()) for path in (out / "fixed-cam").glob("*.json")]
    assert sorted(doc["reference_id"] is None for doc in sidecars) == [False, True]
    assert all(doc["final"] and doc["reason"] == "complete" and doc["png"] for doc in sidecars)
    assert main(["send", str(first), "--link", mosquitto.url(), "--device", "x", "--reference", "auto"]) == 2
    assert "--reference auto needs --store" in capsys.readouterr().err


def test_send_fails_with_a_reason(mosquitto: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture = tmp_path / "cam.png"
    Image.fromarray(crop(width=32, height=32)).save(picture)
    # Nobody serves this broker's topics: the device polls, gives up, and says so.
    code = main(["send", str(picture), "--link", mosquitto.url(prefix="nobody"), "--device", "lonely",
                 "--ack-timeout", "0.05", "--quiet"])
    assert code == 1
    assert "lpimg: send failed: lonely: session" in capsys.readouterr().err
    assert main(["send", str(picture), "--link", "sim://lorawan-eu868:dr3", "--device", "x"]) == 2
    assert "in-process" in capsys.readouterr().err


@pytest.mark.timeout(180)  # three processes each load the codec; slow on a loaded machine
def test_send_and_serve_with_keys(mosquitto: Any, tmp_path: Path) -> None:
    """``--key-file`` on both sides: the keyed device gets through; without its key it is told
    it was rejected, in plain words, and nothing of it reaches the output."""
    picture = tmp_path / "cam.png"
    Image.fromarray(crop(width=32, height=32)).save(picture)
    key = "00112233445566778899aabbccddeeff"
    (tmp_path / "keys.json").write_text(json.dumps({"key-cam": key}))
    (tmp_path / "cam.key").write_text(key + "\n")
    out = tmp_path / "out"
    server = lpimg("serve", "--link", mosquitto.url(), "--out", str(out), "--once",
                   "--key-file", str(tmp_path / "keys.json"))
    try:
        wait_for_line(server, "serving")
        keyless = lpimg("send", str(picture), "--link", mosquitto.url(mtu=24), "--device", "key-cam",
                        "--ack-timeout", "2")
        _, refused = keyless.communicate(timeout=60)
        assert keyless.returncode == 1, refused
        sender = lpimg("send", str(picture), "--link", mosquitto.url(mtu=24), "--device", "key-cam",
                       "--key-file", str(tmp_path / "cam.key"), "--store", str(tmp_path / "store"),
                       "--ack-timeout", "2")
        sent = finish(sender)
        served = finish(server)
    finally:
        server.kill()
    assert "aborted: rejected" in refused
    assert "key-cam: session" in sent and ": complete;" in sent
    assert "(complete)" in served
    assert (tmp_path / "store" / "downlink-counter").read_text().strip().isdigit()
