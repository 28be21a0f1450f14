"""The server's resource bounds (spec 7.7), one at a time, on the sans-I/O core's virtual clock,
and a flood that must not starve an established session."""

from __future__ import annotations

import random

import pytest

from lpimg.protocol import (
    Aborted,
    AbortReason,
    DeviceSession,
    LayerReceived,
    ProtocolConfig,
    ServerProtocol,
    SessionState,
)
from lpimg.wire import (
    DataFrame,
    ServerAbortFrame,
    StartFrame,
    build_uplink,
    parse_downlink,
)

START = build_uplink(StartFrame(1, 49, b"x" * 46, ack=True))
"""A start whose fragment 0 is not a descriptor that will ever verify (flood material)."""


def layers_of(*sizes: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for size in sizes]


def answer(server: ServerProtocol, device: str, frame: bytes, now: float) -> object:
    server.receive_frame(device, frame, now)
    reply = server.next_frame(device, now)
    return None if reply is None else parse_downlink(reply)


def transfer(device: DeviceSession, server: ServerProtocol, address: str, now: float = 0.0,
             between: object = None) -> list[bytes]:
    """Run one device to its end; ``between(now)`` runs after each of its uplinks."""
    delivered: list[bytes] = []
    while not device.finished:
        frame = device.next_frame(now)
        if frame is None:
            now = max(now, device.get_timer() or now)
            device.handle_timer(now)
            continue
        server.receive_frame(address, frame, now)
        reply = server.next_frame(address, now + 0.5)
        if reply is not None:
            device.receive_frame(reply, now + 0.5)
        if callable(between):
            between(now)
        now += 1.0
        while (event := server.next_event()) is not None:
            if isinstance(event, LayerReceived) and event.device == address:
                delivered.append(event.data)
    return delivered


def test_max_active_sessions_refuses_new_starts_and_serves_the_others() -> None:
    server = ServerProtocol(ProtocolConfig(max_active_sessions=2))
    good = DeviceSession(7, layers_of(300), mtu=51, now=0.0)
    server.receive_frame("good", good.next_frame(0.0) or b"", 0.0)
    assert answer(server, "flood-1", START, 0.0) is not None  # an ACK: admitted
    assert answer(server, "flood-2", START, 0.0) == ServerAbortFrame(AbortReason.SERVER_FULL)
    assert server.stats.limit_rejections == {"max_active_sessions": 1}
    assert transfer(good, server, "good", 1.0) == layers_of(300)
    assert good.reason == "complete"
    assert answer(server, "flood-2", START, 100.0) is not None  # a slot is free again


def test_max_session_buffer_refuses_what_could_not_finish() -> None:
    config = ProtocolConfig(max_session_buffer=66 * 49 + 600, max_layer_bytes=20_000)
    server = ServerProtocol(config)
    big_f = build_uplink(StartFrame(1, 200, b"x" * 197))
    assert answer(server, "a", big_f, 0.0) == ServerAbortFrame(AbortReason.LIMIT_EXCEEDED)
    assert server.stats.limit_rejections == {"max_session_buffer": 1}
    # A header announcing a layer whose record does not fit the buffer ends the session.
    device = DeviceSession(2, layers_of(1000), mtu=51, now=0.0, config=ProtocolConfig())
    transfer(device, server, "b")
    assert device.reason == "aborted: limit exceeded"
    assert server.stats.limit_rejections["max_session_buffer"] == 2
    # What fits is received, and the buffer bound holds all along, with loss.
    rng = random.Random(1)
    fits = DeviceSession(3, layers_of(500, 400), mtu=51, now=0.0)
    peak = 0
    now = 0.0
    while not fits.finished:
        frame = fits.next_frame(now)
        if frame is None:
            now = fits.get_timer() or now
            fits.handle_timer(now)
            continue
        if rng.random() > 0.3:
            server.receive_frame("c", frame, now)
            reply = server.next_frame("c", now)
            if reply is not None and rng.random() > 0.3:
                fits.receive_frame(reply, now)
            info = server.session("c")
            peak = max(peak, info.held_bytes if info else 0)
        now += 1.0
    assert fits.reason == "complete"
    assert 0 < peak <= config.max_session_buffer


def test_max_total_buffer_reserves_per_session() -> None:
    reservation = ProtocolConfig(max_layer_bytes=4000).session_reservation(49)
    config = ProtocolConfig(max_layer_bytes=4000, max_total_buffer=2 * reservation + reservation // 2)
    server = ServerProtocol(config)
    assert answer(server, "a", START, 0.0) is not None
    assert answer(server, "b", START, 0.0) is not None
    assert answer(server, "c", START, 0.0) == ServerAbortFrame(AbortReason.SERVER_FULL)
    assert server.stats.limit_rejections == {"max_total_buffer": 1}
    server.abort("a", AbortReason.REJECTED, 1.0)  # an ended session gives its reservation back
    assert answer(server, "c", START, 2.0) is not None


def test_sessions_without_a_descriptor_expire_after_start_timeout() -> None:
    config = ProtocolConfig(start_timeout=60.0, idle_timeout=1000.0)
    server = ServerProtocol(config)
    server.receive_frame("junk", START, 10.0)
    device = DeviceSession(4, layers_of(2000), mtu=51, now=0.0)
    for step in range(3):  # fragment 0 carries the descriptor: it verifies at once
        server.receive_frame("real", device.next_frame(10.0 + step) or b"", 10.0 + step)
    assert server.get_timer() == 70.0
    server.handle_timer(70.0)
    aborted = [e for e in iter(server.next_event, None) if isinstance(e, Aborted)]
    assert [(e.device, e.code) for e in aborted] == [("junk", AbortReason.IDLE_TIMEOUT)]
    assert "start_timeout" in aborted[0].reason
    assert server.stats.limit_rejections == {"start_timeout": 1}
    info = server.session("real")
    assert info is not None and info.state is SessionState.ACTIVE
    assert server.get_timer() == 12.0 + 1000.0  # the real session's idle timeout
    server.handle_timer(1012.0)
    assert server.stats.limit_rejections == {"start_timeout": 1, "idle_timeout": 1}


def test_the_rate_limit_is_a_token_bucket_per_device_on_the_given_clock() -> None:
    server = ServerProtocol(ProtocolConfig(rate_limit=2.0, rate_burst=3))
    for _ in range(5):
        server.receive_frame("fast", b"\xff", 0.0)  # malformed, but counted only if read
    assert server.stats.malformed == 3 and server.stats.limit_rejections == {"rate_limit": 2}
    server.receive_frame("other", b"\xff", 0.0)  # another device has its own bucket
    assert server.stats.malformed == 4
    for _ in range(2):
        server.receive_frame("fast", b"\xff", 1.0)  # one second: two tokens more
    server.receive_frame("fast", b"\xff", 1.0)
    assert server.stats.malformed == 6 and server.stats.limit_rejections == {"rate_limit": 3}
    assert server.next_frame("fast", 1.0) is None  # dropped frames are not answered


def test_rate_limited_devices_still_finish_at_their_pace() -> None:
    server = ServerProtocol(ProtocolConfig(rate_limit=1.0, rate_burst=4))
    device = DeviceSession(6, layers_of(800), mtu=51, now=0.0)
    assert transfer(device, server, "paced") == layers_of(800)  # one frame a second fits
    assert "rate_limit" not in server.stats.limit_rejections


@pytest.mark.parametrize("seed", [1, 2])
def test_a_flood_of_garbage_and_starts_does_not_starve_established_sessions(seed: int) -> None:
    config = ProtocolConfig(max_active_sessions=20, rate_limit=5.0, rate_burst=10, start_timeout=30.0)
    server = ServerProtocol(config)
    rng = random.Random(seed)
    established = {f"cam-{n}": DeviceSession(n, layers_of(1500, 500, seed=n), mtu=51, now=0.0)
                   for n in range(5)}
    for name, device in established.items():
        server.receive_frame(name, device.next_frame(0.0) or b"", 0.0)
    floods = 0

    def flood(now: float) -> None:
        nonlocal floods
        for _ in range(40):
            floods += 1
            who = f"flood-{rng.randrange(10_000)}"
            kind = rng.random()
            if kind < 0.4:
                frame = START
            elif kind < 0.7:
                frame = rng.randbytes(rng.randrange(1, 60))
            else:
                frame = build_uplink(DataFrame(rng.randrange(100), rng.randbytes(49), ack=True))
            server.receive_frame(who, frame, now)
            server.next_frame(who, now)
        for _ in range(20):  # a noisy neighbour: rate-limited
            server.receive_frame("noisy", rng.choice([START, rng.randbytes(8)]), now)
        server.handle_timer(now)

    results = {}
    now = 1.0
    for name, device in established.items():
        results[name] = transfer(device, server, name, now, between=flood)
    for n, (name, device) in enumerate(established.items()):
        assert device.reason == "complete", (name, device.reason)
        assert results[name] == layers_of(1500, 500, seed=n)
    assert floods > 1000
    rejected = server.stats.limit_rejections
    assert rejected["max_active_sessions"] > 0 and rejected["rate_limit"] > 0
    assert server.stats.malformed > 0 and server.stats.unknown_session > 0
