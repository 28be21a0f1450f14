"""Fixed cameras over sim://: pictures coded against the server's state of the last one, and every
way the two ends can disagree about that state answered with an intra picture, never a wrong one.

Frames are small crops of ../shared/data/fixedcam (one outdoor camera), 25 frames apart. Nothing
depends on the shipped weights: every reconstruction is compared with the codec run here on the
same layers, and byte counts with the same picture coded without a reference.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from endpoint_helpers import assert_exact, codec

from lpimg.codec.bitplane import LayerSpec
from lpimg.codec.image import load_image
from lpimg.codec.pipeline import Condition, StreamHeader
from lpimg.codec.reference import ConditionalDecoder, ConditionalEncoder, ReferenceState
from lpimg.endpoint import (
    ByteBudget,
    Device,
    DeviceResult,
    HeldReference,
    ImageUpdate,
    ReferenceBank,
    Refine,
    RefineRegion,
    Server,
)
from lpimg.endpoint.coding import RESIDUAL_ID_KEY, condition_of, layer_spec, stream_header, with_reference
from lpimg.errors import CodecError
from lpimg.link import open_device_link, open_server_link
from lpimg.protocol import DeviceSession, LayersAcknowledged, ProtocolConfig
from lpimg.wire import (
    AbortReason,
    Manifest,
    Region,
    ServerAbortFrame,
    StartFrame,
    build_downlink,
    parse_downlink,
    parse_uplink,
)

FIXEDCAM = Path(__file__).resolve().parents[2] / "shared" / "data" / "fixedcam"
needs_fixedcam = pytest.mark.skipif(not FIXEDCAM.exists(), reason="../shared/data/fixedcam is absent")

pytestmark = pytest.mark.timeout(90)

EU868 = "sim://lorawan-eu868:dr3"
# Loss both ways: starts lost right after a finished session (spec 7.2), ACKs and LAYER_COMPLETEs
# lost (the two ends then know different prefixes of a picture).
LOSSY = f"{EU868}?loss=0.2"


@lru_cache(maxsize=8)
def _frame(index: int) -> np.ndarray:
    return load_image(FIXEDCAM / f"in{index:06d}.jpg")


def frames(*indices: int, x: int = 96, y: int = 64, width: int = 96, height: int = 64) -> list[np.ndarray]:
    """Crops of fixedcam frames (96x64 by default: 6x4 latent positions, 3x2 tiles)."""
    return [_frame(i)[y : y + height, x : x + width].copy() for i in indices]


async def _final(updates: Any, device: str, session_id: int) -> ImageUpdate:
    """The server's final update of ``device``'s session ``session_id`` (others are skipped)."""
    async for update in updates:
        if update.final and update.device == device and update.session_id == session_id:
            return update
    raise AssertionError("the server stopped before a final update")


async def send_all(
    url: str, images: list[np.ndarray], *, restart_before: int | None = None,
    tamper_before: int | None = None, server_kwargs: dict[str, Any] | None = None,
    device_kwargs: dict[str, Any] | None = None, layers: int | None = None,
) -> tuple[list[DeviceResult], list[ImageUpdate], list[Server], Device]:
    """Send ``images`` one after another from one device with ``reference="auto"``; the server
    is replaced by a fresh one (a restart) before picture ``restart_before``, and the device's
    reference replaced by a different state under the same frame id before ``tamper_before``."""
    results: list[DeviceResult] = []
    finals: list[ImageUpdate] = []
    servers: list[Server] = []
    async with open_server_link(url) as server_link, open_device_link(url, "cam") as device_link:
        server = Server(server_link, codec=codec(), **(server_kwargs or {}))
        servers.append(server)
        updates = server.updates()
        server.start()
        cam = Device(device_link, codec=codec(), **(device_kwargs or {}))
        try:
            for number, image in enumerate(images):
                if number == restart_before:
                    await server.close()
                    server = Server(server_link, codec=codec(), **(server_kwargs or {}))
                    servers.append(server)
                    updates = server.updates()
                    server.start()
                if number == tamper_before:
                    assert cam.reference is not None
                    cam.reference = HeldReference(cam.reference.frame_id, _altered(cam.reference.state))
                result = await cam.send(image, reference="auto", layers=layers)
                results.append(result)
                finals.append(await _final(updates, "cam", result.session_id))
        finally:
            await server.close()
    return results, finals, servers, cam


def _altered(state: ReferenceState) -> ReferenceState:
    q = state.q.astype(np.int32)
    q[0, 0, 0] = q[0, 0, 0] + 2 if q[0, 0, 0] <= 0 else q[0, 0, 0] - 2
    return ReferenceState(state.model_id, state.width, state.height, state.top, q, state.passes)


def intra_bytes(image: np.ndarray, layers: int | None = None) -> int:
    encoder = codec().encoder(image)
    return sum(len(encoder.encode(spec)) for spec in encoder.default_layers()[:layers])


def acknowledged_specs(update: ImageUpdate, count: int) -> list[LayerSpec]:
    return [layer_spec(layer.pass_index, layer.region) for layer in update.received[:count]]


def assert_conditional_exact(image: np.ndarray, reference: ReferenceState, update: ImageUpdate) -> None:
    """The server's reconstruction is the codec's for the same layers coded against
    ``reference`` (encoded and decoded here), and the update says which reference."""
    c = codec()
    encoder = ConditionalEncoder(c, image, reference)
    decoder = ConditionalDecoder(c, encoder.header, reference)
    for layer in update.received:
        spec = layer_spec(layer.pass_index, layer.region)
        data = encoder.encode(spec)
        assert len(data) == layer.size, (layer, len(data))
        decoder.apply(spec, data)
    assert update.manifest.reference_hash == reference.hash()
    assert np.array_equal(update.reconstruction, decoder.reconstruct())


def mirror(
    images: list[np.ndarray], finals: list[ImageUpdate], results: list[DeviceResult]
) -> list[ReferenceState]:
    """The reference each picture after the first was coded against, derived here from what
    the device was told was acknowledged: the first picture intra, each next one against the
    state the previous left (the rule both ends follow)."""
    c = codec()
    encoder: Any = c.encoder(images[0])
    states = []
    for number in range(1, len(images)):
        count = results[number - 1].layers_acknowledged
        state = ReferenceState.from_encoder(encoder, acknowledged_specs(finals[number - 1], count))
        states.append(state)
        encoder = ConditionalEncoder(c, images[number], state)
    return states


@needs_fixedcam
def test_fixed_camera_codes_each_picture_against_the_last_and_saves_bytes(arun: Any) -> None:
    images = frames(0, 25, 50)
    results, finals, servers, cam = arun(send_all(f"{LOSSY}&seed=3", images))
    assert all(r.completed and r.reason == "complete" and not r.fell_back for r in results)
    assert [f.reason for f in finals] == ["complete"] * 3
    assert results[0].reference_id is None and finals[0].reference_id is None
    assert results[1].reference_id == results[0].session_id == finals[1].reference_id
    assert results[2].reference_id == results[1].session_id == finals[2].reference_id
    assert servers[0].counters.unknown_references == 0
    assert_exact(images[0], finals[0])
    states = mirror(images, finals, results)
    for image, state, final, result in zip(images[1:], states, finals[1:], results[1:], strict=True):
        assert_conditional_exact(image, state, final)
        # the same passes as the intra picture, plus the tile-mode map: fewer bytes
        assert final.layers == result.layers == final.total_passes
        assert result.layer_bytes < intra_bytes(image)
    assert cam.reference is not None and cam.reference.frame_id == results[2].session_id


@needs_fixedcam
def test_stopped_pictures_leave_the_prefix_the_device_knew_was_acknowledged(arun: Any) -> None:
    """A byte budget stops each picture part-way and loss hides some ACKs: the device knows
    fewer layers than the server applied (STOP carries no count), names the state of those it
    knows, and the server finds it among the prefixes of the picture it holds."""
    images = frames(0, 25, 50, 75)
    budget = intra_bytes(images[0]) // 2
    results, finals, servers, _ = arun(send_all(
        f"{EU868}?uplink_loss=0&downlink_loss=0.3&seed=21", images,
        server_kwargs={"policies": [ByteBudget(budget)]},
        device_kwargs={"config": ProtocolConfig(window=2)}))
    assert all(r.completed and r.reason == "stopped" and not r.fell_back for r in results)
    assert all(f.reason is not None and f.reason.startswith("stopped") for f in finals)
    assert servers[0].counters.unknown_references == 0
    assert all(0 < r.layers_acknowledged <= f.layers for r, f in zip(results, finals, strict=True))
    assert any(r.layers_acknowledged < f.layers for r, f in zip(results, finals, strict=True))
    assert [r.reference_id for r in results[1:]] == [r.session_id for r in results[:-1]]
    states = mirror(images, finals, results)
    for image, state, final in zip(images[1:], states, finals[1:], strict=True):
        assert_conditional_exact(image, state, final)


@needs_fixedcam
def test_server_restart_makes_the_device_fall_back_to_intra(arun: Any) -> None:
    images = frames(0, 25, 50)
    results, finals, servers, cam = arun(send_all(f"{LOSSY}&seed=4", images, restart_before=1))
    first, second, third = results
    assert first.completed and second.completed and third.completed
    assert second.fell_back and second.reference_id is None  # the new server held nothing
    assert finals[1].reference_id is None and finals[1].reason == "complete"
    assert_exact(images[1], finals[1])  # the same picture, exactly, without a reference
    assert servers[1].counters.unknown_references == 1
    # the refused session ended with a stated reason on both sides, nothing decoded
    assert servers[1].counters.rejected == 1
    # and the chain goes on from the intra picture
    assert not third.fell_back and third.reference_id == second.session_id
    state = ReferenceState.from_encoder(codec().encoder(images[1]),
                                        acknowledged_specs(finals[1], second.layers_acknowledged))
    assert_conditional_exact(images[2], state, finals[2])
    assert cam.reference is not None and cam.reference.frame_id == third.session_id


@needs_fixedcam
def test_a_mismatched_reference_is_detected_and_answered_with_intra(arun: Any) -> None:
    images = frames(0, 25)
    refused: list[ImageUpdate] = []

    def watch(update: ImageUpdate) -> None:
        if update.final and update.reason and "unknown reference" in update.reason:
            refused.append(update)

    results, finals, servers, cam = arun(send_all(f"{LOSSY}&seed=5", images, tamper_before=1,
                                                  server_kwargs={"on_update": watch}))
    assert results[1].completed and results[1].fell_back and results[1].reference_id is None
    assert servers[0].counters.unknown_references == 1
    assert len(refused) == 1 and refused[0].reason is not None
    assert refused[0].reason.startswith("rejected: unknown reference") and not refused[0].decodable
    assert refused[0].reference_id == results[0].session_id
    assert_exact(images[1], finals[1])
    assert cam.reference is not None and cam.reference.frame_id == results[1].session_id


@needs_fixedcam
def test_refine_on_a_reference_coded_picture(arun: Any) -> None:
    images = frames(0, 25)
    region = Region(1, 1, 3, 2)

    def choose(update: ImageUpdate) -> Refine | None:
        if update.reference_id is None or update.layers < 4:
            return None
        return Refine(region, 7)

    results, finals, _, _ = arun(send_all(f"{LOSSY}&seed=6", images, layers=4,
                                          server_kwargs={"policies": [RefineRegion(choose)]}))
    assert results[0].refines_answered == 0 and results[1].refines_answered == 1
    assert results[1].completed and not results[1].fell_back
    refined = [layer for layer in finals[1].received if layer.region is not None]
    # group 0: the tile-mode map and 4 passes (layers 0..4); then passes 5..7 over the region
    assert [layer.pass_index for layer in finals[1].received[:5]] == list(range(5))
    assert [layer.pass_index for layer in refined] == [5, 6, 7]
    assert all(layer.region == region for layer in refined)
    state = mirror(images, finals, results)[0]
    assert_conditional_exact(images[1], state, finals[1])


@needs_fixedcam
def test_the_reference_survives_a_device_reboot_in_its_store(arun: Any, tmp_path: Path) -> None:
    images = frames(0, 25)
    url = f"{EU868}?seed=7"

    async def main() -> tuple[DeviceResult, DeviceResult, ImageUpdate, int]:
        async with open_server_link(url) as server_link:
            server = Server(server_link, codec=codec())
            updates = server.updates()
            async with server:
                async with open_device_link(url, "cam") as link:
                    camera = Device(link, codec=codec(), store=tmp_path)
                    first = await camera.send(images[0], reference="auto")
                    await _final(updates, "cam", first.session_id)
                async with open_device_link(url, "cam") as link:  # a new process: only the store
                    rebooted = Device(link, codec=codec(), store=tmp_path)
                    assert rebooted.reference is not None
                    second = await rebooted.send(images[1], reference="auto")
                    final = await _final(updates, "cam", second.session_id)
            return first, second, final, server.counters.unknown_references

    first, second, final, refused = arun(main())
    assert second.completed and not second.fell_back and refused == 0
    assert second.reference_id == first.session_id == final.reference_id
    assert (tmp_path / "reference.bin").exists()


# -- units: the manifest's naming, the bank's bounds, the wire code ---------------------------


def test_the_manifest_names_a_reference_completely_or_not_at_all() -> None:
    condition = Condition(bytes(range(8)), 0x1234)
    manifest = with_reference(Manifest(capture_time=5, extra={24: 6}), 0x0102, condition)
    assert manifest.reference_id == 0x0102 and manifest.reference_hash == bytes(range(8))
    assert manifest.extra[RESIDUAL_ID_KEY] == 0x1234
    header = stream_header(7, (96, 64), manifest)
    assert header.condition == condition and header.top_plane == 6 and header.total_passes == 35
    assert stream_header(7, (96, 64), Manifest(extra={24: 6})).condition is None
    bad = [
        Manifest(reference_id=1, extra={24: 6, RESIDUAL_ID_KEY: 1}),  # no hash
        Manifest(reference_hash=bytes(8), extra={24: 6, RESIDUAL_ID_KEY: 1}),  # no frame id
        Manifest(reference_id=1, reference_hash=bytes(4), extra={24: 6, RESIDUAL_ID_KEY: 1}),
        Manifest(reference_id=1, reference_hash=bytes(8), extra={24: 6}),  # no table id
        Manifest(reference_id=1, reference_hash=bytes(8), extra={24: 6, RESIDUAL_ID_KEY: 1 << 16}),
    ]
    for manifest in bad:
        with pytest.raises(CodecError):
            condition_of(manifest)


def test_unknown_reference_is_a_wire_abort_reason() -> None:
    frame = build_downlink(ServerAbortFrame(AbortReason.UNKNOWN_REFERENCE))
    assert frame == bytes([0xD0 | 12])
    parsed = parse_downlink(frame)
    assert isinstance(parsed, ServerAbortFrame) and parsed.reason is AbortReason.UNKNOWN_REFERENCE
    assert AbortReason.UNKNOWN_REFERENCE.text == "unknown reference"


def test_reference_bank_is_bounded_and_resolves_prefixes() -> None:
    c = codec()
    image = np.full((32, 32, 3), 90, np.uint8)
    image[8:24, 8:24] = 200
    encoder = c.encoder(image)
    specs = encoder.default_layers()[:3]
    bank = ReferenceBank(max_devices=2, per_device=2)
    source = bank.begin("a", 0x10, encoder.header, None)
    for spec in specs:
        source.layers.append((spec, encoder.encode(spec)))
    for count in range(1, 4):
        state = ReferenceState.from_encoder(c.encoder(image), specs[:count])
        found = bank.resolve("a", 0x10, state.hash(), c)
        assert found is not None and found.frame_id == 0x10 and found.digest == state.hash()
        assert bank.resolve("a", 0x11, state.hash(), c) is None  # another frame id
        assert bank.resolve("b", 0x10, state.hash(), c) is None  # another device
    held = HeldReference(0x10, ReferenceState.from_encoder(c.encoder(image), specs[:2]))
    assert HeldReference.from_bytes(held.to_bytes()).digest == held.digest
    header = StreamHeader(c.model_id, 32, 32, 6, Condition(held.digest, 0))
    bank.begin("a", 0x11, header, held)
    assert bank.resolve("a", 0x10, held.digest, c) is held  # the base of the last picture
    bank.begin("a", 0x12, header, None)
    assert bank.resolve("a", 0x10, held.digest, c) is held
    bank.begin("a", 0x13, header, None)  # two newer pictures: 0x10's states are gone
    assert bank.resolve("a", 0x10, held.digest, c) is None
    bank.begin("b", 1, header, None)
    bank.begin("c", 1, header, None)
    assert len(bank) == 2 and bank.sources("a") == ()  # the least recently active device went


@needs_fixedcam
def test_a_reference_coded_session_resumes_after_a_power_cut(arun: Any, tmp_path: Path) -> None:
    """The stored session of a reference-coded picture resumes with the same stream, and the
    rebuilt conditional encoder still mirrors the server's state for the next reference."""
    images = frames(0, 25, 50)
    url = f"{EU868}?seed=8"
    config = ProtocolConfig(window=2)

    class PowerCut(Exception):
        pass

    def cut_power(event: object) -> None:
        if isinstance(event, LayersAcknowledged) and event.count >= 3:
            raise PowerCut

    async def main() -> tuple[list[DeviceResult], list[ImageUpdate], int]:
        async with open_server_link(url) as server_link:
            server = Server(server_link, codec=codec())
            updates = server.updates()
            async with server:
                async with open_device_link(url, "cam") as link:
                    camera = Device(link, codec=codec(), store=tmp_path, config=config)
                    first = await camera.send(images[0], reference="auto")
                    await _final(updates, "cam", first.session_id)
                    camera.on_event = cut_power
                    with pytest.raises(PowerCut):
                        await camera.send(images[1], reference="auto")
                async with open_device_link(url, "cam") as link:
                    rebooted = Device(link, codec=codec(), store=tmp_path, config=config)
                    second = await rebooted.send(images[1], reference="auto")
                    final_second = await _final(updates, "cam", second.session_id)
                    third = await rebooted.send(images[2], reference="auto")
                    final_third = await _final(updates, "cam", third.session_id)
            return [first, second, third], [final_second, final_third], server.counters.unknown_references

    (first, second, third), (final_second, final_third), refused = arun(main())
    assert second.resumed and second.completed and second.reference_id == first.session_id
    assert third.completed and not third.fell_back and refused == 0
    assert third.reference_id == second.session_id == final_third.reference_id
    assert final_second.reference_id == first.session_id and final_second.reason == "complete"


@needs_fixedcam
def test_fixedcam_link_benchmark_compares_chains_end_to_end() -> None:
    from lpimg.bench.fixedlink import run

    result = run(str(FIXEDCAM), start=450, step=25, count=2, layers=3, downlink_loss=0.2)
    ref, intra = result["with_reference"], result["intra"]
    assert [row["delivered"] for row in ref + intra] == [True] * 4
    assert ref[1]["reference_id"] is not None and intra[1]["reference_id"] is None
    summary = result["summary"]
    assert summary["with_reference"]["layer_bytes"] == ref[1]["layer_bytes"]
    assert 0 < summary["saving_layer_bytes"] < 1 and summary["saving_uplink_bytes"] > 0


def test_unknown_reference_for_a_session_naming_none_means_its_start_was_lost() -> None:
    """The answer to a refused reference-coded session reaches the device's intra fallback,
    whose start the server missed: the device sends its start again instead of giving up."""
    intra = DeviceSession(3, [b"\x05" * 60], mtu=24, now=0.0)
    assert intra.next_frame(0.0) is not None  # START (lost)
    assert intra.next_frame(10.0) is not None  # DATA 1
    intra.receive_frame(build_downlink(ServerAbortFrame(AbortReason.UNKNOWN_REFERENCE)), 11.0)
    assert not intra.finished and intra.stats.restarts == 1
    again = intra.next_frame(20.0)
    assert again is not None and isinstance(parse_uplink(again), StartFrame)

    named = DeviceSession(4, [b"\x06" * 60], mtu=24, now=0.0,
                          manifest=Manifest(reference_id=3, reference_hash=bytes(8)))
    assert named.next_frame(0.0) is not None
    named.receive_frame(build_downlink(ServerAbortFrame(AbortReason.UNKNOWN_REFERENCE)), 1.0)
    assert named.finished and named.reason == "aborted: unknown reference"
