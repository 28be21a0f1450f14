"""Seeded frame loss on top of any real link, to exercise the protocol's recovery end to end.

The simulator (``sim://``) models loss on a virtual radio; these wrappers drop frames of a *real*
transport (a pty pair, a mosquitto broker) with a seeded random stream, so an integration test or
a field trial can show that the ACK and retransmission machinery, not a perfect wire, delivered
the picture::

    link = LossyDeviceLink(await open_device_link(url, "cam"), uplink=0.2, downlink=0.2, seed=3)

Besides the random loss, ``drop_up`` / ``drop_down`` name frames to lose for sure (0-based
positions in each direction), so a test over a real link, whose frame sequence depends on
timing, can still be certain that both directions lost something. Dropped frames are counted in
``dropped`` (per direction) and never reach the other end; the inner link's own stats still
count what it carried.
"""

from __future__ import annotations

import random
from collections.abc import Collection

from lpimg.errors import LinkError
from lpimg.link.base import DeviceLink, LinkStats, ServerLink


def _check(rate: float, name: str) -> float:
    if not 0.0 <= rate < 1.0:
        raise LinkError(f"{name} loss must be in [0, 1), got {rate}")
    return rate


class _Dropper:
    """One direction's loss: the listed frame positions, and the rest at random."""

    def __init__(self, rate: float, rng: random.Random, listed: Collection[int]) -> None:
        self._rate = rate
        self._rng = rng
        self._listed = frozenset(listed)
        self._count = 0

    def lost(self) -> bool:
        position, self._count = self._count, self._count + 1
        draw = self._rng.random() < self._rate  # drawn always: listed drops keep the stream
        return position in self._listed or draw


class LossyDeviceLink(DeviceLink):
    """A device link that loses each uplink with probability ``uplink`` (not sent at all) and
    each downlink with probability ``downlink`` (received, then discarded)."""

    def __init__(
        self, inner: DeviceLink, *, uplink: float = 0.0, downlink: float = 0.0, seed: int = 0,
        drop_up: Collection[int] = (), drop_down: Collection[int] = (),
    ) -> None:
        self.inner = inner
        self.mtu = inner.mtu
        self.uplink = _check(uplink, "uplink")
        self.downlink = _check(downlink, "downlink")
        self._up = _Dropper(uplink, random.Random(f"lossy/{seed}/up"), drop_up)
        self._down = _Dropper(downlink, random.Random(f"lossy/{seed}/down"), drop_down)
        self.dropped = {"up": 0, "down": 0}

    @property
    def stats(self) -> LinkStats:  # type: ignore[override]
        return self.inner.stats

    async def open(self) -> None:
        await self.inner.open()

    async def send(self, frame: bytes) -> None:
        if self._up.lost():
            self.dropped["up"] += 1
            return
        await self.inner.send(frame)

    async def recv(self, timeout: float | None = None) -> bytes | None:
        while True:
            frame = await self.inner.recv(timeout)
            if frame is None or not self._down.lost():
                return frame
            self.dropped["down"] += 1
            if timeout is not None and timeout <= 0:
                return None

    async def close(self) -> None:
        self.closed = True
        await self.inner.close()


class LossyServerLink(ServerLink):
    """A server link that loses each uplink with probability ``uplink`` (received, then
    discarded) and each downlink with probability ``downlink`` (not sent)."""

    def __init__(
        self, inner: ServerLink, *, uplink: float = 0.0, downlink: float = 0.0, seed: int = 0,
        drop_up: Collection[int] = (), drop_down: Collection[int] = (),
    ) -> None:
        self.inner = inner
        self.mtu = inner.mtu
        self.uplink = _check(uplink, "uplink")
        self.downlink = _check(downlink, "downlink")
        self._up = _Dropper(uplink, random.Random(f"lossy/{seed}/server-up"), drop_up)
        self._down = _Dropper(downlink, random.Random(f"lossy/{seed}/server-down"), drop_down)
        self.dropped = {"up": 0, "down": 0}

    @property
    def stats(self) -> LinkStats:  # type: ignore[override]
        return self.inner.stats

    async def open(self) -> None:
        await self.inner.open()

    async def send(self, device: str, frame: bytes) -> None:
        if self._down.lost():
            self.dropped["down"] += 1
            return
        await self.inner.send(device, frame)

    async def recv(self) -> tuple[str, bytes]:
        while True:
            item = await self.inner.recv()
            if not self._up.lost():
                return item
            self.dropped["up"] += 1

    async def close(self) -> None:
        self.closed = True
        await self.inner.close()
