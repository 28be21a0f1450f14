"""Closing a server whose link is busy returns promptly (lpimg.aio): a cancellation that 3.11's
``asyncio.wait_for`` swallows inside the link must not leave ``close()`` waiting for ever, and
``close()`` must not swallow the cancellation of whoever awaits it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import pytest

from lpimg.aio import cancel_and_wait
from lpimg.endpoint import Server
from lpimg.errors import LinkError
from lpimg.link.base import LinkStats, ServerLink
from lpimg.wire import StartFrame, build_uplink


class BusyLink(ServerLink):
    """Always has an uplink ready, and answers through ``asyncio.wait_for`` on a future that is
    already completing (as aiomqtt's publish does when the broker keeps up): the window in which
    3.11's wait_for drops a cancellation is open on every send."""

    mtu = 242

    def __init__(self) -> None:
        self.stats = LinkStats()
        self.received = 0

    async def recv(self) -> tuple[str, bytes]:
        await asyncio.sleep(0)
        if self.closed:
            raise LinkError("link closed")
        self.received += 1
        n = self.received
        frame = build_uplink(StartFrame(n & 0xFFFF, 49, b"x" * 46, ack=True)) if n % 3 else b"\x22\x33"
        return f"dev-{n % 50}", frame

    async def send(self, device: str, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_soon(done.set_result, None)
        await asyncio.wait_for(done, 5)

    async def close(self) -> None:
        self.closed = True


def test_a_server_closed_while_its_link_is_busy_returns_promptly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    rng = random.Random(5)

    async def main() -> None:
        for _ in range(40):
            link = BusyLink()
            server = Server(link, decode=False)
            task = server.start()
            await asyncio.sleep(rng.random() * 0.01)
            closing = asyncio.create_task(server.close())
            await asyncio.wait({closing}, timeout=5)  # no cancellation: close() might lose it
            if not closing.done():
                await link.close()  # ends the stuck server, so the test fails instead of hanging
                await asyncio.wait({closing, task}, timeout=5)
                pytest.fail("close() did not return within 5 s while the link was busy")
            assert task.done()
            assert link.received > 0

    asyncio.run(main())


def test_cancel_and_wait_lets_the_callers_cancellation_through() -> None:
    async def stubborn() -> None:
        for _ in range(100):  # ignores cancellation for 2 seconds
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.02)

    async def main() -> None:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0.001)  # let it start ignoring
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await cancel_and_wait(task, retry=0.01)
        assert not task.done()
        await cancel_and_wait(task, retry=0.01)  # it does end, eventually
        assert task.done()

    asyncio.run(main())


def test_cancel_and_wait_returns_what_the_task_failed_with() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    async def main() -> None:
        task = asyncio.create_task(fails())
        await asyncio.sleep(0)
        failure = await cancel_and_wait(task)
        assert isinstance(failure, ValueError)

    asyncio.run(main())
