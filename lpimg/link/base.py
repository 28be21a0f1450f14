"""The transport interface every lpimg link implements, and the bookkeeping they share.

The protocol core (``lpimg.protocol``) is sans-I/O: it hands out opaque frames and takes them
back. A link only has to move those frames, each at most ``mtu`` bytes, between one device and a
server. Two shapes exist because the two roles see the network differently:

- a :class:`DeviceLink` talks to exactly one peer (the server), so ``send(frame)`` needs no
  address;
- a :class:`ServerLink` hears many devices on one connection (an MQTT broker, a LoRaWAN network
  server), so frames come with the device id they are from and are sent to a device id.

Links are deliberately *unreliable datagram* services, like the radio under them: they never
retransmit, may drop, and report what they dropped in :class:`LinkStats` instead of raising.
Reliability is the protocol's job (bitmap ACKs), which is what lets the same protocol run over a
LoRaWAN network server, a serial modem and the simulator.

Errors: anything a *peer* sends that we cannot use (line noise, bad JSON, an unknown port, an
oversized frame) is logged once per (cause, device), counted and dropped; it never surfaces from
``recv``. Mistakes of the *caller* (an oversized frame to ``send``, a bad URL, using a closed link)
and a transport that is gone for good raise :class:`lpimg.LinkError`.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Self, TypeVar

from lpimg.errors import LinkError
from lpimg.logs import OncePerDevice

log = logging.getLogger("lpimg.link")

CRC_CAUSE = "crc"
"""The rejection cause that is counted in :attr:`LinkStats.crc_errors` rather than in
:attr:`LinkStats.dropped_malformed`."""


@dataclass
class LinkStats:
    """Counters of one link. Cheap, always on, and meant to be logged or exported as they are.

    ``rejected`` holds a count per cause of every inbound unit (frame candidate, MQTT message)
    that was dropped before reaching the caller. The causes in use are:

    ``crc`` (serial frame whose CRC-16 did not match), ``runt`` (too short to hold a CRC),
    ``bad_framing`` (SLIP escape or COBS code error), ``oversize`` (longer than the MTU),
    ``bad_topic``, ``bad_json``, ``bad_schema`` (valid JSON of the wrong shape),
    ``bad_base64``, ``unknown_port`` (LoRaWAN FPort other than lpimg's), ``empty`` (no payload),
    ``inbox_full`` (the caller did not keep up and the bounded receive queue overflowed).

    ``crc_errors`` is ``rejected["crc"]``; ``dropped_malformed`` is the sum of every other cause.
    ``dropped_out`` counts frames accepted by ``send`` that were never transmitted (the bounded
    outbox of a disconnected MQTT link overflowed, or the link was closed with frames queued).
    """

    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    dropped_malformed: int = 0
    crc_errors: int = 0
    dropped_out: int = 0
    reconnects: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def count_in(self, frame: bytes) -> None:
        self.frames_in += 1
        self.bytes_in += len(frame)

    def count_out(self, frame: bytes) -> None:
        self.frames_out += 1
        self.bytes_out += len(frame)

    def count_rejected(self, cause: str) -> None:
        self.rejected[cause] += 1
        if cause == CRC_CAUSE:
            self.crc_errors += 1
        else:
            self.dropped_malformed += 1


class RejectLog:
    """Counts rejections and logs each (cause, device) pair once.

    A misconfigured device can send the same garbage every few seconds for months; logging every
    occurrence would drown the gateway's log, logging none would hide it. The first one of each
    kind is a WARNING with details, the rest are DEBUG and show up in the counters; a flood from
    ever new device ids is summarised once a minute per cause (:class:`lpimg.logs.OncePerDevice`).
    """

    def __init__(self, stats: LinkStats, name: str) -> None:
        self._stats = stats
        self._name = name
        self._log = OncePerDevice(log, prefix=f"{name}: ")

    def __call__(self, cause: str, device: str = "-", detail: str = "") -> None:
        self._stats.count_rejected(cause)
        self._log(cause, device, "%s: dropped %s input from %r%s", self._name, cause, device,
                  f" ({detail})" if detail else "")


def check_frame(frame: bytes, mtu: int) -> bytes:
    """Validate an outgoing frame: the caller's bug if it is empty, too long or not bytes."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise LinkError(f"a frame must be bytes, not {type(frame).__name__}")
    frame = bytes(frame)
    if not frame:
        raise LinkError("refusing to send an empty frame")
    if len(frame) > mtu:
        raise LinkError(f"frame of {len(frame)} bytes exceeds the link MTU of {mtu}")
    return frame


T = TypeVar("T")


class Inbox(Generic[T]):
    """A bounded, cancellation-safe receive queue that can be closed with a reason.

    Producers (a serial reader task, an MQTT message callback) must never block on a slow
    consumer: an overflowing inbox drops the new item and counts ``inbox_full``. Once closed,
    every pending and future ``get`` raises :class:`LinkError` with the reason, after the items
    already queued have been handed out.

    Items from devices ``priority(device)`` says yes to go in a lane of their own (as large
    again) that ``get`` empties first. A server sets it to "this device has an established
    session" (:meth:`ServerLink.prioritize`), so that when a flood of garbage or of session
    starts arrives faster than it can handle, the frames of sessions already under way are
    neither dropped behind the flood nor kept waiting past their ACK timeouts.
    """

    def __init__(self, maxsize: int, reject: RejectLog) -> None:
        self._lanes: tuple[deque[T], deque[T]] = (deque(), deque())  # (priority, others)
        self._maxsize = maxsize
        self._reject = reject
        self._closed: str | None = None
        self._ready = asyncio.Event()
        self.priority: Callable[[str], bool] | None = None

    def put(self, item: T, device: str = "-") -> bool:
        if self._closed is not None:
            return False
        priority = self.priority
        lane = self._lanes[0 if priority is not None and priority(device) else 1]
        if len(lane) >= self._maxsize:
            self._reject("inbox_full", device, f"receive queue of {self._maxsize} frames full")
            return False
        lane.append(item)
        self._ready.set()
        return True

    def close(self, reason: str) -> None:
        if self._closed is not None:
            return
        self._closed = reason
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def __len__(self) -> int:
        return len(self._lanes[0]) + len(self._lanes[1])

    def get_nowait(self) -> T | None:
        """The next item if one is queued (priority lane first), else None; :class:`LinkError`
        once closed and empty."""
        first, second = self._lanes
        if first:
            return first.popleft()
        if second:
            return second.popleft()
        if self._closed is not None:
            raise LinkError(self._closed)
        return None

    async def get(self, timeout: float | None = None) -> T | None:
        """Next item, ``None`` after ``timeout`` seconds, :class:`LinkError` once closed."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    item = self.get_nowait()
                    if item is not None:
                        return item
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            return None


class DeviceLink(abc.ABC):
    """The device's side of a link: one peer, frames of at most ``mtu`` bytes.

    Use it as an async context manager, or call :meth:`close` yourself::

        async with open_device_link("mqtt://broker:1883", "cam-7") as link:
            await link.send(frame)
            reply = await link.recv(timeout=5.0)   # None if nothing came
    """

    mtu: int
    stats: LinkStats
    closed: bool = False
    """True once :meth:`close` was called."""

    async def open(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Connect the transport; :func:`lpimg.link.open_device_link` and
        :func:`lpimg.link.open_server_link` call it for you. Raises :class:`LinkError` when the
        port or broker cannot be reached. The default does nothing (for links with nothing to
        connect)."""

    @abc.abstractmethod
    async def send(self, frame: bytes) -> None:
        """Transmit one frame. Raises :class:`LinkError` for a frame over ``mtu``, an empty one,
        or a link that is closed or broken for good. Does not wait for any acknowledgement."""

    @abc.abstractmethod
    async def recv(self, timeout: float | None = None) -> bytes | None:
        """The next frame from the server; ``None`` when ``timeout`` seconds pass without one.

        Raises :class:`LinkError` once the link is closed or its transport is gone for good
        (frames that arrived before that are still handed out first)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the transport. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ServerLink(abc.ABC):
    """The server's side of a link: many devices, each frame tagged with a device id.

    ``mtu`` is the largest frame accepted in either direction; longer uplinks are counted as
    ``oversize`` and dropped. Iterating the link yields ``(device, frame)`` until it is closed::

        async with open_server_link("ttn://eu1.cloud.thethings.network:8883?app=cams&tls=1") as s:
            async for device, frame in s:
                ...
    """

    mtu: int
    stats: LinkStats
    closed: bool = False
    """True once :meth:`close` was called."""

    async def open(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Connect the transport; :func:`lpimg.link.open_device_link` and
        :func:`lpimg.link.open_server_link` call it for you. Raises :class:`LinkError` when the
        port or broker cannot be reached. The default does nothing (for links with nothing to
        connect)."""

    @abc.abstractmethod
    async def send(self, device: str, frame: bytes) -> None:
        """Transmit one frame to ``device``. Raises :class:`LinkError` for a bad frame, a device
        id this link cannot address, or a link that is closed or broken for good."""

    def prioritize(self, established: Callable[[str], bool]) -> None:  # noqa: B027 - optional
        """Hand frames from devices ``established(device)`` says yes to before others when
        frames queue up (see :class:`Inbox`). Links without a receive queue of their own
        ignore it."""

    @abc.abstractmethod
    async def recv(self) -> tuple[str, bytes]:
        """The next ``(device id, frame)``. Malformed input never comes out of here; it is
        counted in :attr:`stats`. Raises :class:`LinkError` once the link is closed or its
        transport is gone for good. Cancelling it (``asyncio.wait_for``) loses nothing."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the transport. Idempotent."""

    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[str, bytes]]:
        """Ends quietly when the link was closed by its owner; a transport that broke on its
        own raises, so a serving loop cannot mistake a dead port for a quiet night."""
        while True:
            try:
                item = await self.recv()
            except LinkError:
                if self.closed:
                    return
                raise
            yield item

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
