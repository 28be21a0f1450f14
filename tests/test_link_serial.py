"""Serial links over real socat pty pairs and a real local TCP server (socket://)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

import lpimg
from lpimg.link import open_device_link, open_server_link
from lpimg.link.framing import Deframer, encode_frame

pytestmark = pytest.mark.timeout(30)

FRAMINGS = ["slip", "cobs"]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_frames_both_ways_over_a_pty_pair(pty_pair: Any, framing: str, arun: Any) -> None:
    a, b = pty_pair
    frames = [bytes([i]) * (1 + i * 7 % 240) for i in range(30)] + [b"\xc0\xdb\x00" * 80]

    async def main() -> None:
        async with (
            open_device_link(f"serial://{a}?baud=57600&framing={framing}", "cam") as device,
            open_server_link(f"serial://{b}?framing={framing}&device=cam") as server,
        ):
            for frame in frames:
                await device.send(frame)
            got = [await asyncio.wait_for(server.recv(), 5) for _ in frames]
            assert got == [("cam", f) for f in frames]
            await server.send("cam", b"ack")
            assert await device.recv(timeout=5) == b"ack"
            assert await device.recv(timeout=0.05) is None
            with pytest.raises(lpimg.LinkError, match="reaches only device 'cam'"):
                await server.send("other", b"x")
            with pytest.raises(lpimg.LinkError, match="exceeds the link MTU"):
                await device.send(b"x" * 241)
            assert device.stats.frames_out == len(frames)
            assert server.stats.frames_in == len(frames)
            assert server.stats.bytes_in == sum(map(len, frames))
            assert server.stats.dropped_malformed == server.stats.crc_errors == 0
        with pytest.raises(lpimg.LinkError, match="closed"):
            await device.send(b"late")
        with pytest.raises(lpimg.LinkError, match="closed"):
            await device.recv(timeout=1)

    arun(main())


@pytest.mark.parametrize("framing", FRAMINGS)
def test_noise_and_half_frames_on_a_real_pty(pty_pair: Any, framing: str, arun: Any) -> None:
    """Raw bytes written to the other end of the cable: garbage, a frame cut in half, a frame
    with a flipped bit, an endless run without delimiter. Only the intact frames come out, and
    every drop is counted."""
    a, b = pty_pair

    def line(frame: bytes) -> bytes:
        return encode_frame(frame, framing)  # type: ignore[arg-type]

    good = [b"first", b"second", b"third"]
    flipped = bytearray(line(b"damaged"))
    flipped[3] ^= 0x40
    junk = (
        os.urandom(50)
        + line(good[0])
        + line(b"cut in half by a reset")[:9]
        + bytes(flipped)
        + line(good[1])
        + b"\x55" * 2000
        + line(good[2])
    )

    async def main() -> None:
        async with open_server_link(f"serial://{a}?framing={framing}&mtu=64") as server:
            fd = os.open(b, os.O_RDWR | os.O_NOCTTY)
            try:
                for i in range(0, len(junk), 97):  # dribble it out in odd-sized chunks
                    os.write(fd, junk[i : i + 97])
                    await asyncio.sleep(0)
                got = [(await asyncio.wait_for(server.recv(), 5))[1] for _ in good]
            finally:
                os.close(fd)
            # Anything that random noise decodes to must carry a valid CRC (1 in 65536).
            assert got == good or set(good) <= set(got)
            rejected = server.stats.rejected
            # The half frame and the flipped bit: a CRC failure, or a framing error when the
            # damage hits a COBS code byte.
            assert rejected["crc"] + rejected["bad_framing"] + rejected["runt"] >= 2
            assert rejected["oversize"] >= 1  # the 2000-byte run
            assert server.stats.crc_errors + server.stats.dropped_malformed == sum(rejected.values())

    arun(main())


def test_a_vanished_pty_peer_ends_the_link_with_a_reason(pty_pair: Any, arun: Any) -> None:
    a, _ = pty_pair

    async def main() -> None:
        device = await open_device_link(f"serial://{a}")
        pty_pair.proc.send_signal(signal.SIGKILL)  # pull the cable: socat closes both ptys
        with pytest.raises(lpimg.LinkError, match="port"):
            while True:  # frames already received would come out first; none were sent
                await device.recv(timeout=5)
        with pytest.raises(lpimg.LinkError):
            await device.send(b"anyone?")
        await device.close()

    arun(main())


def test_opening_a_missing_port_fails_clearly(arun: Any) -> None:
    async def main() -> None:
        with pytest.raises(lpimg.LinkError, match="cannot open /dev/does-not-exist"):
            await open_device_link("serial:///dev/does-not-exist")

    arun(main())


class FramedEchoServer:
    """A real TCP server speaking the same framing: a stand-in for ser2net + a modem. It answers
    each frame with the frame reversed, and can be told to drop the connection."""

    def __init__(self, framing: str) -> None:
        self.framing = framing
        self.received: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        deframer = Deframer(self.framing, 240)  # type: ignore[arg-type]
        while data := await reader.read(4096):
            for frame in deframer.feed(data):
                self.received.append(frame)
                writer.write(b"\x00noise\xc0" + encode_frame(frame[::-1], self.framing))  # type: ignore[arg-type]
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("framing", FRAMINGS)
def test_socket_url_over_a_local_tcp_server(framing: str, arun: Any) -> None:
    async def main() -> None:
        echo = FramedEchoServer(framing)
        port = await echo.start()
        try:
            url = f"socket://127.0.0.1:{port}?framing={framing}"
            async with open_server_link(url) as server:
                assert server.device_id == f"127.0.0.1:{port}"  # type: ignore[attr-defined]
                await server.send(f"127.0.0.1:{port}", b"downlink")
                assert await asyncio.wait_for(server.recv(), 5) == (f"127.0.0.1:{port}", b"knilnwod")
            device = await open_device_link(url, "cam")
            for i in range(20):
                await device.send(b"frame %d" % i)
            got = [await device.recv(timeout=5) for _ in range(20)]
            assert got == [(b"frame %d" % i)[::-1] for i in range(20)]
            assert echo.received[1:] == [b"frame %d" % i for i in range(20)]
            # The bridge drops the connection: the device learns it, with the frames it already
            # had still delivered first.
            await device.send(b"last")
            assert await device.recv(timeout=5) == b"tsal"
            for writer in echo.writers:
                writer.close()
            with pytest.raises(lpimg.LinkError, match="closed by the other end"):
                await device.recv(timeout=5)
            await device.close()
        finally:
            await echo.stop()

    arun(main())


def test_socket_url_refused(arun: Any) -> None:
    async def main() -> None:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        with pytest.raises(lpimg.LinkError, match="cannot open socket://127.0.0.1"):
            await open_device_link(f"socket://127.0.0.1:{port}")

    arun(main())
