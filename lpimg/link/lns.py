"""LoRaWAN network server adapters: The Things Stack v3 and ChirpStack v4 MQTT integrations.

A gateway operator does not talk to radios: the network server (LNS) terminates LoRaWAN and
publishes each device's application payload on MQTT as JSON. These links turn that JSON into
lpimg frames and back, so the lpimg server runs unchanged behind either LNS.

URL forms (plus every broker parameter of :mod:`lpimg.link.mqtt`: credentials, TLS, qos, ...)::

    ttn://eu1.cloud.thethings.network:8883?app=my-app&tenant=ttn&tls=1
           (username my-app@ttn, password an API key, in the userinfo or the query)
    ttn://localhost:1883?app=my-app&tenant=       (The Things Stack Open Source: no tenant)
    chirpstack://localhost:1883?app=9a1c5b4e-...  (the application id, a UUID)

``fport`` (default :data:`LPIMG_FPORT`) is the LoRaWAN port lpimg's frames ride on; uplinks on
any other port belong to someone else's application and are counted ``unknown_port`` and dropped.

The Things Stack v3
    uplink   ``v3/{app}@{tenant}/devices/{device_id}/up``: JSON
             ``uplink_message.frm_payload`` (base64) and ``uplink_message.f_port``;
    downlink ``v3/{app}@{tenant}/devices/{device_id}/down/push``:
             ``{"downlinks": [{"f_port": 42, "frm_payload": "<base64>", "priority": "NORMAL"}]}``.
    The device id is TTS's end device id (the topic level).
ChirpStack v4 (JSON marshaler)
    uplink   ``application/{app}/device/{dev_eui}/event/up``: JSON ``data`` (base64), ``fPort``;
    downlink ``application/{app}/device/{dev_eui}/command/down``:
             ``{"devEui": "<dev_eui>", "confirmed": false, "fPort": 42, "data": "<base64>"}``.
    The device id is the DevEUI as ChirpStack writes it in topics (16 lower-case hex digits).

Both network servers queue a downlink until the device's next uplink opens a class A receive
window; one downlink per uplink is what the protocol core plans for.

Device side: real devices speak LoRaWAN to a gateway, not MQTT, so ``open_device_link`` on these
schemes returns a **simulator** (:class:`TtnDeviceSimulator`, :class:`ChirpStackDeviceSimulator`)
that publishes uplink JSON shaped like the LNS's and listens on the downlink topics. It is what the
tests and examples use in place of a network server; it does not model airtime or loss (use
``sim://`` for that).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from lpimg.errors import LinkError
from lpimg.link.mqtt import (
    DEFAULT_MQTT_MTU,
    MqttDeviceBase,
    MqttServerBase,
    MqttSettings,
    Rejected,
    check_topic_level,
    device_in_topic,
    parse_mqtt_settings,
)
from lpimg.link.url import LinkURL, resolve_device_id

LPIMG_FPORT = 42
"""The LoRaWAN FPort lpimg uses by default. Ports 1..223 are for applications; 42 is not claimed
by any LoRaWAN specification package (TS003 clock sync 202, TS004 FUOTA 201, TS005 multicast 200,
and 224 is the test port). Change it with ``?fport=`` on both ends if it clashes."""


def _b64(frame: bytes) -> str:
    return base64.b64encode(frame).decode("ascii")


def _unb64(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise Rejected("bad_schema", f"{field} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejected("bad_base64", f"{field}: {exc}") from None


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Rejected("bad_json", str(exc)) from None
    if not isinstance(doc, dict):
        raise Rejected("bad_schema", f"top level is {type(doc).__name__}, not an object")
    return doc


def _port(value: object, expected: int) -> None:
    # LNS JSON omits a zero port (a MAC-only frame), so absent means 0: not ours either way.
    if isinstance(value, bool) or not isinstance(value, int | type(None)):
        raise Rejected("bad_schema", f"port {value!r} is not an integer")
    if value != expected:
        raise Rejected("unknown_port", f"port {value} (lpimg uses {expected})")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _fport(url: LinkURL) -> int:
    return url.take_int("fport", LPIMG_FPORT, 1, 223)


def _app(url: LinkURL) -> str:
    app = url.take_str("app")
    if not app:
        raise LinkError(f"{url.scheme}:// needs ?app=APPLICATION_ID in {url.redacted}")
    return check_topic_level(app, "application id")


# --------------------------------------------------------------------------- The Things Stack v3


def ttn_application_topic(app: str, tenant: str) -> str:
    """``v3/{app}@{tenant}``, or ``v3/{app}`` for The Things Stack Open Source (no tenant)."""
    return f"v3/{app}@{tenant}" if tenant else f"v3/{app}"


class TtnServerLink(MqttServerBase):
    """Server side behind The Things Stack v3's MQTT integration."""

    kind = "ttn"

    def __init__(
        self, settings: MqttSettings, app: str, tenant: str = "ttn", fport: int = LPIMG_FPORT
    ) -> None:
        self.app = check_topic_level(app, "application id")
        self.tenant = check_topic_level(tenant, "tenant id") if tenant else ""
        self.fport = fport
        self.base = ttn_application_topic(self.app, self.tenant)
        super().__init__(settings)

    def uplink_subscriptions(self) -> list[str]:
        return [f"{self.base}/devices/+/up"]

    def device_from_topic(self, topic: str) -> str:
        return device_in_topic(topic, f"{self.base}/devices/", "/up")

    def decode_uplink(self, device: str, payload: bytes) -> bytes:
        doc = _json_object(payload)
        uplink = doc.get("uplink_message")
        if not isinstance(uplink, dict):
            raise Rejected("bad_schema", "no uplink_message object")
        _port(uplink.get("f_port"), self.fport)
        if "frm_payload" not in uplink:
            raise Rejected("empty", "no frm_payload")
        return _unb64(uplink["frm_payload"], "frm_payload")

    def encode_downlink(self, device: str, frame: bytes) -> tuple[str, bytes]:
        body = {"downlinks": [{"f_port": self.fport, "frm_payload": _b64(frame), "priority": "NORMAL"}]}
        return f"{self.base}/devices/{device}/down/push", json.dumps(body).encode()


class TtnDeviceSimulator(MqttDeviceBase):
    """A stand-in for a device behind The Things Stack: publishes TTS-shaped uplink JSON and
    takes frames from ``down/push`` and ``down/replace`` messages. For tests and examples."""

    kind = "ttn-sim"

    def __init__(
        self,
        settings: MqttSettings,
        device: str,
        app: str,
        tenant: str = "ttn",
        fport: int = LPIMG_FPORT,
    ) -> None:
        self.app = check_topic_level(app, "application id")
        self.tenant = check_topic_level(tenant, "tenant id") if tenant else ""
        self.fport = fport
        check_topic_level(device, "device id")
        self.base = f"{ttn_application_topic(self.app, self.tenant)}/devices/{device}"
        self._fcnt = itertools.count()
        self._dev_eui = f"{uuid.uuid5(uuid.NAMESPACE_DNS, device).int & (2**64 - 1):016X}"
        super().__init__(settings, device)

    def downlink_subscriptions(self) -> list[str]:
        return [f"{self.base}/down/push", f"{self.base}/down/replace"]

    def encode_uplink(self, frame: bytes) -> tuple[str, bytes]:
        now = _now()
        doc = {
            "end_device_ids": {
                "device_id": self.device,
                "application_ids": {"application_id": self.app},
                "dev_eui": self._dev_eui,
                "dev_addr": self._dev_eui[-8:],
            },
            "correlation_ids": [f"as:up:{uuid.uuid4().hex}"],
            "received_at": now,
            "uplink_message": {
                "session_key_id": "AYlpimgsimulator==",
                "f_port": self.fport,
                "f_cnt": next(self._fcnt),
                "frm_payload": _b64(frame),
                "rx_metadata": [
                    {
                        "gateway_ids": {"gateway_id": "lpimg-simulator"},
                        "rssi": -90,
                        "channel_rssi": -90,
                        "snr": 7.5,
                    }
                ],
                "settings": {
                    "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 9}},
                    "frequency": "868100000",
                },
                "received_at": now,
            },
            "simulated": True,
        }
        return f"{self.base}/up", json.dumps(doc).encode()

    def decode_downlink(self, topic: str, payload: bytes) -> list[bytes]:
        doc = _json_object(payload)
        items = doc.get("downlinks")
        if not isinstance(items, list) or not items:
            raise Rejected("bad_schema", "no downlinks list")
        frames = []
        for item in items:
            if not isinstance(item, dict):
                raise Rejected("bad_schema", "a downlink is not an object")
            _port(item.get("f_port"), self.fport)
            frames.append(_unb64(item.get("frm_payload", ""), "frm_payload"))
        return frames


# ------------------------------------------------------------------------------- ChirpStack v4


class ChirpStackServerLink(MqttServerBase):
    """Server side behind ChirpStack v4's MQTT integration (JSON marshaler)."""

    kind = "chirpstack"

    def __init__(self, settings: MqttSettings, app: str, fport: int = LPIMG_FPORT) -> None:
        self.app = check_topic_level(app, "application id")
        self.fport = fport
        self.base = f"application/{self.app}/device"
        super().__init__(settings)

    def uplink_subscriptions(self) -> list[str]:
        return [f"{self.base}/+/event/up"]

    def device_from_topic(self, topic: str) -> str:
        return device_in_topic(topic, f"{self.base}/", "/event/up")

    def decode_uplink(self, device: str, payload: bytes) -> bytes:
        doc = _json_object(payload)
        _port(doc.get("fPort"), self.fport)
        if "data" not in doc:
            raise Rejected("empty", "no data")
        return _unb64(doc["data"], "data")

    def encode_downlink(self, device: str, frame: bytes) -> tuple[str, bytes]:
        body = {"devEui": device, "confirmed": False, "fPort": self.fport, "data": _b64(frame)}
        return f"{self.base}/{device}/command/down", json.dumps(body).encode()


class ChirpStackDeviceSimulator(MqttDeviceBase):
    """A stand-in for a device behind ChirpStack v4: publishes ``event/up`` JSON and takes frames
    from ``command/down``. ``device`` is its DevEUI. For tests and examples."""

    kind = "chirpstack-sim"

    def __init__(self, settings: MqttSettings, device: str, app: str, fport: int = LPIMG_FPORT) -> None:
        self.app = check_topic_level(app, "application id")
        self.fport = fport
        self.base = f"application/{self.app}/device/{check_topic_level(device, 'DevEUI')}"
        self._fcnt = itertools.count()
        super().__init__(settings, device)

    def downlink_subscriptions(self) -> list[str]:
        return [f"{self.base}/command/down"]

    def encode_uplink(self, frame: bytes) -> tuple[str, bytes]:
        doc = {
            "deduplicationId": str(uuid.uuid4()),
            "time": _now(),
            "deviceInfo": {
                "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
                "tenantName": "ChirpStack",
                "applicationId": self.app,
                "applicationName": "lpimg",
                "deviceProfileId": "b1d2c9a3-5b4e-4d3f-9a8e-7c6b5a4d3e2f",
                "deviceProfileName": "lpimg camera",
                "deviceName": f"cam-{self.device[-4:]}",
                "devEui": self.device,
                "tags": {},
            },
            "devAddr": "00000000",
            "adr": True,
            "dr": 3,
            "fCnt": next(self._fcnt),
            "fPort": self.fport,
            "confirmed": False,
            "data": _b64(frame),
            "rxInfo": [{"gatewayId": "0016c001ff000001", "rssi": -90, "snr": 7.5}],
            "txInfo": {
                "frequency": 868100000,
                "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 9, "codeRate": "CR_4_5"}},
            },
        }
        return f"{self.base}/event/up", json.dumps(doc).encode()

    def decode_downlink(self, topic: str, payload: bytes) -> list[bytes]:
        doc = _json_object(payload)
        dev_eui = doc.get("devEui")
        if dev_eui is not None and str(dev_eui).lower() != self.device.lower():
            raise Rejected("bad_schema", f"devEui {dev_eui!r} is not this device")
        _port(doc.get("fPort"), self.fport)
        return [_unb64(doc.get("data", ""), "data")]


# ---------------------------------------------------------------------------------- factories


def ttn_server_link(url: LinkURL) -> TtnServerLink:
    """Factory for ``ttn://`` server links (see :mod:`lpimg.link.url`)."""
    app, tenant, fport = _app(url), url.take_str("tenant", "ttn") or "", _fport(url)
    settings = parse_mqtt_settings(url, default_mtu=DEFAULT_MQTT_MTU)
    url.finish()
    return TtnServerLink(settings, app, tenant, fport)


def ttn_device_link(url: LinkURL, device_id: str | None) -> TtnDeviceSimulator:
    """Factory for ``ttn://`` device links: a simulator, see :class:`TtnDeviceSimulator`."""
    app, tenant, fport = _app(url), url.take_str("tenant", "ttn") or "", _fport(url)
    device = resolve_device_id(url, device_id, required=True)
    assert device is not None
    settings = parse_mqtt_settings(url, default_mtu=DEFAULT_MQTT_MTU)
    url.finish()
    return TtnDeviceSimulator(settings, device, app, tenant, fport)


def chirpstack_server_link(url: LinkURL) -> ChirpStackServerLink:
    """Factory for ``chirpstack://`` server links (see :mod:`lpimg.link.url`)."""
    app, fport = _app(url), _fport(url)
    settings = parse_mqtt_settings(url, default_mtu=DEFAULT_MQTT_MTU)
    url.finish()
    return ChirpStackServerLink(settings, app, fport)


def chirpstack_device_link(url: LinkURL, device_id: str | None) -> ChirpStackDeviceSimulator:
    """Factory for ``chirpstack://`` device links: a simulator, see
    :class:`ChirpStackDeviceSimulator`."""
    app, fport = _app(url), _fport(url)
    device = resolve_device_id(url, device_id, required=True)
    assert device is not None
    settings = parse_mqtt_settings(url, default_mtu=DEFAULT_MQTT_MTU)
    url.finish()
    return ChirpStackDeviceSimulator(settings, device, app, fport)
