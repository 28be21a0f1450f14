"""Device and Server over sim://: virtual time, policies (stop, refine), many devices, bad input,
vanished peers and a device restart that resumes from its store."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from endpoint_helpers import assert_exact, codec, crop

import lpimg
from lpimg.endpoint import (
    ByteBudget,
    Device,
    DeviceResult,
    ImageUpdate,
    Refine,
    RefineRegion,
    Server,
    SimDeviceLink,
    TargetQuality,
    encode_image,
    pass_fraction,
)
from lpimg.link import open_device_link, open_server_link
from lpimg.protocol import LayersAcknowledged
from lpimg.wire import Region

pytestmark = pytest.mark.timeout(60)

EU868 = "sim://lorawan-eu868:dr3"


async def final_update(updates: Any, device: str | None = None) -> ImageUpdate:
    async for update in updates:
        if update.final and (device is None or update.device == device):
            return update
    raise AssertionError("the server stopped before a final update")


async def transfer(url: str, image: np.ndarray, *, device_id: str = "cam-1", layers: int | None = None,
                   server_kwargs: dict[str, Any] | None = None,
                   device_kwargs: dict[str, Any] | None = None) -> tuple[DeviceResult, ImageUpdate, Any]:
    """One picture from one device to a fresh server; returns the device's result, the
    server's final update and the device link (for its radio statistics)."""
    async with open_server_link(url) as server_link, open_device_link(url, device_id) as device_link:
        server = Server(server_link, codec=codec(), **(server_kwargs or {}))
        updates = server.updates()
        async with server:
            device = Device(device_link, codec=codec(), **(device_kwargs or {}))
            result = await device.send(image, layers=layers)
            final = await final_update(updates, device_id)
        return result, final, device_link


def test_whole_picture_in_virtual_time_equals_the_codec(arun: Any) -> None:
    image = crop()
    started = time.monotonic()
    result, final, link = arun(transfer(f"{EU868}?loss=0.2&seed=3", image))
    wall = time.monotonic() - started
    assert result.completed and result.reason == "complete" and final.reason == "complete"
    assert final.layers == result.layers == final.total_passes  # every pass of the picture
    assert final.bytes == result.layer_bytes
    assert_exact(image, final)
    radio = link.radio
    assert radio.uplinks_lost + radio.downlinks_lost > 0  # loss happened and was recovered
    assert result.stats.retransmissions > 0 or result.stats.polls > 0
    # EU868 DR3 at 1 % duty cycle: each uplink costs ~100 s of silence; simulated, not waited.
    assert result.duration_s > 100 * radio.uplinks * 0.5
    assert wall < 10


def test_runs_are_deterministic_for_a_seed(arun: Any) -> None:
    image = crop(width=32, height=32)
    url = f"{EU868}?loss=0.3&burst=3&seed=11"
    first, a, _ = arun(transfer(url, image))
    second, b, _ = arun(transfer(url, image))
    assert first.stats == second.stats and first.duration_s == second.duration_s
    assert [(x.index, x.at) for x in a.received] == [(x.index, x.at) for x in b.received]


def test_dr0_duty_cycle_is_simulated_not_waited(arun: Any) -> None:
    from lpimg.link.sim import eu868

    image = crop()
    started = time.monotonic()
    result, final, link = arun(transfer("sim://lorawan-eu868:dr0?seed=1", image))
    wall = time.monotonic() - started
    assert result.completed and final.reason == "complete"
    # 1 % duty cycle: every uplink but the last is followed by 99 times its airtime of silence.
    longest = eu868(0).uplink_airtime(51)
    assert result.duration_s >= (link.radio.airtime_s - longest) / 0.01
    assert result.duration_s > 600 and wall < 10
    assert_exact(image, final)


def test_byte_budget_stops_the_device(arun: Any) -> None:
    image = crop(width=96, height=64)
    budget = 200
    result, final, _ = arun(transfer(f"{EU868}?loss=0.1&seed=2", image,
                                     server_kwargs={"policies": [ByteBudget(budget)]}))
    assert result.completed and result.reason == "stopped"
    assert final.reason.startswith("stopped: byte budget of 200") and final.completed
    assert final.bytes >= budget and final.layers < result.layers
    assert_exact(image, final)


def test_target_quality_estimate_stops_at_a_pass_fraction(arun: Any) -> None:
    image = crop()
    result, final, _ = arun(transfer(f"{EU868}?seed=4", image,
                                     server_kwargs={"policies": [TargetQuality(0.5)]}))
    assert result.reason == "stopped" and final.completed
    assert pass_fraction(final) >= 0.5
    assert final.layers < final.total_passes
    assert_exact(image, final)


def test_target_quality_with_a_callback_on_the_reconstruction(arun: Any) -> None:
    image = crop()
    seen: list[float] = []

    def psnr(update: ImageUpdate) -> float:
        error = np.mean((update.reconstruction.astype(float) - image.astype(float)) ** 2)
        value = 10 * np.log10(255.0**2 / max(error, 1e-9))
        seen.append(value)
        return float(value)

    result, final, _ = arun(transfer(f"{EU868}?seed=4", image,
                                     server_kwargs={"policies": [TargetQuality(18.0, psnr)]}))
    assert seen and result.completed
    if result.reason == "stopped":  # the interim weights may never reach the target: then all
        assert seen[-1] >= 18.0 and final.layers < final.total_passes
    assert_exact(image, final)


def test_refine_policy_gets_a_region_sharper(arun: Any) -> None:
    image = crop(width=96, height=64)  # 6x4 latent positions
    region = Region(1, 1, 2, 2)

    def choose(update: ImageUpdate) -> Refine | None:
        return Refine(region, 6) if update.layers >= 3 else None

    result, final, _ = arun(transfer(f"{EU868}?loss=0.1&seed=5", image, layers=4,
                                     server_kwargs={"policies": [RefineRegion(choose)]}))
    assert result.completed and result.reason == "complete" and result.refines_answered == 1
    refined = [layer for layer in final.received if layer.region is not None]
    assert refined and all(layer.region == region for layer in refined)
    assert [layer.pass_index for layer in refined] == list(range(4, 7))  # up to and including 6
    assert final.layers == 4 + len(refined) == result.layers
    assert_exact(image, final)


def test_application_stops_and_refines_through_session_handles(arun: Any) -> None:
    url = f"{EU868}?seed=6"
    # large enough that 3 layers take several uplinks, so the refine lands before the session ends
    image = crop(width=192, height=128)

    async def main() -> tuple[DeviceResult, ImageUpdate, DeviceResult, ImageUpdate]:
        async with open_server_link(url) as s, open_device_link(url, "a") as da, \
                open_device_link(url, "b") as db:
            server = Server(s, codec=codec())
            updates = server.updates()
            async with server:
                task_a = asyncio.create_task(Device(da, codec=codec()).send(image, layers=3))
                task_b = asyncio.create_task(Device(db, codec=codec()).send(image))
                asked = stopped = False
                finals: dict[str, ImageUpdate] = {}
                async for update in updates:
                    handle = server.session(update.device)
                    if update.final:
                        finals[update.device] = update
                        if len(finals) == 2:
                            break
                    elif update.device == "a" and not asked:
                        asked = True
                        await handle.refine(None, 5)
                    elif update.device == "b" and update.layers >= 2 and not stopped:
                        stopped = True
                        await handle.stop("enough for the operator")
                        assert not handle.active and handle.reason == "stopped: enough for the operator"
                return await task_a, finals["a"], await task_b, finals["b"]

    result_a, final_a, result_b, final_b = arun(main())
    assert result_a.completed and result_a.refines_answered == 1
    assert [layer.pass_index for layer in final_a.received] == list(range(6))
    assert result_b.reason == "stopped" and final_b.reason == "stopped: enough for the operator"
    assert_exact(image, final_a)
    assert_exact(image, final_b)


def test_many_devices_share_one_server(arun: Any) -> None:
    url = f"{EU868}?loss=0.1&seed=7"
    images = {f"cam-{i}": crop(x=60 * i, y=30 * i, width=48, height=32) for i in range(4)}

    async def main() -> tuple[dict[str, DeviceResult], dict[str, ImageUpdate]]:
        async with open_server_link(url) as s:
            server = Server(s, codec=codec())
            updates = server.updates()
            async with server:
                links = [await open_device_link(url, name) for name in images]
                try:
                    tasks = {name: asyncio.create_task(Device(link, codec=codec()).send(images[name]))
                             for name, link in zip(images, links, strict=True)}
                    finals: dict[str, ImageUpdate] = {}
                    async for update in updates:
                        if update.final:
                            finals[update.device] = update
                            if len(finals) == len(images):
                                break
                    return {name: await task for name, task in tasks.items()}, finals
                finally:
                    for link in links:
                        await link.close()

    results, finals = arun(main())
    assert all(result.completed for result in results.values())
    for name, image in images.items():
        assert finals[name].reason == "complete"
        assert_exact(image, finals[name])


def test_restarted_device_resumes_from_its_store(arun: Any, tmp_path: Path) -> None:
    url = f"{EU868}?loss=0.1&seed=8"
    image = crop(width=96, height=64)
    store = tmp_path / "store"

    class PowerCut(Exception):
        pass

    def cut_power(event: object) -> None:
        if isinstance(event, LayersAcknowledged) and event.count >= 3:
            raise PowerCut

    async def main() -> tuple[DeviceResult, ImageUpdate, int, int]:
        async with open_server_link(url) as s:
            server = Server(s, codec=codec())
            updates = server.updates()
            async with server:
                async with open_device_link(url, "cam") as link:
                    with pytest.raises(PowerCut):
                        await Device(link, codec=codec(), store=store, on_event=cut_power).send(image)
                first_run = link.radio.uplinks
                async with open_device_link(url, "cam") as link:
                    device = Device(link, codec=codec(), store=store)
                    result = await device.send(image)
                    assert device.session is not None
                    fragments = device.session.fragment_count
                final = await final_update(updates)
        return result, final, first_run, fragments

    result, final, first_run, fragments = arun(main())
    assert result.completed and result.resumed and result.reason == "complete"
    assert final.reason == "complete" and final.layers == result.layers
    # Only what the server did not hold was sent again, and not the session start.
    assert result.stats.fragments_sent < fragments
    assert result.stats.restarts == 0
    assert first_run > 0
    assert_exact(image, final)
    assert '"state": "finished"' in (store / "session.json").read_text()
    assert not list(store.glob("s*-*.bin"))  # layers dropped once the session ended


def test_resume_after_a_refine_rebuilds_the_same_stream(arun: Any, tmp_path: Path) -> None:
    """A power cut after the device appended a refine group: the stored group must make the
    resumed stream identical, and the resumed encoder continues from the same passes."""
    url = f"{EU868}?seed=9"
    image = crop(width=96, height=64)
    store = tmp_path / "store"

    class PowerCut(Exception):
        pass

    def cut_after_refine(event: object) -> None:
        if isinstance(event, LayersAcknowledged) and event.count >= 4:
            raise PowerCut

    def choose(update: ImageUpdate) -> Refine | None:
        return Refine(Region(0, 0, 3, 2), 5) if update.layers >= 2 else None

    async def main() -> tuple[DeviceResult, ImageUpdate]:
        async with open_server_link(url) as s:
            server = Server(s, codec=codec(), policies=[RefineRegion(choose)])
            updates = server.updates()
            async with server:
                async with open_device_link(url, "cam") as link:
                    with pytest.raises(PowerCut):
                        await Device(link, codec=codec(), store=store,
                                     on_event=cut_after_refine).send(image, layers=3)
                async with open_device_link(url, "cam") as link:
                    result = await Device(link, codec=codec(), store=store).send(image, layers=3)
                return result, await final_update(updates)

    result, final = arun(main())
    assert result.completed and result.resumed
    assert [layer.pass_index for layer in final.received] == [0, 1, 2, 3, 4, 5]
    assert_exact(image, final)


def test_a_device_that_vanishes_ends_with_a_reason_on_both_sides(arun: Any) -> None:
    url = f"{EU868}?seed=10"
    image = crop(width=96, height=64)

    async def main() -> tuple[DeviceResult, ImageUpdate]:
        async with open_server_link(url) as s:
            server = Server(s, codec=codec())
            updates = server.updates()
            async with server:
                link = await open_device_link(url, "cam")
                device = asyncio.create_task(Device(link, codec=codec()).send(image))
                async for update in updates:
                    if update.layers >= 2:
                        await link.close()  # the camera loses power, its radio goes silent
                        break
                return await device, await final_update(updates)

    result, final = arun(main())
    assert not result.completed and result.reason.startswith("link failed")
    assert final.reason == "aborted: idle timeout" and not final.completed
    assert 0 < final.layers < final.total_passes
    assert final.updated_at - final.started_at >= 3 * 86400  # the default idle timeout, virtual
    assert_exact(image, final)  # what did arrive is still decoded


def test_device_without_a_server_gives_up_with_a_reason(arun: Any) -> None:
    async def main() -> DeviceResult:
        async with open_device_link(f"{EU868}?net=alone", "cam") as link:
            return await Device(link, codec=codec()).send(crop(width=32, height=32))

    result = arun(main())
    assert not result.completed and result.reason.startswith("gave up")
    assert isinstance(result.stats.uplinks, int) and result.stats.uplinks > 1


def test_unknown_devices_and_damaged_frames_are_counted_and_dropped(
    arun: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{EU868}?loss=0.05&truncate=0.05&bitflip=0.05&duplicate=0.1&seed=12"
    image = crop()

    async def main() -> tuple[DeviceResult, DeviceResult, ImageUpdate, Server]:
        async with open_server_link(url) as s, open_device_link(url, "known") as known, \
                open_device_link(url, "stranger") as stranger:
            server = Server(s, codec=codec(), devices={"known"})
            updates = server.updates()
            async with server:
                good, bad = await asyncio.gather(
                    Device(known, codec=codec()).send(image),
                    Device(stranger, codec=codec()).send(crop(width=32, height=32)),
                )
                return good, bad, await final_update(updates), server

    with caplog.at_level(logging.WARNING, logger="lpimg.endpoint.server"):
        good, bad, final, server = arun(main())
    assert good.completed and final.device == "known" and final.reason == "complete"
    assert_exact(image, final)
    assert not bad.completed and bad.reason.startswith("gave up")
    counters = server.counters
    assert counters.unknown_devices > 0 and server.protocol.session("stranger") is None
    assert counters.malformed + server.protocol.stats.crc_failures + server.protocol.stats.bad_length > 0
    unknown_logs = [r for r in caplog.records if "unknown device" in r.getMessage()]
    assert len(unknown_logs) == 1  # logged once, counted always


def test_a_session_the_server_cannot_decode_is_rejected_on_both_sides(arun: Any) -> None:
    url = f"{EU868}?seed=13"
    encoded, _ = encode_image(codec(), crop(width=32, height=32))
    from dataclasses import replace

    alien = replace(encoded, header=replace(encoded.header, model_id=encoded.header.model_id ^ 0x5A5A))

    async def main() -> tuple[DeviceResult, ImageUpdate, Server]:
        async with open_server_link(url) as s, open_device_link(url, "cam") as d:
            server = Server(s, codec=codec())
            updates = server.updates()
            async with server:
                result = await Device(d, codec=codec()).send_encoded(alien)
                return result, await final_update(updates), server

    result, final, server = arun(main())
    assert not result.completed and result.reason == "aborted: rejected"
    assert final.reason.startswith("rejected: coded by model") and not final.decodable
    assert server.counters.rejected == 1
    with pytest.raises(lpimg.LpimgError, match="not decoded here"):
        _ = final.reconstruction


def test_sim_urls_are_validated_and_networks_kept_apart(arun: Any) -> None:
    for bad in ("sim://", "sim://lorawan-eu868:dr9", "sim://lorawan-eu868:dr3?loss=2",
                "sim://lorawan-eu868:dr3?lossy=1", "sim://nbiot?fair_use=1"):
        with pytest.raises(lpimg.LinkError):
            open_server_link(bad)
    with pytest.raises(lpimg.LinkError, match="device id"):
        open_device_link(EU868)

    async def main() -> None:
        async with open_server_link(f"{EU868}?seed=1"):
            with pytest.raises(lpimg.LinkError, match="other settings"):
                await open_device_link(f"{EU868}?seed=2", "x")
            async with open_device_link(f"{EU868}?seed=2&net=other", "x") as link:
                assert isinstance(link, SimDeviceLink) and link.clock.time() == 0.0
            with pytest.raises(lpimg.LinkError, match="already has a server"):
                await open_server_link(f"{EU868}?seed=1")

    arun(main())


def test_nbiot_profile_has_no_receive_windows(arun: Any) -> None:
    image = crop()
    result, final, link = arun(transfer("sim://nbiot?loss=0.1&seed=3", image))
    assert result.completed and final.reason == "complete"
    assert result.duration_s < 600  # seconds of latency, no duty cycle
    assert_exact(image, final)


def test_a_failing_policy_or_callback_does_not_stop_the_server(
    arun: Any, caplog: pytest.LogCaptureFixture
) -> None:
    image = crop(width=32, height=32)

    def broken(update: ImageUpdate) -> None:
        raise ZeroDivisionError("a bug in the application")

    with caplog.at_level(logging.ERROR, logger="lpimg.endpoint.server"):
        result, final, _ = arun(transfer(f"{EU868}?seed=14", image,
                                         server_kwargs={"policies": [broken], "on_update": broken}))
    assert result.completed and final.reason == "complete"
    assert any("policy" in r.getMessage() for r in caplog.records)
    assert any("on_update" in r.getMessage() for r in caplog.records)
    assert_exact(image, final)


def test_device_timeout_gives_the_session_up_and_tells_the_server(arun: Any) -> None:
    url = f"{EU868}?seed=15"

    async def main() -> tuple[DeviceResult, ImageUpdate]:
        async with open_server_link(url) as s, open_device_link(url, "cam") as d:
            server = Server(s, codec=codec())
            updates = server.updates()
            async with server:
                result = await Device(d, codec=codec()).send(crop(width=96, height=64), timeout=300)
                return result, await final_update(updates)

    result, final = arun(main())
    assert not result.completed and result.reason == "timed out after 300 s"
    assert final.reason == "aborted by device: cancelled"  # the abort frame reached the server
