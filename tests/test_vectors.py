"""The golden vectors of spec/vectors and the generated tables of spec/PROTOCOL.md still match
what the library does: any drift in the bytes, the tables or the behaviour fails here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from lpimg.errors import WireError
from lpimg.protocol import DeviceSession, ProtocolConfig, Region, ServerProtocol
from lpimg.protocol.auth import DownlinkRejected, cmac, open_downlink, record_check
from lpimg.wire import (
    AbortReason,
    Descriptor,
    GroupHeader,
    Manifest,
    build_descriptor,
    build_downlink,
    build_group_header,
    build_layer_record,
    build_uplink,
    check_layer_record,
    decode_manifest,
    encode_manifest,
    parse_descriptor,
    parse_downlink,
    parse_group_header,
    parse_uplink,
)

SPEC = Path(__file__).resolve().parent.parent / "spec"
VECTORS = SPEC / "vectors"


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_vectors", SPEC / "gen_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


@pytest.mark.parametrize("vector", _load("uplink.json"), ids=lambda v: v["name"])
def test_uplink_vectors(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    frame = parse_uplink(data)
    assert type(frame).__name__ == vector["frame"]
    assert gen.to_json(frame) == vector["fields"]
    assert build_uplink(gen.frame_from_json(vector["frame"], vector["fields"])) == data


@pytest.mark.parametrize("vector", _load("downlink.json"), ids=lambda v: v["name"])
def test_downlink_vectors(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    frame = parse_downlink(data)
    assert type(frame).__name__ == vector["frame"]
    assert gen.to_json(frame) == vector["fields"]
    assert build_downlink(gen.frame_from_json(vector["frame"], vector["fields"])) == data


def _manifest(values: dict[str, Any]) -> Manifest:
    values = dict(values)
    if "reference_hash" in values:
        values["reference_hash"] = bytes.fromhex(values["reference_hash"])
    extra = {int(k) if k.isdigit() else k: v for k, v in values.items() if k not in (
        "capture_time", "reference_id", "reference_hash", "device")}
    known = {k: v for k, v in values.items() if k in (
        "capture_time", "reference_id", "reference_hash", "device")}
    return Manifest(**known, extra=extra)


@pytest.mark.parametrize("vector", _load("records.json"), ids=lambda v: v["name"])
def test_record_vectors(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    fields = vector["fields"]
    if vector["record"] == "descriptor":
        descriptor = Descriptor(
            fields["model_id"],
            fields["width"],
            fields["height"],
            tuple(fields["layer_sizes"]),
            _manifest(fields["manifest"]),
        )
        assert parse_descriptor(data) == descriptor
        assert build_descriptor(descriptor) == data
    elif vector["record"] == "group_header":
        region = fields["region"]
        header = GroupHeader(
            None if region is None else Region(**region),
            fields["first_pass"],
            tuple(fields["layer_sizes"]),
        )
        assert parse_group_header(data) == header
        assert build_group_header(header) == data
    elif vector["record"] == "layer":
        layer = bytes.fromhex(fields["data"])
        assert check_layer_record(data) == layer
        assert build_layer_record(layer) == data
    else:
        manifest = _manifest(fields)
        assert decode_manifest(data) == manifest
        assert encode_manifest(manifest) == data


TRANSCRIPTS = sorted(path.name for path in VECTORS.glob("transfer-*.json"))


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_a_server_fed_the_recorded_uplinks_answers_the_recorded_downlinks(name: str) -> None:
    session = _load(name)
    keys = {"dev": bytes.fromhex(session["key"])} if "key" in session else {}
    server = ServerProtocol(ProtocolConfig(**session["config"]), keys=keys)
    refine = session["refine"]
    frames = session["frames"]
    abort_on_start = session.get("abort_on_start")
    delivered = []
    for position, record in enumerate(frames):
        if record["dir"] != "up" or record["lost"]:
            continue
        server.receive_frame("dev", bytes.fromhex(record["hex"]), record["t"])
        for event in iter(server.next_event, None):
            if type(event).__name__ == "SessionStarted" and abort_on_start is not None:
                server.abort("dev", AbortReason[abort_on_start], record["t"])
            data = getattr(event, "data", None)
            if data is not None:
                delivered.append(data.hex())
                if refine is not None and event.index == refine["after_layer"]:
                    region = refine["region"]
                    server.refine(
                        "dev", region and Region(**region), refine["pass_index"], now=record["t"]
                    )
        answer = server.next_frame("dev", record["t"] + 1.0)
        following = frames[position + 1] if position + 1 < len(frames) else None
        if following is not None and following["dir"] == "down":
            assert answer is not None and answer.hex() == following["hex"]
        else:
            assert answer is None
    assert delivered == session["delivered"]


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_a_device_fed_the_recorded_downlinks_sends_the_recorded_uplinks(name: str) -> None:
    session = _load(name)
    layers = [bytes.fromhex(layer) for layer in session["layers"]]
    device = DeviceSession(
        session["session_id"],
        layers,
        mtu=session["mtu"],
        now=0.0,
        model_id=session["model_id"],
        geometry=tuple(session["geometry"]),
        config=ProtocolConfig(**session["config"]),
        manifest=decode_manifest(bytes.fromhex(session.get("manifest", ""))),
        key=bytes.fromhex(session["key"]) if "key" in session else None,
    )
    refine = session["refine"]
    for record in session["frames"]:
        if record["dir"] == "up":
            frame = device.next_frame(record["t"])
            while frame is None:
                timer = device.get_timer()
                assert timer is not None and timer <= record["t"]
                device.handle_timer(timer)
                frame = device.next_frame(record["t"])
            assert frame.hex() == record["hex"]
        elif not record["lost"]:
            device.receive_frame(bytes.fromhex(record["hex"]), record["t"])
            for event in iter(device.next_event, None):
                if type(event).__name__ == "RefineRequested":
                    answer = [bytes.fromhex(layer) for layer in refine["answer_layers"]]
                    first = refine["pass_index"] - len(answer) + 1
                    device.add_layers(answer, first_pass=first)
    assert device.finished and device.reason == session["device_reason"]


def test_generated_files_and_spec_tables_are_up_to_date() -> None:
    stale = [path.name for path, text in gen.outputs().items() if path.read_text() != text]
    assert stale == [], f"run `python spec/gen_vectors.py` (stale: {stale})"


def test_the_spec_has_every_frame_table() -> None:
    spec = (SPEC / "PROTOCOL.md").read_text()
    for title in ("START", "DATA", "POLL", "RESUME", "ACK", "LAYER_COMPLETE", "REFINE", "STOP"):
        assert f"#### {title} (" in spec
    assert spec.count("#### ABORT (") == 2
    assert "| `window` | device | 32 |" in spec


def test_auth_vectors() -> None:
    """Section 15: the CMAC itself, record tags, sealed downlinks and what a device rejects."""
    vectors = _load("auth.json")
    key = bytes.fromhex(vectors["key"])
    check = vectors["cmac_check"]
    assert cmac(bytes.fromhex(check["key"]), bytes.fromhex(check["message"])).hex() == check["cmac"]
    assert check["cmac"] == "070a16b46b4d4144f79bdd9dd04a287c"  # RFC 4493, example 2
    for record in vectors["records"]:
        data = bytes.fromhex(record["hex"])
        tag = record_check(key, record["session_id"], record["record"])
        if "data" in record["fields"]:
            assert check_layer_record(data, tag).hex() == record["fields"]["data"]
        else:
            assert parse_descriptor(data, tag).layer_sizes == tuple(record["fields"]["layer_sizes"])
            with pytest.raises(WireError):
                parse_descriptor(data)  # a tag is not a CRC
        with pytest.raises(WireError):  # nor is it valid at another place in the stream
            check_layer_record(data, record_check(key, record["session_id"], record["record"] + 1))
    for sealed in vectors["sealed_downlinks"]:
        data = bytes.fromhex(sealed["hex"])
        session = 0x0102 if sealed["session_id"] is None else sealed["session_id"]
        frame, counter = open_downlink(key, data, sealed["counter"] - 1, session)
        assert frame.hex() == sealed["frame_hex"] and counter == sealed["counter"]
        assert data[-4:].hex() == sealed["mic"]
        assert type(parse_downlink(frame)).__name__ == sealed["fields"]["type"]
    outcomes = set()
    for case in vectors["device_checks"]:
        try:
            open_downlink(key, bytes.fromhex(case["hex"]), case["last_counter"], case["session_id"])
            outcome = "accepted"
        except DownlinkRejected as error:
            outcome = error.cause
        assert outcome == case["outcome"], case["name"]
        outcomes.add(outcome)
    assert outcomes == {"accepted", "replay", "bad_mic", "malformed"}
    assert {c["name"]: c["outcome"] for c in vectors["device_checks"]}["stop-other-session"] == "bad_mic"
