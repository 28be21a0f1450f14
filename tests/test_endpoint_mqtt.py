"""Device and Server through a real mosquitto: plain MQTT with loss, The Things Stack and
ChirpStack JSON (with malformed messages mixed in), a broker restart mid-transfer, and a device
restart that resumes from its store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from endpoint_helpers import assert_exact, codec, crop

from lpimg.endpoint import Device, DeviceResult, ImageUpdate, Pacing, Server
from lpimg.endpoint.lossy import LossyDeviceLink, LossyServerLink
from lpimg.link import open_device_link, open_server_link
from lpimg.protocol import LayersAcknowledged, ProtocolConfig

pytestmark = pytest.mark.timeout(60)

FAST = ProtocolConfig(ack_timeout=0.3)
"""Real time here: poll after 0.3 s without an answer instead of LoRaWAN's 20 s."""


async def publish(port: int, topic: str, *payloads: bytes) -> None:
    """Publish as an outsider: a separate, ordinary MQTT client."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for payload in payloads:
            await client.publish(topic, payload)


async def final_of(updates: Any, device: str) -> ImageUpdate:
    async for update in updates:
        if update.final and update.device == device:
            return update
    raise AssertionError("the server stopped before a final update")


def test_picture_through_mosquitto_with_loss(mosquitto: Any, arun: Any) -> None:
    url = mosquitto.url(mtu=51)
    image = crop()

    async def main() -> tuple[DeviceResult, ImageUpdate, Server, dict[str, int]]:
        async with open_server_link(url) as s, open_device_link(url, "loss-cam") as d:
            # 20 % loss each way: uplinks dropped at the device, downlinks at the server.
            server_link = LossyServerLink(s, downlink=0.2, seed=1, drop_down=[0])
            device_link = LossyDeviceLink(d, uplink=0.2, seed=2, drop_up=[3])
            server = Server(server_link, codec=codec(), config=FAST)
            updates = server.updates()
            async with server:
                # Class A manners: after each uplink, listen briefly for the answer.
                sender = Device(device_link, codec=codec(), config=FAST, pacing=Pacing(rx_window=0.02))
                device = asyncio.create_task(sender.send(image))
                # A broken frame from the same device id: counted and dropped, nothing else.
                await publish(mosquitto.port, "lpimg/loss-cam/up", b"\xff\xff", b"\x7f")
                final = await final_of(updates, "loss-cam")
                dropped = {k: server_link.dropped[k] + device_link.dropped[k] for k in ("up", "down")}
                return await device, final, server, dropped

    result, final, server, dropped = arun(main())
    assert result.completed and final.reason == "complete" and final.layers == result.layers
    assert dropped["up"] > 0 and dropped["down"] > 0
    assert server.counters.malformed == 2
    assert_exact(image, final)


@pytest.mark.parametrize(
    ("scheme", "query", "device_id", "uplink_topic"),
    [
        ("ttn", {"app": "cams", "tenant": "acme"}, "gate-cam", "v3/cams@acme/devices/gate-cam/up"),
        ("chirpstack", {"app": "0b6f5c1e-7c2d-4b8e-9a1f-2d3c4b5a6978"}, "70b3d57ed0001234",
         "application/0b6f5c1e-7c2d-4b8e-9a1f-2d3c4b5a6978/device/70b3d57ed0001234/event/up"),
    ],
)
def test_lns_json_through_the_broker(
    mosquitto: Any, arun: Any, scheme: str, query: dict[str, str], device_id: str, uplink_topic: str
) -> None:
    """The server behind a LoRaWAN network server's MQTT integration, the device simulator on
    the other side; malformed JSON and foreign ports on the same topics are counted, dropped."""
    url = mosquitto.url(scheme, mtu=51, **query)
    image = crop()

    async def main() -> tuple[DeviceResult, ImageUpdate, Any]:
        async with open_server_link(url) as s, open_device_link(url, device_id) as d:
            server = Server(s, codec=codec(), config=FAST)
            updates = server.updates()
            async with server:
                device = asyncio.create_task(Device(d, codec=codec(), config=FAST).send(image))
                await publish(mosquitto.port, uplink_topic, b"{not json", b"[1, 2]",
                              b'{"uplink_message": {"f_port": 7, "frm_payload": "AAE="}, "fPort": 7, '
                              b'"data": "AAE="}')
                final = await final_of(updates, device_id)
                return await device, final, s.stats

    result, final, stats = arun(main())
    assert result.completed and final.reason == "complete"
    assert stats.rejected["bad_json"] == 1
    assert stats.rejected["bad_schema"] + stats.rejected["unknown_port"] >= 2
    assert_exact(image, final)


def test_broker_restart_mid_transfer(broker_factory: Any, arun: Any) -> None:
    broker = broker_factory()
    url = broker.url(mtu=24, reconnect_min=0.05, reconnect_max=0.3)
    image = crop()
    config = ProtocolConfig(ack_timeout=0.4)

    async def main() -> tuple[DeviceResult, ImageUpdate, Any, Any]:
        async with open_server_link(url) as s, open_device_link(url, "restart-cam") as d:
            server = Server(s, codec=codec(), config=config)
            updates = server.updates()
            async with server:
                sender = Device(d, codec=codec(), config=config, pacing=Pacing(min_interval=0.02))
                device = asyncio.create_task(sender.send(image))
                restarted = False
                final = None
                async for update in updates:
                    if not restarted and update.layers >= 1:
                        restarted = True
                        await asyncio.to_thread(broker.restart)  # SIGKILL, then the same port again
                    if update.final:
                        final = update
                        break
                assert restarted and final is not None
                return await device, final, s.stats, d.stats

    result, final, server_stats, device_stats = arun(main(), timeout=40)
    assert result.completed and final.reason == "complete"
    assert server_stats.reconnects >= 1 and device_stats.reconnects >= 1
    assert_exact(image, final)


def test_device_restart_resumes_over_mqtt(mosquitto: Any, arun: Any, tmp_path: Path) -> None:
    url = mosquitto.url(mtu=32)
    image = crop(width=96, height=64)
    store = tmp_path / "store"
    config = ProtocolConfig(ack_timeout=0.3, ack_each_layer=True)

    class PowerCut(Exception):
        pass

    def cut_power(event: object) -> None:
        if isinstance(event, LayersAcknowledged) and event.count >= 2:
            raise PowerCut

    async def main() -> tuple[DeviceResult, ImageUpdate, int]:
        async with open_server_link(url) as s:
            server = Server(s, codec=codec(), config=config)
            updates = server.updates()
            async with server:
                async with open_device_link(url, "reboot-cam") as d:
                    with pytest.raises(PowerCut):
                        await Device(d, codec=codec(), config=config, store=store,
                                     on_event=cut_power).send(image)
                async with open_device_link(url, "reboot-cam") as d:
                    device = Device(d, codec=codec(), config=config, store=store)
                    result = await device.send(image)
                    assert device.session is not None
                    fragments = device.session.fragment_count
                return result, await final_of(updates, "reboot-cam"), fragments

    result, final, fragments = arun(main())
    assert result.completed and result.resumed and final.reason == "complete"
    assert result.stats.fragments_sent < fragments and result.stats.restarts == 0
    assert_exact(image, final)
