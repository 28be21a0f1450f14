"""The link inbox: bounded, closable, and with a lane for established sessions that a flood from
other devices cannot fill or delay."""

from __future__ import annotations

import asyncio

import pytest

from lpimg.errors import LinkError
from lpimg.link.base import Inbox, LinkStats, RejectLog


def make(maxsize: int) -> tuple[Inbox[tuple[str, int]], LinkStats]:
    stats = LinkStats()
    return Inbox(maxsize, RejectLog(stats, "test")), stats


def test_frames_of_established_devices_go_first_and_are_not_dropped_by_a_flood() -> None:
    inbox, stats = make(4)
    inbox.priority = lambda device: device.startswith("cam")
    for n in range(10):
        inbox.put((f"noise-{n}", n), f"noise-{n}")
    inbox.put(("cam-1", 100), "cam-1")
    inbox.put(("cam-2", 101), "cam-2")
    assert stats.rejected["inbox_full"] == 6  # the flood overflowed its own lane only
    got = [inbox.get_nowait() for _ in range(6)]
    assert got == [("cam-1", 100), ("cam-2", 101), ("noise-0", 0), ("noise-1", 1), ("noise-2", 2),
                   ("noise-3", 3)]
    assert inbox.get_nowait() is None


def test_without_a_priority_it_is_one_fifo() -> None:
    inbox, stats = make(3)
    for n in range(5):
        inbox.put(("d", n), "d")
    assert [inbox.get_nowait() for _ in range(3)] == [("d", 0), ("d", 1), ("d", 2)]
    assert stats.rejected["inbox_full"] == 2


def test_get_waits_times_out_and_reports_the_close_after_what_was_queued() -> None:
    async def main() -> None:
        inbox, _ = make(8)
        assert await inbox.get(timeout=0.01) is None
        waiter = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        inbox.put(("d", 1), "d")
        assert await waiter == ("d", 1)
        inbox.put(("d", 2), "d")
        inbox.close("link closed")
        assert not inbox.put(("d", 3), "d")
        assert await inbox.get() == ("d", 2)
        with pytest.raises(LinkError, match="link closed"):
            await inbox.get()
        with pytest.raises(LinkError, match="link closed"):
            await inbox.get(timeout=1.0)

    asyncio.run(main())


def test_a_cancelled_get_loses_nothing() -> None:
    async def main() -> None:
        inbox, _ = make(8)
        getter = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        getter.cancel()
        inbox.put(("d", 1), "d")
        with pytest.raises(asyncio.CancelledError):
            await getter
        assert await inbox.get() == ("d", 1)

    asyncio.run(main())


def test_a_session_is_established_once_its_descriptor_verified() -> None:
    from lpimg.protocol import DeviceSession, ServerProtocol
    from lpimg.wire import StartFrame, build_uplink

    server = ServerProtocol()
    server.receive_frame("bogus", build_uplink(StartFrame(1, 49, b"x" * 46, ack=True)), 0.0)
    assert server.session("bogus") is not None and not server.is_established("bogus")
    device = DeviceSession(7, [bytes(range(200)), bytes(300)], mtu=51, now=0.0)
    assert not server.is_established("cam")
    states = []
    now = 0.0
    while not device.finished and now < 200:
        frame = device.next_frame(now)
        if frame is None:
            now = max(now, device.get_timer() or now)
            device.handle_timer(now)
            continue
        server.receive_frame("cam", frame, now)
        states.append(server.is_established("cam"))
        reply = server.next_frame("cam", now)
        if reply is not None:
            device.receive_frame(reply, now)
        now += 1.0
    assert True in states  # described: its frames go first
    assert not server.is_established("cam")  # complete: no longer a transfer under way


def test_a_server_with_a_device_list_hands_listed_devices_frames_over_first() -> None:
    """A listed device's session start must not queue behind garbage from unknown ids."""
    from lpimg.endpoint import Server
    from lpimg.link import open_server_link

    async def check() -> tuple[bool, bool, bool]:
        async with open_server_link("sim://lorawan-eu868:dr5") as link:
            listed = Server(link, decode=False, devices={"cam-1"})
            anyone = Server(link, decode=False)
            return (listed._prioritized("cam-1"), listed._prioritized("stranger"),
                    anyone._prioritized("cam-1"))

    assert asyncio.run(check()) == (True, False, False)
