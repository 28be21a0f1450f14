"""Unit behaviour of the endpoint pieces: the sim:// radio model, pacing, the session store,
policies and file naming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from endpoint_helpers import codec, crop

import lpimg
from lpimg.codec.bitplane import LayerSpec
from lpimg.endpoint import ByteBudget, Device, DeviceStore, Pacing, Refine, RefineRegion, StoreError
from lpimg.endpoint.device import _Pacer
from lpimg.endpoint.dissect import parse_hex
from lpimg.endpoint.files import safe_name
from lpimg.endpoint.store import StoredSession
from lpimg.link import open_device_link, open_server_link
from lpimg.link.sim import eu868
from lpimg.protocol import AddedGroup
from lpimg.wire import Region

pytestmark = pytest.mark.timeout(30)


def test_sim_class_a_downlink_waits_for_an_uplink_window(arun: Any) -> None:
    url = "sim://lorawan-eu868:dr3?seed=1&net=class-a"
    profile = eu868(3)

    async def main() -> None:
        async with open_server_link(url) as server, open_device_link(url, "d") as device:
            await server.send("d", b"\x01\x02")  # queued: class A devices only listen after sending
            assert await device.recv(timeout=3600) is None
            assert device.clock.time() == 3600  # an hour of virtual silence, at once
            await device.send(b"up!")
            assert await server.recv() == ("d", b"up!")
            sent_end = 3600 + profile.uplink_airtime(3)
            assert server.clock.time() == pytest.approx(sent_end)
            reply = await device.recv(timeout=10)
            assert reply == b"\x01\x02"
            # delivered in RX1, one second after the uplink ended, after its own airtime
            assert device.clock.time() == pytest.approx(sent_end + 1 + profile.downlink_airtime(2, "rx1"))
            # the 1 % duty cycle keeps the radio closed for 99 x the uplink's airtime
            assert device.transmit_ready_at() == pytest.approx(3600 + profile.uplink_airtime(3) / 0.01)
            before = device.clock.time()
            await device.send(b"again")  # waits, virtually, for the duty cycle
            assert device.clock.time() == pytest.approx(3600 + profile.uplink_airtime(3) / 0.01)
            assert device.clock.time() > before
            assert device.radio.uplinks == 2 and device.radio.downlinks == 1

    arun(main())


def test_sim_fair_use_defers_uplinks_to_the_next_day(arun: Any) -> None:
    url = "sim://lorawan-eu868:dr0?fair_use=1&net=fair"

    async def main() -> None:
        async with open_device_link(url, "d") as device:
            frame = b"x" * 51
            while device.clock.time() < 86_400 and device.radio.airtime_s < 30:
                await device.send(frame)
                if device.transmit_ready_at() >= 86_400:
                    break
            assert device.transmit_ready_at() >= 86_400
            assert device.radio.airtime_s <= 30.0

    arun(main())


def test_pacer_enforces_interval_and_duty_cycle() -> None:
    pacer = _Pacer(Pacing.lorawan("lorawan-eu868:dr0", min_interval=5.0))
    assert pacer.ready_at() == -float("inf")
    airtime = eu868(0).uplink_airtime(51)
    pacer.sent(10.0, 51)
    assert pacer.ready_at() == pytest.approx(10.0 + airtime / 0.01)
    plain = _Pacer(Pacing(min_interval=2.0))
    plain.sent(1.0, 10)
    assert plain.ready_at() == 3.0
    class_a = _Pacer(Pacing(rx_window=1.5))
    class_a.sent(1.0, 10)
    assert class_a.ready_at() == 2.5  # listening for the answer
    class_a.heard()
    assert class_a.ready_at() == 1.0  # answered: free at once (no min_interval)
    with pytest.raises(lpimg.LpimgError, match="airtime"):
        Pacing(duty_cycle=0.01)


def test_store_round_trip_and_corruption(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "s")
    assert store.load() is None
    stored = StoredSession(session_id=0x1234, mtu=51, model_id=7, width=64, height=48, top_plane=5,
                           manifest=b"\xa1\x18\x18\x05", digest="abc",
                           specs=[LayerSpec(0), LayerSpec(1)])
    store.begin(stored, [b"a", b"bc"], np.ones((2, 3, 4), np.int8))
    loaded = store.load()
    assert loaded is not None and loaded.session_id == 0x1234 and loaded.has_latents
    assert store.layers(loaded) == [b"a", b"bc"]
    region = Region(1, 0, 2, 3)
    store.add_group(loaded, AddedGroup(region, 2, 1), [LayerSpec(2, None)], [b"def"])
    again = store.load()
    assert again is not None and again.groups == [AddedGroup(region, 2, 1)]
    assert store.layers(again) == [b"a", b"bc", b"def"]
    latents = store.latents(again)
    assert latents is not None and latents.shape == (2, 3, 4)
    assert store.next_session_id() == 0x1235
    store.finish(0x1234, "complete")
    assert store.load() is None and store.last_session() == (0x1234, "complete")
    assert not list((tmp_path / "s").glob("s1234-*"))
    (tmp_path / "s" / "session.json").write_text("{ torn")
    with pytest.raises(StoreError):
        store.load()
    (tmp_path / "s" / "session.json").write_text(json.dumps({"version": 1, "state": "active"}))
    with pytest.raises(StoreError, match="malformed"):
        store.load()


def test_device_ignores_a_corrupt_store_and_starts_afresh(tmp_path: Path, arun: Any) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "session.json").write_text("not json at all")
    url = "sim://lorawan-eu868:dr3?net=corrupt"

    async def main() -> Any:
        async with open_server_link(url) as s, open_device_link(url, "d") as d:
            from lpimg.endpoint import Server

            async with Server(s, codec=codec()):
                return await Device(d, codec=codec(), store=store).send(crop(width=32, height=32))

    result = arun(main())
    assert result.completed and not result.resumed
    assert json.loads((store / "session.json").read_text())["state"] == "finished"


def test_policies() -> None:
    from lpimg.endpoint.server import ImageUpdate
    from lpimg.wire import Manifest

    def update(layers: int, size: int, device: str = "d") -> ImageUpdate:
        return ImageUpdate(device, 1, "s0001", layers, size, False, None, 0.0, 0.0, 0.0, 64, 48, 0, 13,
                           Manifest(), ())

    budget = ByteBudget(100)
    assert budget(update(1, 99)) is None
    stop = budget(update(2, 100))
    assert stop is not None and "byte budget of 100" in stop.why
    region = Region(0, 0, 1, 1)
    chooser = RefineRegion(lambda u: (region, 4) if u.layers > 1 else None, max_requests=2)
    assert chooser(update(1, 10)) is None
    assert chooser(update(2, 10)) == Refine(region, 4)
    assert chooser(update(3, 10)) is None  # the same request is made once
    assert chooser(update(2, 10, device="other")) == Refine(region, 4)


def test_file_names_and_hex() -> None:
    assert safe_name("../../etc") == "_.._etc"
    assert safe_name("cam 7/ü") == "cam_7__"
    assert safe_name("...") == "_"
    assert parse_hex("0x80 01:02-03") == b"\x80\x01\x02\x03"
    with pytest.raises(lpimg.WireError):
        parse_hex("0g")
