"""Fuzz the uplink JSON adapters of The Things Stack v3 and ChirpStack v4."""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from lpimg.errors import LpimgError
    from lpimg.link.lns import ChirpStackServerLink, TtnServerLink
    from lpimg.link.mqtt import MqttSettings

from _harness import run

SETTINGS = MqttSettings("127.0.0.1", 1883)
LINKS = [TtnServerLink(SETTINGS, "app"), ChirpStackServerLink(SETTINGS, "app")]


def test_one_input(data: bytes) -> None:
    for link in LINKS:
        try:
            frame = link.decode_uplink("dev", data)
        except LpimgError:
            continue
        assert isinstance(frame, bytes)


if __name__ == "__main__":
    seeds = [
        b'{"uplink_message":{"f_port":42,"frm_payload":"AQID"}}',
        b'{"fPort":42,"data":"AQID","deviceInfo":{"devEui":"0102030405060708"}}',
    ]
    run(test_one_input, seeds)
