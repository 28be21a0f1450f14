"""A whole picture over a real pty pair (socat), with seeded frame loss and line noise."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from endpoint_helpers import assert_exact, codec, crop

from lpimg.endpoint import Device, ImageUpdate, Pacing, Server
from lpimg.endpoint.lossy import LossyDeviceLink, LossyServerLink
from lpimg.link import open_device_link, open_server_link
from lpimg.link.framing import encode_frame
from lpimg.protocol import ProtocolConfig

pytestmark = pytest.mark.timeout(60)

FAST = ProtocolConfig(ack_timeout=0.3)
"""Real time here: poll after 0.3 s without an answer instead of LoRaWAN's 20 s."""


def test_picture_over_a_pty_pair_with_loss_and_line_noise(pty_pair: Any, arun: Any) -> None:
    a, b = pty_pair
    image = crop()

    async def main() -> tuple[Any, ImageUpdate, Any, Any]:
        async with (
            open_server_link(f"serial://{b}?mtu=40&device=cam") as s,
            open_device_link(f"serial://{a}?mtu=40&baud=57600") as d,
        ):
            server_link = LossyServerLink(s, uplink=0.15, downlink=0.15, seed=4, drop_down=[1])
            device_link = LossyDeviceLink(d, uplink=0.15, downlink=0.15, seed=5, drop_up=[2])
            server = Server(server_link, codec=codec(), config=FAST)
            updates = server.updates()
            async with server:
                sender = Device(device_link, codec=codec(), config=FAST, pacing=Pacing(rx_window=0.02))
                device = asyncio.create_task(sender.send(image))
                noisy = False
                final = None
                async for update in updates:
                    if not noisy and update.layers >= 1:
                        noisy = True
                        # Someone else on the cable: garbage, a frame cut in half, a bad CRC.
                        fd = os.open(a, os.O_WRONLY | os.O_NOCTTY)
                        try:
                            good = encode_frame(b"\x80\x05" + b"x" * 30, "slip")
                            os.write(fd, b"\x00\xff line noise \xc0\xdb\x01" + good[: len(good) // 2])
                            os.write(fd, b"\xc0" + encode_frame(b"\x20", "slip")[1:-3] + b"\x00\x00\xc0")
                        finally:
                            os.close(fd)
                    if update.final:
                        final = update
                        break
                assert final is not None
                return await device, final, s.stats, (server_link.dropped, device_link.dropped)

    result, final, stats, dropped = arun(main())
    assert result.completed and result.reason == "complete" and final.reason == "complete"
    assert final.layers == result.layers
    assert dropped[0]["up"] + dropped[1]["up"] > 0 and dropped[0]["down"] + dropped[1]["down"] > 0
    assert stats.crc_errors + stats.dropped_malformed > 0  # the noise was seen and dropped
    assert result.stats.retransmissions > 0
    assert_exact(image, final)


def test_serial_server_survives_its_device_vanishing(pty_pair: Any, arun: Any) -> None:
    """The device side closes mid-session; the server's session ends on its idle timeout with
    a reason, and the server is still serving afterwards."""
    a, b = pty_pair
    image = crop()
    config = ProtocolConfig(ack_timeout=0.3, idle_timeout=0.5)

    async def main() -> tuple[Any, ImageUpdate]:
        async with open_server_link(f"serial://{b}?mtu=24&device=cam") as s:
            server = Server(s, codec=codec(), config=config)
            updates = server.updates()
            async with server:
                link = await open_device_link(f"serial://{a}?mtu=24")
                # Paced like a slow radio, so the cable is pulled mid-transfer.
                sender = Device(link, codec=codec(), config=config, pacing=Pacing(min_interval=0.05))
                device = asyncio.create_task(sender.send(image))
                async for update in updates:
                    if update.layers >= 1:
                        await link.close()
                        break
                result = await device
                async for update in updates:
                    if update.final:
                        return result, update
        raise AssertionError("no final update")

    result, final = arun(main())
    assert result.reason.startswith("link failed") and not result.completed
    assert final.reason == "aborted: idle timeout"
    assert_exact(image, final)
