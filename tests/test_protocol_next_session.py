"""A device's next session whose start was lost, while the server still remembers the previous
(finished) one: frames other than START carry no session id, so the server must tell the new
session's fragments from the old one's late ones, or the device takes the old session's end for
its own (a fixed camera sends picture after picture: this happens at every lost start)."""

from __future__ import annotations

from lpimg.protocol import DeviceSession, ServerProtocol
from lpimg.protocol.events import LayerReceived
from lpimg.wire import (
    AbortReason,
    DataFrame,
    LayerCompleteFrame,
    ServerAbortFrame,
    parse_downlink,
    parse_uplink,
)


def run(device: DeviceSession, server: ServerProtocol, now: float) -> tuple[list[bytes], float]:
    """Every frame reaches the other side; returns the uplinks and the time at the end."""
    sent = []
    for _ in range(1000):
        if device.finished:
            return sent, now
        frame = device.next_frame(now)
        if frame is None:
            timer = device.get_timer()
            assert timer is not None
            now = max(now, timer)
            device.handle_timer(now)
            continue
        sent.append(frame)
        server.receive_frame("dev", frame, now)
        answer = server.next_frame("dev", now + 1)
        if answer is not None:
            device.receive_frame(answer, now + 1)
        now += 10
    raise AssertionError("the session did not end")


def delivered(server: ServerProtocol) -> list[bytes]:
    return [event.data for event in iter(server.next_event, None) if isinstance(event, LayerReceived)]


def test_a_lost_start_after_a_finished_session_is_detected_and_sent_again() -> None:
    server = ServerProtocol()
    first = DeviceSession(1, [b"\x01" * 60, b"\x02" * 40], mtu=24, now=0.0)
    uplinks, now = run(first, server, 0.0)
    assert first.reason == "complete"
    assert delivered(server) == [b"\x01" * 60, b"\x02" * 40]
    # a late copy of the first session's fragment 1 still gets the first session's end
    late = next(f for f in uplinks if isinstance(parse_uplink(f), DataFrame))
    server.receive_frame("dev", bytes([late[0] | 0x40]) + late[1:], now)  # with the ack flag
    assert parse_downlink(server.next_frame("dev", now + 1) or b"") == LayerCompleteFrame(2)

    second = DeviceSession(2, [b"\x03" * 60, b"\x04" * 40], mtu=24, now=now)
    assert second.next_frame(now) is not None  # the START: lost
    data = second.next_frame(now + 10)
    assert data is not None
    server.receive_frame("dev", data, now + 10)
    answer = server.next_frame("dev", now + 11)
    assert answer is not None and parse_downlink(answer) == ServerAbortFrame(AbortReason.UNKNOWN_SESSION)
    second.receive_frame(answer, now + 11)
    _, now = run(second, server, now + 20)
    assert second.reason == "complete" and second.stats.restarts == 1
    assert delivered(server) == [b"\x03" * 60, b"\x04" * 40]

