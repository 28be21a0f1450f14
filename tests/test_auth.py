"""Authenticated sessions (spec section 15): keys, record tags, sealed downlinks, the forge
benchmark, and rejections counted by cause and logged once per cause and device."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from endpoint_helpers import assert_exact, codec, crop

from lpimg.bench.forge import KINDS, run_forge
from lpimg.endpoint import Device, DeviceResult, ImageUpdate, Server
from lpimg.endpoint.keys import KeyStore, load_device_key
from lpimg.link import open_device_link, open_server_link
from lpimg.protocol import (
    DeviceSession,
    LayerReceived,
    ProtocolConfig,
    ServerProtocol,
    SessionState,
)
from lpimg.protocol import device as device_module
from lpimg.protocol.auth import (
    AuthError,
    DownlinkRejected,
    open_downlink,
    record_check,
    seal_downlink,
)
from lpimg.wire import (
    AbortReason,
    AuthStartFrame,
    DataFrame,
    LayerCompleteFrame,
    ServerAbortFrame,
    StartFrame,
    build_downlink,
    build_uplink,
    parse_downlink,
    parse_uplink,
    split_sealed,
)

KEY = bytes(range(16))
OTHER = bytes(16)
LAYERS = [bytes((7 * i) % 251 for i in range(150)), bytes((3 * i) % 251 for i in range(90))]


def _drive(device: DeviceSession, server: ServerProtocol, name: str = "cam", now: float = 0.0,
           steps: int = 2000) -> tuple[list[bytes], float]:
    """A loss-free class A exchange until the device ends; the layers the server delivered."""
    delivered: list[bytes] = []
    for _ in range(steps):
        if device.finished:
            break
        frame = device.next_frame(now)
        if frame is None:
            timer = device.get_timer()
            assert timer is not None
            now = max(now, timer)
            device.handle_timer(now)
            continue
        server.receive_frame(name, frame, now)
        delivered += [e.data for e in iter(server.next_event, None) if isinstance(e, LayerReceived)]
        answer = server.next_frame(name, now + 1.0)
        if answer is not None:
            device.receive_frame(answer, now + 1.0)
        now += 10.0
    return delivered, now


def test_an_authenticated_session_delivers_and_seals_every_downlink() -> None:
    device = DeviceSession(5, LAYERS, mtu=24, now=0.0, key=KEY, config=ProtocolConfig(window=4))
    server = ServerProtocol(ProtocolConfig(window=4), keys={"cam": KEY})
    first = device.next_frame(0.0)
    assert first is not None and isinstance(parse_uplink(first), AuthStartFrame)
    server.receive_frame("cam", first, 0.0)
    delivered, _ = _drive(device, server, now=10.0)
    assert device.reason == "complete" and delivered == LAYERS
    assert device.authenticated and device.downlink_counter > 0
    assert device.stats.rejected == 0 and server.stats.rejected == 0


def test_plain_sessions_are_unchanged_beside_keyed_devices() -> None:
    device = DeviceSession(5, LAYERS, mtu=24, now=0.0)
    server = ServerProtocol(keys={"other-cam": KEY})
    delivered, _ = _drive(device, server)
    assert device.reason == "complete" and delivered == LAYERS
    assert not device.authenticated and device.downlink_counter == 0


def test_a_plain_start_from_a_keyed_device_is_refused_in_plain_words() -> None:
    server = ServerProtocol(keys={"cam": KEY})
    plain = DeviceSession(5, LAYERS, mtu=51, now=0.0)
    server.receive_frame("cam", plain.next_frame(0.0) or b"", 0.0)
    assert server.session("cam") is None
    answer = server.next_frame("cam", 1.0)
    assert answer is not None and parse_downlink(answer) == ServerAbortFrame(AbortReason.REJECTED)
    assert server.stats.rejections == {"auth_required": 1}
    # a keyed device cannot be downgraded: its own session survives a forged plain start
    genuine = DeviceSession(6, LAYERS, mtu=51, now=0.0, key=KEY)
    server.receive_frame("cam", genuine.next_frame(0.0) or b"", 0.0)
    server.receive_frame("cam", plain.next_frame(20.0) or build_uplink(StartFrame(9, 49, b"x")), 2.0)
    info = server.session("cam")
    assert info is not None and info.session_id == 6 and info.state is SessionState.ACTIVE


def test_an_authenticated_start_from_a_device_without_a_key_gets_no_answer() -> None:
    server = ServerProtocol()
    device = DeviceSession(5, LAYERS, mtu=51, now=0.0, key=KEY)
    server.receive_frame("cam", device.next_frame(0.0) or b"", 0.0)
    assert server.session("cam") is None and server.next_frame("cam", 1.0) is None
    assert server.stats.rejections == {"no_key": 1}


def test_records_under_another_key_are_never_delivered() -> None:
    device = DeviceSession(5, LAYERS, mtu=51, now=0.0, key=OTHER)
    server = ServerProtocol(keys={"cam": KEY})
    delivered, _ = _drive(device, server)
    assert delivered == []
    assert server.stats.rejections.get("bad_record", 0) >= 1
    # the server cannot seal for a key it does not have: the device hears nothing valid
    assert device.stats.rejections.get("bad_mic", 0) >= 1
    assert not device.reason or device.reason.startswith(("gave up", "aborted"))


def test_record_tags_bind_the_session_and_the_place_in_the_stream() -> None:
    tag = record_check(KEY, 5, 1)(b"layer")
    assert tag != record_check(KEY, 6, 1)(b"layer")
    assert tag != record_check(KEY, 5, 2)(b"layer")
    assert tag != record_check(OTHER, 5, 1)(b"layer")


def test_a_restarted_server_continues_the_counter_from_its_clock() -> None:
    config = ProtocolConfig(window=2, ack_timeout=20.0)
    device = DeviceSession(5, LAYERS, mtu=24, now=0.0, key=KEY, config=config)
    first = ServerProtocol(config, keys={"cam": KEY})
    _drive(device, first, steps=6)
    assert not device.finished and device.downlink_counter > 0
    # the server restarts with no state; its "unknown session" is sealed and fresh
    second = ServerProtocol(config, keys={"cam": KEY})
    delivered, _ = _drive(device, second, now=1000.0)
    assert device.reason == "complete" and delivered == LAYERS
    assert device.stats.restarts == 1 and device.stats.rejected == 0


def test_a_replayed_unknown_session_answer_cannot_restart_a_session() -> None:
    config = ProtocolConfig(window=2)
    device = DeviceSession(5, LAYERS, mtu=24, now=0.0, key=KEY, config=config)
    server = ServerProtocol(config, keys={"cam": KEY})
    _drive(device, server, steps=4)
    assert device.downlink_counter > 1  # counters follow the clock: 1 is long past
    old = seal_downlink(KEY, 1, build_downlink(ServerAbortFrame(AbortReason.UNKNOWN_SESSION)), None)
    device.receive_frame(old, 100.0)
    assert device.stats.rejections == {"replay": 1} and device.stats.restarts == 0


def test_the_forge_benchmark_rejects_every_forgery_and_the_session_completes() -> None:
    result = run_forge(250, payload_bytes=600, layers=2, seed=3)
    assert result["thrown"] == 250 and result["accepted"] == 0 and result["rejected"] == 250
    assert all(result["by_kind"][kind]["thrown"] > 0 for kind in KINDS)
    assert set(result["device_rejections"]) <= {"bad_mic", "replay", "malformed"}
    assert result["device_rejections"]["replay"] == result["by_kind"]["replay"]["thrown"]
    assert result["completed"] and result["server_delivered_exactly"]


def test_the_forge_benchmark_notices_a_device_that_does_not_check(monkeypatch: Any) -> None:
    def trusting(key: bytes, data: bytes, last: int, session_id: int) -> tuple[bytes, int]:
        frame, counter, _mic = split_sealed(data)
        return frame, counter

    monkeypatch.setattr(device_module, "open_downlink", trusting)
    result = run_forge(100, payload_bytes=600, layers=2, seed=3)
    assert result["accepted"] > 0


def test_keys_load_from_files_and_are_never_printed(tmp_path: Path) -> None:
    store_file = tmp_path / "keys.json"
    store_file.write_text(json.dumps({"cam-1": KEY.hex(), "cam-2": OTHER.hex()}))
    store = KeyStore.load(store_file)
    assert store["cam-1"] == KEY and len(store) == 2 and KEY.hex() not in repr(store)
    assert load_device_key(store_file, "cam-2") == OTHER
    single = tmp_path / "cam.key"
    single.write_text(KEY.hex() + "\n")
    assert load_device_key(single) == KEY
    with pytest.raises(AuthError):
        load_device_key(store_file, "cam-3")
    with pytest.raises(AuthError):
        KeyStore({"cam": "abcd"})
    with pytest.raises(AuthError):
        KeyStore.load(tmp_path / "missing.json")


def test_open_downlink_checks_the_mic_before_the_counter() -> None:
    sealed = seal_downlink(KEY, 10, b"\xc0", 5)
    assert open_downlink(KEY, sealed, 9, 5) == (b"\xc0", 10)
    with pytest.raises(DownlinkRejected) as raised:
        open_downlink(OTHER, sealed, 100, 5)  # stale *and* forged: reported as forged
    assert raised.value.cause == "bad_mic"


def test_a_downlink_of_another_session_does_not_verify() -> None:
    """A genuine answer about the previous session, delivered late, must not end the next."""
    with pytest.raises(DownlinkRejected) as raised:
        open_downlink(KEY, seal_downlink(KEY, 10, b"\x40\x0d", 5), 0, 6)
    assert raised.value.cause == "bad_mic"
    abort = build_downlink(ServerAbortFrame(AbortReason.UNKNOWN_SESSION))
    assert open_downlink(KEY, seal_downlink(KEY, 10, abort, None), 0, 6) == (abort, 10)
    with pytest.raises(DownlinkRejected):  # without a session, only an ABORT is believed
        open_downlink(KEY, seal_downlink(KEY, 10, b"\xc0", None), 0, 6)


def test_a_late_answer_of_the_previous_session_cannot_complete_the_next() -> None:
    first = DeviceSession(5, LAYERS, mtu=51, now=0.0, key=KEY)
    server = ServerProtocol(keys={"cam": KEY})
    heard: list[bytes] = []
    receive = server.receive_frame
    server.receive_frame = lambda name, frame, now: (heard.append(frame), receive(name, frame, now))[1]
    _drive(first, server)
    assert first.reason == "complete"
    last = next(f for f in map(parse_uplink, reversed(heard)) if isinstance(f, DataFrame))
    duplicate = build_uplink(DataFrame(last.index, last.payload, ack=True))
    server.receive_frame("cam", duplicate, 500.0)
    late = server.next_frame("cam", 501.0)
    assert late is not None and isinstance(parse_downlink(split_sealed(late)[0]), LayerCompleteFrame)
    second = DeviceSession(6, LAYERS, mtu=51, now=600.0, key=KEY,
                           downlink_counter=first.downlink_counter)
    server.receive_frame("cam", second.next_frame(600.0) or b"", 600.0)
    second.receive_frame(late, 601.0)
    assert not second.finished and second.stats.rejections == {"bad_mic": 1}


def test_server_rejections_are_counted_by_cause_and_logged_once_per_device(
    arun: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = "sim://lorawan-eu868:dr5?seed=4&net=reject"

    async def main() -> Server:
        async with open_server_link(url) as s:
            server = Server(s, decode=False, keys={"cam": KEY})
            async with server, open_device_link(url, "cam") as cam, \
                    open_device_link(url, "noise") as noise:
                for link in (cam, noise):
                    for _ in range(5):
                        await link.send(b"\x70\x01")  # a reserved frame type
                        await link.send(b"\x20")  # a poll without a session
                for _ in range(100):  # virtual seconds, until the server has seen everything
                    if sum(server.rejections.values()) >= 20:
                        break
                    await noise.recv(1.0)
                return server

    with caplog.at_level(logging.WARNING, logger="lpimg.endpoint.server"):
        server = arun(main())
    assert server.rejections == {"malformed": 10, "unknown_session": 10}
    messages = [r.getMessage() for r in caplog.records if "rejected an uplink" in r.getMessage()]
    assert len(messages) == 4  # (malformed, unknown session) x (cam, noise)


def test_device_and_server_endpoints_authenticate_over_sim(arun: Any, tmp_path: Path) -> None:
    url = "sim://lorawan-eu868:dr3?loss=0.1&seed=21"
    image = crop(width=32, height=32)

    async def main() -> tuple[DeviceResult, DeviceResult, ImageUpdate]:
        async with open_server_link(url) as s, open_device_link(url, "cam") as d:
            server = Server(s, codec=codec(), keys=KeyStore({"cam": KEY}))
            updates = server.updates()
            async with server:
                device = Device(d, codec=codec(), key=KEY, store=tmp_path / "store")
                first = await device.send(image)
                counter = device.downlink_counter
                second = await Device(d, codec=codec(), key=KEY, store=tmp_path / "store").send(image)
                assert counter > 0 and (tmp_path / "store" / "downlink-counter").read_text() != ""
                async for update in updates:
                    if update.final and update.session_id == second.session_id:
                        return first, second, update
        raise AssertionError("no final update")

    first, second, final = arun(main())
    assert first.completed and second.completed and final.reason == "complete"
    assert_exact(image, final)


def test_bench_forge_is_registered_under_bench_and_prints_json() -> None:
    import argparse
    import contextlib
    import io

    from lpimg.bench import BENCHMARKS, add_bench_parser

    assert "forge" in BENCHMARKS
    parser = argparse.ArgumentParser(prog="lpimg")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "forge", "--count", "40", "--payload-bytes", "300", "--json"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    result = json.loads(out.getvalue())
    assert result["thrown"] == 40 and result["accepted"] == 0 and result["completed"]


def test_inspect_reads_authenticated_frames() -> None:
    from lpimg.endpoint.dissect import dissect_frame

    start = dissect_frame(build_uplink(AuthStartFrame(0x0102, 49, b"\x01\x02")))
    assert start.kind == "START_AUTH" and start.summary.startswith("START_AUTH session=0x0102")
    sealed = seal_downlink(KEY, 77, build_downlink(ServerAbortFrame(AbortReason.REJECTED)), 5)
    down = dissect_frame(sealed, "down")
    assert down.kind == "ABORT" and "counter=77" in down.summary
    assert any("sealed" in note for note in down.notes)


def test_an_authenticated_session_restored_from_a_snapshot_stays_authenticated() -> None:
    """A server restarted from its persisted state (issue 5) goes on checking AES-CMAC tags with
    the record numbering where it stopped, so the rest of the session still verifies."""
    config = ProtocolConfig(window=4)
    device = DeviceSession(5, LAYERS, mtu=24, now=0.0, key=KEY, config=config)
    server = ServerProtocol(config, keys={"cam": KEY})
    delivered: list[bytes] = []
    now = 0.0
    restarted = False
    for _ in range(2000):
        if device.finished:
            break
        frame = device.next_frame(now)
        if frame is None:
            now = max(now, device.get_timer() or now)
            device.handle_timer(now)
            continue
        server.receive_frame("cam", frame, now)
        delivered += [e.data for e in iter(server.next_event, None) if isinstance(e, LayerReceived)]
        if delivered and not restarted:  # mid-session, after the first layer verified
            snapshot = server.export_session("cam")
            assert snapshot is not None and snapshot.reassembly is not None
            server = ServerProtocol(config, keys={"cam": KEY})
            server.restore_session(snapshot)
            restarted = True
        answer = server.next_frame("cam", now + 1.0)
        if answer is not None:
            device.receive_frame(answer, now + 1.0)
        now += 10.0
    assert restarted and device.reason == "complete"
    assert delivered == list(LAYERS)
