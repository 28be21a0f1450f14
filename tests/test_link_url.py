"""Link URLs: every form parses to the settings it says, every mistake is a clear LinkError."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

import lpimg
from lpimg.link import (
    DeviceLink,
    LinkStats,
    LinkURL,
    ServerLink,
    open_device_link,
    open_server_link,
    register_scheme,
    registered_schemes,
    unregister_scheme,
)
from lpimg.link.lns import ChirpStackServerLink, TtnDeviceSimulator, TtnServerLink
from lpimg.link.mqtt import MqttDeviceLink, MqttServerLink
from lpimg.link.serial import SerialDeviceLink, SerialServerLink

pytestmark = pytest.mark.timeout(30)


def test_importing_lpimg_link_loads_no_transport_library() -> None:
    code = "import sys, lpimg.link; print(any(m in sys.modules for m in ('paho', 'serial')))"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_serial_url_forms() -> None:
    link = open_device_link("serial:///dev/ttyUSB0?baud=57600&mtu=200&framing=cobs").link
    assert isinstance(link, SerialDeviceLink)
    s = link.settings
    assert (s.port, s.label, s.baud, s.mtu, s.framing) == ("/dev/ttyUSB0", "ttyUSB0", 57600, 200, "cobs")
    assert link.mtu == 200

    server = open_server_link("serial:///dev/ttyUSB0").link
    assert isinstance(server, SerialServerLink)
    assert server.device_id == "ttyUSB0" and server.settings.framing == "slip"
    assert server.mtu == 240 and server.settings.baud == 115200
    assert open_server_link("serial://COM3?device=cam-1").link.device_id == "cam-1"  # type: ignore[attr-defined]

    sock = open_server_link("socket://127.0.0.1:7000?framing=cobs").link
    assert isinstance(sock, SerialServerLink)
    assert sock.settings.port == "socket://127.0.0.1:7000" and sock.device_id == "127.0.0.1:7000"


def test_mqtt_url_forms() -> None:
    link = open_device_link("mqtt://u%40x:p%2Fw@broker:1884?qos=1&mtu=51", "cam-7").link
    assert isinstance(link, MqttDeviceLink)
    assert link.up_topic == "lpimg/cam-7/up" and link.down_topic == "lpimg/cam-7/down"
    s = link.settings
    assert (s.host, s.port, s.username, s.password, s.qos, s.mtu) == ("broker", 1884, "u@x", "p/w", 1, 51)
    assert "p/w" not in repr(s)

    tls = open_server_link("mqtt://broker?tls=1&insecure=1&prefix=cams").link
    assert isinstance(tls, MqttServerLink)
    assert tls.settings.port == 8883 and tls.settings.tls and tls.settings.insecure
    assert tls.uplink_subscriptions() == ["cams/+/up"]
    assert open_device_link("mqtt://b?device=d1").link.device == "d1"  # type: ignore[attr-defined]


def test_lns_url_forms() -> None:
    ttn = open_server_link("ttn://eu1.cloud.thethings.network?app=cams&tls=1").link
    assert isinstance(ttn, TtnServerLink)
    assert ttn.uplink_subscriptions() == ["v3/cams@ttn/devices/+/up"]
    assert ttn.settings.port == 8883 and ttn.fport == 42
    oss = open_server_link("ttn://localhost?app=cams&tenant=&fport=7").link
    assert oss.uplink_subscriptions() == ["v3/cams/devices/+/up"]  # type: ignore[attr-defined]
    sim = open_device_link("ttn://localhost?app=cams&tenant=acme", "dev-1").link
    assert isinstance(sim, TtnDeviceSimulator)
    assert sim.downlink_subscriptions()[0] == "v3/cams@acme/devices/dev-1/down/push"
    cs = open_server_link("chirpstack://localhost:1883?app=0b6f").link
    assert isinstance(cs, ChirpStackServerLink)
    assert cs.uplink_subscriptions() == ["application/0b6f/device/+/event/up"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/dev/ttyUSB0", "expected scheme://"),
        ("carrier-pigeon://coop", "unknown link URL scheme 'carrier-pigeon'"),
        ("serial://", "expected serial:///dev/PORT"),
        ("serial:///dev/ttyUSB0?baudrate=9600", "unknown query parameter(s) baudrate"),
        ("serial:///dev/ttyUSB0?baud=fast", "baud='fast' is not an integer"),
        ("serial:///dev/ttyUSB0?mtu=0", "mtu=0 is outside"),
        ("serial:///dev/ttyUSB0?framing=hdlc", "framing='hdlc' is not one of slip, cobs"),
        ("serial:///dev/ttyUSB0?mtu=1&mtu=2", "given twice"),
        ("socket://:7000", "missing host"),
        ("socket://host", "missing port"),
        ("socket://host:99999", "bad port"),
        ("mqtt://broker", "a device id is needed"),
        ("mqtt://broker?device=a/b", "cannot be used in an MQTT topic"),
        ("mqtt://broker?device=d&qos=2", "qos=2 is outside"),
        ("mqtt://broker?device=d&ca=/x.pem", "need tls=1"),
        ("mqtt://broker?device=d&tls=maybe", "not a boolean"),
        ("mqtt://user:secret@broker?device=d&tls=1&bogus=1", "unknown query parameter(s) bogus"),
        ("ttn://broker", "needs ?app="),
        ("chirpstack://broker?app=a&fport=0", "fport=0 is outside"),
    ],
)
def test_bad_urls_raise_clear_link_errors(url: str, message: str) -> None:
    with pytest.raises(lpimg.LinkError) as info:
        open_device_link(url, None)
    assert message in str(info.value)
    assert "secret" not in str(info.value)


def test_device_id_argument_and_query_must_agree() -> None:
    assert open_device_link("mqtt://b?device=x", "x").link.device == "x"  # type: ignore[attr-defined]
    with pytest.raises(lpimg.LinkError, match="says 'y'"):
        open_device_link("mqtt://b?device=y", "x")


def test_sim_scheme_is_left_to_the_endpoint_layer() -> None:
    assert "sim" in registered_schemes()
    try:
        link = open_device_link("sim://lorawan-eu868:dr3", "d")
    except lpimg.LinkError as exc:
        assert "sim:// is provided by lpimg.endpoint" in str(exc)
    else:  # lpimg.endpoint registered it: then it must be a real link
        assert isinstance(link.link, DeviceLink)


class _LoopbackPair:
    """A trivial in-process transport registered under a custom scheme (not a broker mock:
    it tests the registry and the opener, nothing else)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()


class _LoopDevice(DeviceLink):
    def __init__(self, pair: _LoopbackPair, device: str) -> None:
        self.pair, self.device, self.mtu, self.stats = pair, device, 10, LinkStats()
        self.opened = False

    async def open(self) -> None:
        self.opened = True

    async def send(self, frame: bytes) -> None:
        await self.pair.queue.put((self.device, frame))

    async def recv(self, timeout: float | None = None) -> bytes | None:
        return None

    async def close(self) -> None:
        self.closed = True


class _LoopServer(ServerLink):
    def __init__(self, pair: _LoopbackPair) -> None:
        self.pair, self.mtu, self.stats = pair, 10, LinkStats()

    async def send(self, device: str, frame: bytes) -> None:
        raise lpimg.LinkError("no downlink")

    async def recv(self) -> tuple[str, bytes]:
        if self.closed:
            raise lpimg.LinkError("closed")
        return await self.pair.queue.get()

    async def close(self) -> None:
        self.closed = True


def test_register_scheme_and_opener(arun: Any) -> None:
    pair = _LoopbackPair()

    def device_factory(url: LinkURL, device_id: str | None) -> DeviceLink:
        url.finish()
        return _LoopDevice(pair, device_id or "anon")

    def server_factory(url: LinkURL) -> ServerLink:
        url.finish()
        return _LoopServer(pair)

    register_scheme("loop", device_factory, server_factory)
    try:
        with pytest.raises(lpimg.LinkError, match="already registered"):
            register_scheme("loop", device_factory, None)
        with pytest.raises(lpimg.LinkError, match="unknown query"):
            open_device_link("loop://x?y=1")

        async def main() -> None:
            device = await open_device_link("loop://x", "d1")
            assert isinstance(device, _LoopDevice) and device.opened
            async with open_server_link("loop://x") as server:
                await device.send(b"hi")
                assert await server.recv() == ("d1", b"hi")
            assert server.closed
            got = [item async for item in server]  # a closed link ends iteration quietly
            assert got == []
            await device.close()

        arun(main())
    finally:
        unregister_scheme("loop")
    assert "loop" not in registered_schemes()
