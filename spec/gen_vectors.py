"""Generate spec/vectors/*.json and the frame tables of spec/PROTOCOL.md from lpimg.wire.

The construct declarations in lpimg.wire are the single source of every byte layout: this
script walks them to print the tables of the spec, and runs the library to produce golden
frames (hex plus decoded fields) and whole-session transcripts. tests/test_vectors.py fails
when the library's bytes or the spec's tables drift from what is committed here.

    python spec/gen_vectors.py           # rewrite spec/vectors/*.json and the tables
    python spec/gen_vectors.py --check   # exit 1 if anything would change
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from construct import (
    Array,
    Bytes,
    Construct,
    FormatField,
    GreedyBytes,
    Renamed,
    Struct,
    Terminated,
)

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from lpimg.protocol import DeviceSession, ProtocolConfig, Region, ServerProtocol  # noqa: E402
from lpimg.protocol.auth import (  # noqa: E402
    DownlinkRejected,
    cmac,
    downlink_mic,
    open_downlink,
    record_check,
    seal_downlink,
)
from lpimg.protocol.events import LayerReceived, RefineRequested, SessionStarted  # noqa: E402
from lpimg.wire import (  # noqa: E402
    AbortReason,
    AckFrame,
    AuthStartFrame,
    DataFrame,
    Descriptor,
    DeviceAbortFrame,
    GroupHeader,
    LayerCompleteFrame,
    Manifest,
    PollFrame,
    RefineFrame,
    ResumeFrame,
    ServerAbortFrame,
    StartFrame,
    StopFrame,
    build_descriptor,
    build_downlink,
    build_group_header,
    build_layer_record,
    build_uplink,
    encode_manifest,
    parse_downlink,
    parse_uplink,
    split_sealed,
)
from lpimg.wire.auth import SEALED_TRAILER  # noqa: E402
from lpimg.wire.downlink import DOWNLINK_SPECS  # noqa: E402
from lpimg.wire.fields import BitFields, VarUInt  # noqa: E402
from lpimg.wire.records import DESCRIPTOR_BODY, GROUP_BODY  # noqa: E402
from lpimg.wire.uplink import UPLINK_SPECS  # noqa: E402

SPEC = ROOT / "PROTOCOL.md"
VECTORS = ROOT / "vectors"
BEGIN = "<!-- BEGIN GENERATED FRAME TABLES (spec/gen_vectors.py) -->"
END = "<!-- END GENERATED FRAME TABLES -->"
CONFIG_BEGIN = "<!-- BEGIN GENERATED CONFIG TABLE (spec/gen_vectors.py) -->"
CONFIG_END = "<!-- END GENERATED CONFIG TABLE -->"
BOTH_SIDES = {"max_layers", "max_layer_bytes", "max_session_bytes", "max_header_bytes"}
"""Limits a device also checks, refusing to create a session the server would reject."""

FRAME_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        StartFrame,
        AuthStartFrame,
        DataFrame,
        PollFrame,
        ResumeFrame,
        DeviceAbortFrame,
        AckFrame,
        LayerCompleteFrame,
        RefineFrame,
        StopFrame,
        ServerAbortFrame,
    )
}

# -- JSON form of frames and records ---------------------------------------------------------


def to_json(value: Any) -> Any:
    """Decoded fields as plain JSON: bytes as hex, enums by name, regions as objects."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, Manifest):
        return {key: to_json(item) for key, item in value.to_dict().items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_json(getattr(value, field.name)) for field in fields(value)}
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    return value


def frame_from_json(kind: str, values: dict[str, Any]) -> Any:
    """The inverse of :func:`to_json` for the eleven frame types."""
    cls = FRAME_TYPES[kind]
    arguments: dict[str, Any] = {}
    for field in fields(cls):
        if field.name not in values:
            continue
        value = values[field.name]
        if field.name in ("payload", "chunk", "bitmap"):
            value = bytes.fromhex(value)
        elif field.name == "reason":
            value = AbortReason[value]
        elif field.name == "region":
            value = None if value is None else Region(**value)
        arguments[field.name] = value
    return cls(**arguments)


def frame_vector(name: str, frame: Any, build: Callable[[Any], bytes], note: str) -> dict[str, Any]:
    return {
        "name": name,
        "frame": type(frame).__name__,
        "hex": build(frame).hex(),
        "fields": to_json(frame),
        "note": note,
    }


def uplink_vectors() -> list[dict[str, Any]]:
    chunk = bytes(range(46))
    cases = [
        ("start-mtu51", StartFrame(0x0102, 49, chunk), "fragment 0 of a stream at a 51-byte MTU"),
        ("start-whole-stream", StartFrame(7, 240, b"\x01\x02\x03", ack=True), "stream fits; ACK"),
        ("data-first", DataFrame(1, bytes(range(49))), "fragment 1"),
        ("data-ack", DataFrame(31, b"\xaa" * 49, ack=True), "end of a 32-fragment window"),
        ("data-last-index", DataFrame(16382, b"\x00", ack=True), "the highest index"),
        ("poll", PollFrame(), "ACK request without data"),
        ("resume", ResumeFrame(0x0102), "a rebooted device re-attaches"),
        ("abort-cancelled", DeviceAbortFrame(AbortReason.CANCELLED), "the application gave up"),
        ("abort-retries", DeviceAbortFrame(AbortReason.TOO_MANY_RETRIES), "out of polls"),
        (
            "start-auth",
            AuthStartFrame(0x0102, 49, chunk),
            "an authenticated session's start (section 15): START with kind 0101",
        ),
    ]
    return [frame_vector(name, frame, build_uplink, note) for name, frame, note in cases]


def downlink_vectors() -> list[dict[str, Any]]:
    cases = [
        ("ack-clean", AckFrame(32), "fragments 0..31 held, nothing else"),
        (
            "ack-bitmap",
            AckFrame.from_received(3, [5, 6, 20], 8),
            "0..2 held; 3 missing; 4 missing; 5, 6 held; 7..19 missing; 20 held",
        ),
        ("layer-complete", LayerCompleteFrame(1), "layer 0 verified; the end of a 1-layer session"),
        ("refine-region", RefineFrame(0, Region(2, 3, 4, 5), 7, 2), "passes <= 7 over a rectangle"),
        ("refine-whole", RefineFrame(1, None, 9), "passes <= 9 over the whole image"),
        ("stop", StopFrame(), "enough"),
        ("abort-unknown", ServerAbortFrame(AbortReason.UNKNOWN_SESSION), "no such session"),
        ("abort-full", ServerAbortFrame(AbortReason.SERVER_FULL), "no room for a session"),
        (
            "abort-unknown-reference",
            ServerAbortFrame(AbortReason.UNKNOWN_REFERENCE),
            "the reference the session names is not held: the device sends the picture intra",
        ),
    ]
    return [frame_vector(name, frame, build_downlink, note) for name, frame, note in cases]


def record_vectors() -> list[dict[str, Any]]:
    manifest = Manifest(
        capture_time=1_700_000_000,
        reference_id=41,
        reference_hash=bytes.fromhex("00112233445566778899aabbccddeeff"),
        device={"fw": "1.4.2", "battery_mv": 3710},
        extra={24: 5},
    )
    descriptors = [
        ("descriptor-plain", Descriptor(1, 320, 240, (2001,))),
        ("descriptor-manifest", Descriptor(3, 640, 480, (64, 300, 1200), manifest)),
        ("descriptor-reference", Descriptor(3, 320, 240, (5, 180, 240), REFERENCE_MANIFEST)),
    ]
    groups = [
        ("group-refine", GroupHeader(Region(2, 3, 4, 5), 6, (150, 60))),
        ("group-decline", GroupHeader(None, 0, ())),
    ]
    vectors: list[dict[str, Any]] = []
    for name, descriptor in descriptors:
        vectors.append(
            {
                "name": name,
                "record": "descriptor",
                "hex": build_descriptor(descriptor).hex(),
                "fields": to_json(descriptor),
            }
        )
    for name, header in groups:
        vectors.append(
            {
                "name": name,
                "record": "group_header",
                "hex": build_group_header(header).hex(),
                "fields": to_json(header),
            }
        )
    vectors.append(
        {
            "name": "layer-123456789",
            "record": "layer",
            "hex": build_layer_record(b"123456789").hex(),
            "fields": {"data": b"123456789".hex()},
        }
    )
    for name, value in (("manifest", manifest), ("manifest-reference", REFERENCE_MANIFEST)):
        vectors.append(
            {
                "name": name,
                "record": "manifest",
                "hex": encode_manifest(value).hex(),
                "fields": to_json(value),
            }
        )
    return vectors


REFERENCE_MANIFEST = Manifest(
    capture_time=1_700_000_600,
    reference_id=0x0101,
    reference_hash=bytes.fromhex("0123456789abcdef"),
    extra={24: 6, 25: 0xE5B8},
)
"""A reference-coded picture (section 10): coded against the state session 0x0101 left, whose
8-byte hash is key 2; lpimg's codec adds its top plane (key 24) and conditional table id (25)."""


# -- whole sessions --------------------------------------------------------------------------


def pattern(size: int, seed: int) -> bytes:
    """Deterministic layer bytes a C test can regenerate: (seed + 31 * i) mod 251."""
    return bytes((seed + 31 * i) % 251 for i in range(size))


def transcript(
    name: str,
    note: str,
    layers: list[bytes],
    mtu: int,
    *,
    lose_up: tuple[int, ...] = (),
    lose_down: tuple[int, ...] = (),
    refine: tuple[Region | None, int, list[bytes]] | None = None,
    config: ProtocolConfig | None = None,
    manifest: Manifest | None = None,
    abort_on_start: AbortReason | None = None,
    key: bytes | None = None,
) -> dict[str, Any]:
    """Run one session over a scripted class A link: the server answers right after each
    uplink it heard; uplink/downlink number k is lost when k is listed. With
    ``abort_on_start`` the server application aborts the session once its descriptor verified
    (for example a reference it does not hold). With ``key`` the session is authenticated
    (downlink counters follow the transcript's clock)."""
    config = config or ProtocolConfig()
    device = DeviceSession(
        0x0102, layers, mtu=mtu, now=0.0, model_id=1, geometry=(320, 240), config=config,
        manifest=manifest, key=key,
    )
    server = ServerProtocol(config, keys={} if key is None else {"dev": key})
    frames: list[dict[str, Any]] = []
    delivered: list[str] = []
    now = 0.0
    up = down = 0
    def server_events() -> None:
        # the application reacts before the receive window opens, as a gateway would
        for event in iter(server.next_event, None):
            if isinstance(event, SessionStarted) and abort_on_start is not None:
                server.abort("dev", abort_on_start, now)
            if isinstance(event, LayerReceived):
                delivered.append(event.data.hex())
                if refine is not None and event.index == 0:
                    server.refine("dev", refine[0], refine[1], now=now)

    for _ in range(10_000):
        for event in iter(device.next_event, None):
            if isinstance(event, RefineRequested) and refine is not None:
                device.add_layers(refine[2], first_pass=refine[1] - len(refine[2]) + 1)
        if device.finished:
            break
        frame = device.next_frame(now)
        if frame is None:
            timer = device.get_timer()
            assert timer is not None, "the scripted session stalled"
            now = max(now, timer)
            device.handle_timer(now)
            continue
        lost = up in lose_up
        frames.append({"t": now, "dir": "up", "lost": lost, "hex": frame.hex(),
                       "frame": _decoded(parse_uplink(frame))})
        up += 1
        if not lost:
            server.receive_frame("dev", frame, now)
            server_events()
            answer = server.next_frame("dev", now + 1.0)
            if answer is not None:
                lost_down = down in lose_down
                frames.append({"t": now + 1.0, "dir": "down", "lost": lost_down,
                               "hex": answer.hex(), "frame": _decoded_downlink(answer, key)})
                down += 1
                if not lost_down:
                    device.receive_frame(answer, now + 1.0)
        now += 10.0
    assert device.finished
    extra: dict[str, Any] = {}
    if manifest is not None:
        extra["manifest"] = encode_manifest(manifest).hex()
    if abort_on_start is not None:
        extra["abort_on_start"] = abort_on_start.name
    keyed = {} if key is None else {"key": key.hex()}
    return {
        "name": name,
        "note": note,
        **keyed,
        "mtu": mtu,
        "session_id": 0x0102,
        "model_id": 1,
        "geometry": [320, 240],
        "layers": [layer.hex() for layer in layers],
        "refine": None
        if refine is None
        else {
            "after_layer": 0,
            "region": to_json(refine[0]),
            "pass_index": refine[1],
            "answer_layers": [layer.hex() for layer in refine[2]],
        },
        "config": {"window": config.window, "ack_timeout": config.ack_timeout},
        **extra,
        "frames": frames,
        "delivered": delivered,
        "device_reason": device.reason,
    }


def _decoded(frame: Any) -> dict[str, Any]:
    return {"type": type(frame).__name__, **to_json(frame)}


def _decoded_downlink(data: bytes, key: bytes | None) -> dict[str, Any]:
    if key is None:
        return _decoded(parse_downlink(data))
    frame, counter, mic = split_sealed(data)
    return {**_decoded(parse_downlink(frame)), "counter": counter, "mic": mic.hex()}


def transcripts() -> list[dict[str, Any]]:
    return [
        transcript(
            "transfer-51-2001",
            "the benchmark case: one 2,001-byte layer at EU868 DR0, no loss: 42 uplinks, 2 ACKs",
            [pattern(2001, 1)],
            51,
        ),
        transcript(
            "transfer-24-loss",
            "three layers at a 24-byte MTU, window 8; uplinks 2 and 9 and the first ACK are "
            "lost, so the device polls and sends fragments again",
            [pattern(40, 2), pattern(70, 3), pattern(25, 4)],
            24,
            lose_up=(2, 9),
            lose_down=(0,),
            config=ProtocolConfig(window=8, ack_timeout=20.0),
        ),
        transcript(
            "transfer-refine",
            "two layers at a 51-byte MTU; after layer 0 the server asks for passes up to 5 over "
            "a rectangle and the device answers with two layers",
            [pattern(60, 5), pattern(90, 6)],
            51,
            refine=(Region(1, 2, 3, 4), 5, [pattern(30, 7), pattern(20, 8)]),
        ),
        transcript(
            "transfer-unknown-reference",
            "a picture coded against a reference (manifest keys 1 and 2) the server does not "
            "hold: it aborts with UNKNOWN_REFERENCE once the descriptor verified, delivering "
            "nothing; the device then sends the same picture intra in a new session",
            [pattern(5, 9), pattern(180, 10), pattern(240, 11)],
            51,
            manifest=REFERENCE_MANIFEST,
            abort_on_start=AbortReason.UNKNOWN_REFERENCE,
        ),
        transcript(
            "transfer-auth",
            "an authenticated session (section 15) with the key of auth.json: two layers at a "
            "24-byte MTU, window 8, uplink 3 and the first ACK lost; records end with AES-CMAC "
            "tags, every downlink carries a counter and a MIC",
            [pattern(40, 9), pattern(30, 10)],
            24,
            lose_up=(3,),
            lose_down=(0,),
            config=ProtocolConfig(window=8, ack_timeout=20.0),
            key=AUTH_KEY,
        ),
    ]


# -- authenticated sessions ------------------------------------------------------------------

AUTH_KEY = bytes(range(16))
"""The key of every authenticated vector: 000102...0f."""


def auth_vectors() -> dict[str, Any]:
    """Keys, record tags and sealed downlinks of section 15, with expected rejections."""
    key = AUTH_KEY
    rfc4493 = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    message = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    descriptor = Descriptor(1, 320, 240, (9,))
    records = [
        {
            "name": "descriptor",
            "session_id": 0x0102,
            "record": 0,
            "hex": build_descriptor(descriptor, record_check(key, 0x0102, 0)).hex(),
            "fields": to_json(descriptor),
            "note": "record 0; its last 4 bytes are the tag, where a plain session has the CRC",
        },
        {
            "name": "layer-123456789",
            "session_id": 0x0102,
            "record": 1,
            "hex": build_layer_record(b"123456789", record_check(key, 0x0102, 1)).hex(),
            "fields": {"data": b"123456789".hex()},
            "note": "layer 0 is record 1: the descriptor is record 0",
        },
    ]
    sid = 0x0102
    sealed = []
    cases: list[tuple[str, Any, int, int | None]] = [
        ("ack-clean", AckFrame(32), 1_700_000_000, sid),
        ("ack-bitmap", AckFrame.from_received(3, [5, 6, 20], 8), 1_700_000_001, sid),
        ("layer-complete", LayerCompleteFrame(1), 1_700_000_002, sid),
        ("refine-region", RefineFrame(0, Region(2, 3, 4, 5), 7, 2), 1_700_000_003, sid),
        ("stop", StopFrame(), 1_700_000_004, sid),
        ("abort-rejected", ServerAbortFrame(AbortReason.REJECTED), 1_700_000_005, sid),
        (
            "abort-unknown-no-session",
            ServerAbortFrame(AbortReason.UNKNOWN_SESSION),
            1_700_000_006,
            None,
        ),
    ]
    for name, frame, counter, session in cases:
        plain = build_downlink(frame)
        sealed.append(
            {
                "name": name,
                "session_id": session,
                "counter": counter,
                "frame_hex": plain.hex(),
                "mic": downlink_mic(key, counter, plain, session).hex(),
                "hex": seal_downlink(key, counter, plain, session).hex(),
                "fields": _decoded(frame),
            }
        )
    stop = build_downlink(StopFrame())
    genuine = seal_downlink(key, 1_700_000_004, stop, sid)
    flipped = bytes(genuine[:-1]) + bytes((genuine[-1] ^ 0x01,))
    other = seal_downlink(bytes(16), 1_700_000_004, stop, sid)
    raised = stop + (1_700_000_005).to_bytes(4, "big") + genuine[-4:]
    other_session = seal_downlink(key, 1_700_000_004, stop, sid + 1)
    unbound_stop = seal_downlink(key, 1_700_000_004, stop, None)
    unbound_abort = seal_downlink(
        key, 1_700_000_006, build_downlink(ServerAbortFrame(AbortReason.UNKNOWN_SESSION)), None
    )
    rejected = []
    for name, data, last, note in (
        ("stop-genuine", genuine, 1_700_000_003, "accepted: the counter is above the last one"),
        ("stop-replayed", genuine, 1_700_000_004, "the same frame again: not above the last"),
        ("stop-older", genuine, 1_700_000_010, "an old frame after a newer one"),
        ("stop-mic-flipped", flipped, 0, "one bit of the MIC changed"),
        ("stop-other-key", other, 0, "sealed with another key (all zero)"),
        ("stop-counter-raised", raised, 0, "the counter changed, the MIC kept"),
        ("stop-other-session", other_session, 0, "genuine, but for session 0x0103"),
        ("stop-no-session", unbound_stop, 0, "the no-session label carries only ABORT"),
        ("abort-no-session", unbound_abort, 0, "accepted: an ABORT under the no-session label"),
        ("plain-stop", stop, 0, "an unsealed frame"),
    ):
        try:
            open_downlink(key, data, last, sid)
            outcome = "accepted"
        except DownlinkRejected as error:
            outcome = error.cause
        rejected.append(
            {"name": name, "hex": data.hex(), "session_id": sid, "last_counter": last,
             "outcome": outcome, "note": note}
        )
    return {
        "key": key.hex(),
        "cmac_check": {
            "note": "RFC 4493 example 2 (AES-128, one block), to check the CMAC itself",
            "key": rfc4493.hex(),
            "message": message.hex(),
            "cmac": cmac(rfc4493, message).hex(),
        },
        "records": records,
        "sealed_downlinks": sealed,
        "device_checks": rejected,
    }


# -- byte tables -----------------------------------------------------------------------------


def _unwrap(sub: Construct) -> tuple[str | None, str, Construct]:
    name, docs = None, ""
    while isinstance(sub, Renamed):
        name = name or sub.name
        docs = docs or (sub.docs or "")
        sub = sub.subcon
    return name, docs, sub


def _bits(start: int, width: int) -> str:
    return str(start) if width == 1 else f"{start}-{start + width - 1}"


def table(declaration: Struct) -> list[str]:
    """Markdown rows describing one declaration, in wire order."""
    rows = ["| byte | bits | field | encoding | meaning |", "|---|---|---|---|---|"]
    offset: int | str = 0
    for sub in declaration.subcons:
        name, docs, inner = _unwrap(sub)
        if inner is Terminated or isinstance(inner, type(Terminated)):
            continue
        if isinstance(inner, BitFields):
            position = 0
            for field in inner.fields:
                byte = position // 8 + offset if isinstance(offset, int) else offset
                encoding = "flag" if field.flag else f"uint{field.width}"
                if field.const is not None:
                    encoding = f"= {field.const:0{field.width}b}"
                bits = _bits(position, field.width)
                rows.append(f"| {byte} | {bits} | {field.name} | {encoding} | {field.doc} |")
                position += field.width
            offset = offset + inner.length if isinstance(offset, int) else offset
            continue
        if isinstance(inner, FormatField):
            size = inner.length
            encoding = f"uint{8 * size}" + (" big-endian" if size > 1 else "")
        elif isinstance(inner, VarUInt):
            size, encoding = None, "varint"
        elif isinstance(inner, Array):
            count = str(inner.count).replace("this['", "").replace("']", "")
            size, encoding = None, f"{count} x varint"
        elif inner is GreedyBytes or isinstance(inner, type(GreedyBytes)):
            size, encoding = None, "bytes to the end"
        elif isinstance(inner, Bytes) and isinstance(inner.length, int):
            size, encoding = inner.length, f"{inner.length} bytes"
        else:  # pragma: no cover - a new construct type needs a line here
            raise TypeError(f"no table form for {inner!r}")
        where = f"{offset}" if isinstance(offset, int) else offset
        rows.append(f"| {where} | | {name} | {encoding} | {docs} |")
        offset = offset + size if isinstance(offset, int) and size is not None else "var."
    return rows


def tables() -> str:
    parts = [BEGIN, ""]
    for title, specs in (("Uplink frames", UPLINK_SPECS), ("Downlink frames", DOWNLINK_SPECS)):
        parts.append(f"### {title}")
        parts.append("")
        for spec in specs:
            parts.append(f"#### {spec.name} ({spec.direction}): {spec.summary}")
            parts.append("")
            parts.extend(table(spec.declaration))
            parts.append("")
    parts.append("### Stream records")
    parts.append("")
    for title, declaration in (
        ("Descriptor body (group 0 header)", DESCRIPTOR_BODY),
        ("Group header body (groups 1..)", GROUP_BODY),
    ):
        parts.append(f"#### {title}")
        parts.append("")
        parts.extend(table(declaration))
        parts.append("")
    parts.append("### Authenticated sessions")
    parts.append("")
    parts.append("#### Sealed downlink trailer (section 15): byte 0 is the first byte after the frame")
    parts.append("")
    parts.extend(table(SEALED_TRAILER))
    parts.append("")
    parts.append(END)
    return "\n".join(parts)


def config_table() -> str:
    """The timers and limits of ProtocolConfig: name, default and the docstring under each
    field, read from the source so the spec cannot disagree with the code."""
    source = (ROOT.parent / "lpimg" / "protocol" / "config.py").read_text()
    module = ast.parse(source)
    (cls,) = [n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "ProtocolConfig"]
    defaults = ProtocolConfig()
    rows = ["| name | side | default | meaning |", "|---|---|---|---|"]
    side = "device"
    body = cls.body
    for position, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            if name == "max_sessions":
                side = "server"
            where = "both" if name in BOTH_SIDES else side
            following = body[position + 1] if position + 1 < len(body) else None
            doc = ""
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                doc = " ".join(str(following.value.value).split())
            value = getattr(defaults, name)
            rows.append(f"| `{name}` | {where} | {value!r} | {doc} |")
    return "\n".join(rows)


# -- files -----------------------------------------------------------------------------------


def outputs() -> dict[Path, str]:
    """Every generated file and its full text."""
    def dump(value: Any) -> str:
        return json.dumps(value, indent=1, sort_keys=False) + "\n"

    files = {
        VECTORS / "uplink.json": dump(uplink_vectors()),
        VECTORS / "downlink.json": dump(downlink_vectors()),
        VECTORS / "records.json": dump(record_vectors()),
        VECTORS / "auth.json": dump(auth_vectors()),
    }
    for session in transcripts():
        files[VECTORS / f"{session['name']}.json"] = dump(session)
    spec = SPEC.read_text()
    for begin, end, text in (
        (BEGIN, END, tables()),
        (CONFIG_BEGIN, CONFIG_END, f"{CONFIG_BEGIN}\n\n{config_table()}\n\n{CONFIG_END}"),
    ):
        if begin in spec and end in spec:
            head, rest = spec.split(begin, 1)
            _, tail = rest.split(end, 1)
            spec = head + text + tail
    files[SPEC] = spec
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift")
    args = parser.parse_args()
    drift = []
    for path, text in outputs().items():
        if not path.exists() or path.read_text() != text:
            drift.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    for path in drift:
        print(f"{'differs' if args.check else 'wrote'}: {path.relative_to(ROOT.parent)}")
    return 1 if (args.check and drift) else 0


if __name__ == "__main__":
    raise SystemExit(main())
