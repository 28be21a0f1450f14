"""The server core's timer and eviction bookkeeping (lpimg.protocol.timers) gives exactly what a
scan over every session would: the earliest deadline, the sessions due, the longest-finished
session to forget. Checked against that scan under random traffic on a virtual clock."""

from __future__ import annotations

import random

import pytest

from lpimg.protocol import DeviceSession, ProtocolConfig, ServerProtocol, SessionState
from lpimg.protocol.timers import DeadlineQueue, FinishOrder
from lpimg.wire import StartFrame, build_uplink


def scan_deadline(server: ServerProtocol) -> float | None:
    """What get_timer() gave before it kept a heap: the minimum over every session."""
    sessions = server._sessions.values()
    return min((server._deadline(s) for s in sessions), default=None)


def scan_oldest_finished(server: ServerProtocol) -> float | None:
    """The finish time of the session a scan would evict (ties may go to any of them)."""
    finished = [s.finished_at for s in server._sessions.values() if s.state is not SessionState.ACTIVE]
    return min((at for at in finished if at is not None), default=None)


@pytest.mark.parametrize("seed", range(4))
def test_get_timer_and_eviction_match_a_scan_of_every_session(seed: int) -> None:
    rng = random.Random(seed)
    config = ProtocolConfig(max_sessions=20, max_active_sessions=15, idle_timeout=50.0,
                            start_timeout=20.0, finished_retention=200.0)
    server = ServerProtocol(config)
    devices = [f"d{i}" for i in range(60)]
    senders: dict[str, DeviceSession] = {}
    now = 0.0
    for step in range(3000):
        now += rng.choice([0.0, 0.1, 1.0, 5.0])
        device = rng.choice(devices)
        roll = rng.random()
        if roll < 0.15:  # a start that never describes anything (flood material)
            frame = build_uplink(StartFrame(rng.randrange(1 << 16), 49, rng.randbytes(46), ack=True))
        elif roll < 0.2:
            frame = rng.randbytes(rng.randint(1, 40))  # garbage
        else:
            sender = senders.get(device)
            if sender is None or sender.finished:
                layers = [rng.randbytes(rng.randint(10, 300)) for _ in range(rng.randint(1, 3))]
                sender = senders[device] = DeviceSession(rng.randrange(1 << 16), layers, mtu=51, now=now)
            frame = sender.next_frame(now)
            if frame is None:
                sender.handle_timer(max(now, sender.get_timer() or now))
                continue
        oldest = server._finish_order.oldest()
        assert (None if oldest is None else server._sessions[oldest].finished_at) == \
            scan_oldest_finished(server)
        server.receive_frame(device, frame, now)
        reply = server.next_frame(device, now)
        sender = senders.get(device)
        if reply is not None and sender is not None and not sender.finished:
            sender.receive_frame(reply, now)
        while server.next_event() is not None:
            pass
        if step % 7 == 0:
            due = [d for d, s in server._sessions.items() if server._deadline(s) <= now]
            timer = server.get_timer()
            assert timer == scan_deadline(server)
            assert (timer is not None and timer <= now) == bool(due)
            server.handle_timer(now)
            assert all(server._deadline(s) > now for s in server._sessions.values())
        assert server.get_timer() == scan_deadline(server)
        assert len(server._timers._heap) <= 2 * len(server._sessions) + 64 + len(devices)
    assert server.stats.sessions_evicted > 0  # the bound was reached and eviction exercised


def test_deadline_queue_reports_changes_it_was_not_told_of_no_later_than_the_old_deadline() -> None:
    deadlines: dict[str, float] = {"a": 5.0, "b": 7.0}
    queue = DeadlineQueue(deadlines.get, lambda: deadlines)
    queue.touch("a")
    queue.touch("b")
    assert queue.earliest() == 5.0
    deadlines["a"] = 9.0  # not touched: found stale at the top, pushed again
    assert queue.earliest() == 7.0
    del deadlines["b"]
    assert queue.earliest() == 9.0
    assert queue.due(8.0) == []
    assert queue.due(9.0) == ["a"]
    assert queue.earliest() is None  # taken off; the owner touches it again after acting


def test_finish_order_sorts_again_when_a_finish_time_goes_back() -> None:
    finished = {"a": 10.0, "b": 3.0, "c": 12.0}
    order = FinishOrder(finished.get)
    for key in ("a", "b", "c"):
        order.add(key, finished[key])
    assert order.oldest() == "b"
    del finished["b"]
    assert order.oldest() == "a"
    finished["a"] = 20.0  # finished again later: re-added at its new time
    order.add("a", 20.0)
    assert order.oldest() == "c"
