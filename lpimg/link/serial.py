"""Serial links: a LoRa modem in transparent mode, a UART, or a TCP serial bridge.

URL forms::

    serial:///dev/ttyUSB0?baud=57600&mtu=240&framing=slip&device=cam-7
    serial://COM3?baud=9600                       (a port name without a path also works)
    socket://127.0.0.1:7000?framing=cobs          (pyserial's socket:// : ser2net, socat, a modem
                                                   bridge; both sides connect as TCP *clients*)

Query parameters: ``baud`` (default 115200; ignored by socket://), ``mtu`` (largest frame in
bytes, CRC excluded, default 240), ``framing`` (``slip``, the default, or ``cobs``; see
:mod:`lpimg.link.framing`), ``device`` (the device id the *server* side reports, default the port
name, e.g. ``ttyUSB0``, or ``host:port``), ``inbox`` (receive queue bound, default 1024 frames).

A serial line is point to point: the server side of a serial link serves exactly one device and
``send`` to any other id raises :class:`lpimg.LinkError`. Line noise, half frames, overlong
frames and CRC failures are counted in ``stats.rejected`` and dropped. A port that disappears (USB
modem unplugged, pty closed, TCP peer gone) ends the link: ``recv`` raises :class:`LinkError`
once the frames received before are consumed, and ``send`` raises. Re-opening is the caller's
decision (the endpoint knows whether a session is worth resuming); this module does not retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import serial
import serial_asyncio_fast

from lpimg.aio import cancel_and_wait
from lpimg.errors import LinkError
from lpimg.link.base import DeviceLink, Inbox, LinkStats, RejectLog, ServerLink, check_frame
from lpimg.link.framing import FRAMINGS, Deframer, Framing, encode_frame
from lpimg.link.url import LinkURL, resolve_device_id

log = logging.getLogger("lpimg.link.serial")

DEFAULT_BAUD = 115_200
DEFAULT_SERIAL_MTU = 240
_READ_CHUNK = 4096


@dataclass(frozen=True)
class SerialSettings:
    """Everything a serial link needs, parsed from its URL."""

    port: str
    """What pyserial opens: a device path, a port name, or ``socket://host:port``."""
    label: str
    """Short human name of the port, the server side's default device id."""
    baud: int = DEFAULT_BAUD
    mtu: int = DEFAULT_SERIAL_MTU
    framing: Framing = "slip"
    device: str | None = None
    inbox: int = 1024


def parse_serial_url(url: LinkURL, device_id: str | None = None) -> SerialSettings:
    """Validate a ``serial://`` or ``socket://`` URL (consuming its query parameters)."""
    if url.scheme == "socket":
        host, port_number = url.require_host()
        port = f"socket://{host}:{port_number}" if ":" not in host else f"socket://[{host}]:{port_number}"
        label = f"{host}:{port_number}"
    elif url.scheme == "serial":
        if url.hostname and url.path in ("", "/"):
            port = url.hostname  # serial://COM3
            if url.port is not None:
                raise LinkError(f"a serial port name cannot have a :port, in {url.redacted}")
        elif not url.hostname and url.path not in ("", "/"):
            port = url.path  # serial:///dev/ttyUSB0
        else:
            raise LinkError(f"expected serial:///dev/PORT or serial://NAME, got {url.redacted}")
        # /dev/ttyUSB0 -> ttyUSB0, /dev/pts/3 -> pts/3
        label = port[5:] if port.startswith("/dev/") else os.path.basename(port) or port
    else:
        raise LinkError(f"not a serial URL: {url.redacted}")
    baud = url.take_int("baud", DEFAULT_BAUD, 50, 20_000_000)
    mtu = url.take_int("mtu", DEFAULT_SERIAL_MTU, 1, 65_535)
    framing = url.take_choice("framing", "slip", FRAMINGS)
    inbox = url.take_int("inbox", 1024, 1, 1_000_000)
    device = resolve_device_id(url, device_id, required=False)
    url.finish()
    return SerialSettings(
        port=port,
        label=label,
        baud=baud,
        mtu=mtu,
        framing=framing,  # type: ignore[arg-type]
        device=device,
        inbox=inbox,
    )


class _FramedPort:
    """One open byte stream with framing: a reader task feeding a deframer into an inbox."""

    def __init__(self, settings: SerialSettings, stats: LinkStats, peer: str) -> None:
        self.settings = settings
        self.stats = stats
        self.peer = peer
        self.name = f"serial {settings.label}"
        self.reject = RejectLog(stats, self.name)
        self.deframer = Deframer(
            settings.framing, settings.mtu, on_reject=lambda cause: self.reject(cause, peer)
        )
        self.inbox: Inbox[bytes] = Inbox(settings.inbox, self.reject)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: str | None = None
        self._closed = False
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
                url=self.settings.port, baudrate=self.settings.baud
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"cannot open {self.settings.port}: {exc}") from exc
        self._task = asyncio.create_task(self._read_loop(), name=f"lpimg {self.name} reader")
        log.debug("%s: open, framing %s, mtu %d", self.name, self.settings.framing, self.settings.mtu)

    def _fail(self, reason: str) -> None:
        if self._failure is None and not self._closed:
            self._failure = reason
            log.warning("%s: %s", self.name, reason)
        self.inbox.close(self._failure or "link closed")

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    self._fail("port closed by the other end (end of stream)")
                    return
                for frame in self.deframer.feed(data):
                    self.stats.count_in(frame)
                    self.inbox.put(frame, self.peer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any read failure means the port is gone
            self._fail(f"port failed: {type(exc).__name__}: {exc}")

    async def write(self, frame: bytes) -> None:
        frame = check_frame(frame, self.settings.mtu)
        if self._closed:
            raise LinkError(f"{self.name}: link is closed")
        if self._failure is not None:
            raise LinkError(f"{self.name}: {self._failure}")
        assert self._writer is not None
        async with self._write_lock:
            try:
                self._writer.write(encode_frame(frame, self.settings.framing))
                await self._writer.drain()
            except (OSError, serial.SerialException, RuntimeError) as exc:
                self._fail(f"write failed: {exc}")
                raise LinkError(f"{self.name}: write failed: {exc}") from exc
        self.stats.count_out(frame)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.inbox.close("link closed")
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2.0)


class SerialDeviceLink(DeviceLink):
    """Device side of a serial or socket:// link. See the module docstring."""

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.mtu = settings.mtu
        self.stats = LinkStats()
        self._port = _FramedPort(settings, self.stats, peer="server")

    async def open(self) -> None:
        await self._port.open()

    async def send(self, frame: bytes) -> None:
        await self._port.write(frame)

    async def recv(self, timeout: float | None = None) -> bytes | None:
        return await self._port.inbox.get(timeout)

    async def close(self) -> None:
        self.closed = True
        await self._port.close()

    def __repr__(self) -> str:
        return f"<SerialDeviceLink {self.settings.port} {self.settings.framing} mtu={self.mtu}>"


class SerialServerLink(ServerLink):
    """Server side of a serial or socket:// link: one port, one device (``device_id``)."""

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.device_id = settings.device or settings.label
        self.mtu = settings.mtu
        self.stats = LinkStats()
        self._port = _FramedPort(settings, self.stats, peer=self.device_id)

    async def open(self) -> None:
        await self._port.open()

    async def send(self, device: str, frame: bytes) -> None:
        if device != self.device_id:
            raise LinkError(
                f"serial link {self.settings.label} reaches only device {self.device_id!r}, not {device!r}"
            )
        await self._port.write(frame)

    def prioritize(self, established: Callable[[str], bool]) -> None:
        self._port.inbox.priority = established

    async def recv(self) -> tuple[str, bytes]:
        frame = await self._port.inbox.get()
        assert frame is not None  # no timeout given
        return self.device_id, frame

    async def close(self) -> None:
        self.closed = True
        await self._port.close()

    def __repr__(self) -> str:
        return (
            f"<SerialServerLink {self.settings.port} device={self.device_id!r} "
            f"{self.settings.framing} mtu={self.mtu}>"
        )


def serial_device_link(url: LinkURL, device_id: str | None) -> SerialDeviceLink:
    """Factory for ``serial://`` and ``socket://`` device links (see :mod:`lpimg.link.url`)."""
    return SerialDeviceLink(parse_serial_url(url, device_id))


def serial_server_link(url: LinkURL) -> SerialServerLink:
    """Factory for ``serial://`` and ``socket://`` server links (see :mod:`lpimg.link.url`)."""
    return SerialServerLink(parse_serial_url(url))
