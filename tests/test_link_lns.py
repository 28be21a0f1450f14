"""The Things Stack v3 and ChirpStack v4 adapters: their JSON through a real mosquitto, both ways.

The server side is checked against messages written the way the network servers write them (not
only against our own simulators), and its downlinks are read back by an ordinary MQTT client and
compared with the documented JSON, so the adapters and the simulators cannot agree on a wrong
format between themselves.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import aiomqtt
import pytest

from lpimg.link import open_device_link, open_server_link
from lpimg.link.lns import (
    LPIMG_FPORT,
    ChirpStackDeviceSimulator,
    ChirpStackServerLink,
    TtnDeviceSimulator,
    TtnServerLink,
)

pytestmark = pytest.mark.timeout(40)

B64 = lambda data: base64.b64encode(data).decode()  # noqa: E731


def ttn_uplink(payload: bytes | None, f_port: int | None = LPIMG_FPORT, device: str = "cam-1") -> bytes:
    """An uplink as The Things Stack publishes it (trimmed from its documentation's sample)."""
    message: dict[str, Any] = {
        "session_key_id": "AXA50...",
        "f_cnt": 7,
        "rx_metadata": [{"gateway_ids": {"gateway_id": "gw"}, "rssi": -42, "snr": 4.2}],
        "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}}},
        "received_at": "2024-01-01T00:00:00.000Z",
    }
    if f_port is not None:
        message["f_port"] = f_port
    if payload is not None:
        message["frm_payload"] = B64(payload)
    return json.dumps(
        {
            "end_device_ids": {"device_id": device, "application_ids": {"application_id": "cams"}},
            "correlation_ids": ["as:up:01H..."],
            "received_at": "2024-01-01T00:00:00.000Z",
            "uplink_message": message,
        }
    ).encode()


def chirpstack_uplink(payload: bytes | None, f_port: int | None = LPIMG_FPORT, dev_eui: str = "") -> bytes:
    """An ``event/up`` as ChirpStack v4's JSON marshaler publishes it (trimmed)."""
    doc: dict[str, Any] = {
        "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        "time": "2024-01-01T00:00:00+00:00",
        "deviceInfo": {"applicationId": "app-uuid", "devEui": dev_eui, "deviceName": "cam"},
        "devAddr": "00189440",
        "dr": 5,
        "fCnt": 7,
        "confirmed": False,
        "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -36, "snr": 10.5}],
    }
    if f_port is not None:
        doc["fPort"] = f_port
    if payload is not None:
        doc["data"] = B64(payload)
    return json.dumps(doc).encode()


class Outsider:
    """An ordinary MQTT client in the test: publishes what a network server would, and records
    what our links publish."""

    def __init__(self, port: int, subscribe: str) -> None:
        self.port, self.subscribe = port, subscribe
        self.seen: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def __aenter__(self) -> Outsider:
        self.client = aiomqtt.Client("127.0.0.1", self.port)
        await self.client.__aenter__()
        await self.client.subscribe(self.subscribe)
        self.task = asyncio.create_task(self._listen())
        return self

    async def _listen(self) -> None:
        async for message in self.client.messages:
            await self.seen.put((message.topic.value, bytes(message.payload)))  # type: ignore[arg-type]

    async def publish(self, topic: str, *payloads: bytes) -> None:
        for payload in payloads:
            await self.client.publish(topic, payload)

    async def next(self) -> tuple[str, Any]:
        topic, payload = await asyncio.wait_for(self.seen.get(), 5)
        return topic, json.loads(payload)

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await self.client.__aexit__(None, None, None)


def test_ttn_both_ways(mosquitto: Any, arun: Any) -> None:
    url = mosquitto.url("ttn", app="cams", tenant="ttn")

    async def main() -> None:
        async with (
            open_server_link(url) as server,
            open_device_link(url, "cam-1") as device,
            Outsider(mosquitto.port, "v3/cams@ttn/devices/+/down/push") as lns,
        ):
            assert isinstance(server, TtnServerLink) and isinstance(device, TtnDeviceSimulator)
            # A network server's JSON reaches the lpimg server as a frame.
            await lns.publish("v3/cams@ttn/devices/cam-9/up", ttn_uplink(b"\x00\x01frame", device="cam-9"))
            assert await asyncio.wait_for(server.recv(), 5) == ("cam-9", b"\x00\x01frame")
            # The simulator's uplinks too.
            for i in range(5):
                await device.send(bytes([i]) * 51)
            for i in range(5):
                assert await asyncio.wait_for(server.recv(), 5) == ("cam-1", bytes([i]) * 51)
            # Downlinks are the documented push JSON, on the documented topic.
            await server.send("cam-1", b"\xffack")
            topic, body = await lns.next()
            assert topic == "v3/cams@ttn/devices/cam-1/down/push"
            assert body == {
                "downlinks": [{"f_port": 42, "frm_payload": B64(b"\xffack"), "priority": "NORMAL"}]
            }
            assert await device.recv(timeout=5) == b"\xffack"
            assert server.stats.frames_in == 6 and server.stats.dropped_malformed == 0

    arun(main())


def test_chirpstack_both_ways(mosquitto: Any, arun: Any) -> None:
    url = mosquitto.url("chirpstack", app="app-uuid")
    eui = "0004a30b001c0530"

    async def main() -> None:
        async with (
            open_server_link(url) as server,
            open_device_link(url, eui) as device,
            Outsider(mosquitto.port, "application/app-uuid/device/+/command/down") as lns,
        ):
            assert isinstance(server, ChirpStackServerLink)
            assert isinstance(device, ChirpStackDeviceSimulator)
            other = "70b3d57ed0000001"
            await lns.publish(
                f"application/app-uuid/device/{other}/event/up", chirpstack_uplink(b"hello", dev_eui=other)
            )
            assert await asyncio.wait_for(server.recv(), 5) == (other, b"hello")
            for i in range(5):
                await device.send(b"frame %d" % i)
            for i in range(5):
                assert await asyncio.wait_for(server.recv(), 5) == (eui, b"frame %d" % i)
            await server.send(eui, b"\x00down")
            topic, body = await lns.next()
            assert topic == f"application/app-uuid/device/{eui}/command/down"
            assert body == {"devEui": eui, "confirmed": False, "fPort": 42, "data": B64(b"\x00down")}
            assert await device.recv(timeout=5) == b"\x00down"

    arun(main())


@pytest.mark.parametrize("lns_kind", ["ttn", "chirpstack"])
def test_malformed_uplinks_are_counted_never_raised(
    lns_kind: str, mosquitto: Any, arun: Any, caplog: pytest.LogCaptureFixture
) -> None:
    if lns_kind == "ttn":
        url = mosquitto.url("ttn", app="bad", mtu=32)
        topic = "v3/bad@ttn/devices/{}/up"
        make = ttn_uplink
        wrong_shape = [
            b'{"uplink_message": "text"}',
            json.dumps({"uplink_message": {"f_port": "42"}}).encode(),
        ]
        bad_b64 = json.dumps({"uplink_message": {"f_port": 42, "frm_payload": "!!not base64!!"}}).encode()
    else:
        url = mosquitto.url("chirpstack", app="bad", mtu=32)
        topic = "application/bad/device/{}/event/up"
        make = chirpstack_uplink
        wrong_shape = [b'{"fPort": true, "data": "AA=="}', b'{"fPort": 42, "data": 5}']
        bad_b64 = b'{"fPort": 42, "data": "A"}'

    async def main() -> None:
        async with open_server_link(url) as server, Outsider(mosquitto.port, "nothing") as lns:
            await lns.publish(
                topic.format("dev1"),
                b"{not json",
                b"{not json either",  # same cause, same device: logged once
                b"\xff\xfe\x00",
                b"[1, 2, 3]",
                *wrong_shape,
                bad_b64,
                make(b"someone else's app", f_port=7),
                make(b"MAC only", f_port=None),
                make(None),
                make(b"x" * 33),
                b"x" * 70_000,
                make(b"good one"),
            )
            await lns.publish(topic.format("dev2"), b"{not json", make(b"another good one"))
            assert await asyncio.wait_for(server.recv(), 5) == ("dev1", b"good one")
            assert await asyncio.wait_for(server.recv(), 5) == ("dev2", b"another good one")
            assert server.stats.rejected == {
                "bad_json": 4,
                "bad_schema": 3,
                "bad_base64": 1,
                "unknown_port": 2,
                "empty": 1,
                "oversize": 2,
            }
            assert server.stats.dropped_malformed == 13 and server.stats.frames_in == 2
            # The link is still perfectly usable.
            await server.send("dev1", b"still here")

    with caplog.at_level(logging.WARNING, logger="lpimg.link"):
        arun(main())
    warned = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    # One line per (cause, device): 6 causes from dev1, bad_json from dev2.
    assert len(warned) == 7, warned


def test_device_simulator_counts_bad_downlinks(mosquitto: Any, arun: Any) -> None:
    url = mosquitto.url("ttn", app="sim", tenant="")  # The Things Stack Open Source: no tenant

    async def main() -> None:
        async with open_device_link(url, "cam") as device, Outsider(mosquitto.port, "nothing") as lns:
            await lns.publish(
                "v3/sim/devices/cam/down/push",
                b"garbage",
                b'{"downlinks": []}',
                json.dumps({"downlinks": [{"f_port": 9, "frm_payload": B64(b"x")}]}).encode(),
                json.dumps(
                    {
                        "downlinks": [
                            {"f_port": 42, "frm_payload": B64(b"one")},
                            {"f_port": 42, "frm_payload": B64(b"two")},
                        ]
                    }
                ).encode(),
            )
            await lns.publish(
                "v3/sim/devices/cam/down/replace",
                json.dumps({"downlinks": [{"f_port": 42, "frm_payload": B64(b"three")}]}).encode(),
            )
            assert [await device.recv(timeout=5) for _ in range(3)] == [b"one", b"two", b"three"]
            assert device.stats.rejected == {"bad_json": 1, "bad_schema": 1, "unknown_port": 1}

    arun(main())
