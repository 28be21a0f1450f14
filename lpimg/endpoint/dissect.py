"""A dissector for lpimg frames and session streams, field by field (``lpimg inspect``).

It reads the same construct declarations the protocol parses and builds with, so what it shows is
what the wire says, with byte offsets, bit positions and the spec's words for each field. Frames
that do not parse are shown with the parser's reason, never a traceback: the tool is meant for
captures from misbehaving devices.

Direction: uplink and downlink frames share their first bits' codes, so a frame alone is
ambiguous (``0x80 ...`` is a DATA uplink and a REFINE downlink). ``auto`` tries both and says
which parse; give the direction when known.

Session streams: the records the fragments carry (descriptor, group headers, layers, each with
its CRC) are dissected from raw stream bytes, or reassembled from a capture of uplink frames
(START's chunk and the DATA fragments, in index order).
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from construct import Array, Construct, FormatField, GreedyBytes, Renamed, Struct, Terminated

from lpimg.errors import WireError
from lpimg.wire import (
    CRC_SIZE,
    TRAILER_SIZE,
    AbortReason,
    AuthStartFrame,
    DataFrame,
    StartFrame,
    decode_manifest,
    header_record_length,
    parse_descriptor,
    parse_downlink,
    parse_group_header,
    parse_uplink,
    split_sealed,
)
from lpimg.wire.crc import crc32_bytes
from lpimg.wire.downlink import DOWNLINK_SPECS, AckFrame
from lpimg.wire.fields import BitFields, VarUInt, encode_varuint, varuint_length
from lpimg.wire.records import DESCRIPTOR_BODY, GROUP_BODY
from lpimg.wire.registry import FrameSpec
from lpimg.wire.uplink import UPLINK_SPECS

Direction = Literal["up", "down", "auto"]


@dataclass(frozen=True)
class Field:
    """One field: where it is (byte offset, bits within the first byte group), its value."""

    offset: int
    size: int
    name: str
    value: str
    meaning: str = ""
    bits: str = ""
    raw: bytes = b""


@dataclass
class Dissection:
    """A frame or record taken apart; ``error`` is set when it does not parse."""

    kind: str
    direction: str
    data: bytes
    fields: list[Field] = field(default_factory=list)
    summary: str = ""
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    frame: Any = None
    incomplete: bool = False
    """``error`` only says the capture ends early (not that the bytes are wrong)."""


def parse_hex(text: str) -> bytes:
    """Hex with optional spaces, colons, ``0x`` prefixes; WireError for anything else."""
    cleaned = text.strip().lower().replace("0x", "")
    for sep in (" ", ":", "-", "\t", ","):
        cleaned = cleaned.replace(sep, "")
    try:
        return binascii.unhexlify(cleaned)
    except (binascii.Error, ValueError) as exc:
        raise WireError(f"not hex: {text[:40]!r} ({exc})") from exc


def _unwrap(sub: Construct) -> tuple[str | None, str, Construct]:
    name, docs = None, ""
    while isinstance(sub, Renamed):
        name = name or sub.name
        docs = docs or (sub.docs or "")
        sub = sub.subcon
    return name, docs, sub


def _fmt(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        shown = bytes(value[:24]).hex()
        return f"{len(value)} bytes {shown}{'...' if len(value) > 24 else ''}"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def walk(declaration: Struct, container: Any, data: bytes, base: int = 0) -> list[Field]:
    """Fields of a parsed ``declaration`` with their offsets in ``data`` (from ``base``)."""
    fields: list[Field] = []
    offset = base
    for sub in declaration.subcons:
        name, docs, inner = _unwrap(sub)
        if inner is Terminated or isinstance(inner, type(Terminated)):
            continue
        value = container[name] if name is not None else None
        if isinstance(inner, BitFields):
            raw = data[offset : offset + inner.length]
            position = 0
            for bit in inner.fields:
                item = value[bit.name]
                bits = str(position) if bit.width == 1 else f"{position}-{position + bit.width - 1}"
                shown = f"{int(item):0{bit.width}b}" if bit.const is not None else str(item)
                fields.append(Field(offset, inner.length, bit.name, shown, bit.doc, bits, raw))
                position += bit.width
            offset += inner.length
            continue
        if isinstance(inner, FormatField):
            size = inner.length
        elif isinstance(inner, VarUInt):
            size = len(encode_varuint(int(value)))
        elif isinstance(inner, Array):
            size = sum(len(encode_varuint(int(v))) for v in value)
        elif inner is GreedyBytes or isinstance(inner, type(GreedyBytes)):
            size = len(value)
        else:  # pragma: no cover - a new construct type needs a line here
            size = 0
        fields.append(Field(offset, size, name or "?", _fmt(value), docs, "", data[offset : offset + size]))
        offset += size
    return fields


def _spec_for(frame: Any, specs: Iterable[FrameSpec[Any]]) -> FrameSpec[Any]:
    for spec in specs:  # the exact type first: an authenticated start is also a start
        if type(frame) is spec.frame_type:
            return spec
    for spec in specs:
        if isinstance(frame, spec.frame_type):
            return spec
    raise WireError(f"no declaration for {frame!r}")  # pragma: no cover


def _summary(frame: Any) -> tuple[str, list[str]]:
    notes: list[str] = []
    if isinstance(frame, AckFrame):
        held = frame.received()
        notes.append(f"fragments 0..{frame.next - 1} held" if frame.next else "no fragment held in order")
        if held:
            notes.append(f"also held: {', '.join(map(str, held))}")
        return f"ACK next={frame.next} bitmap={frame.bitmap.hex() or '-'}", notes
    if isinstance(frame, StartFrame):
        notes.append(f"fragment 0 carries stream bytes 0..{len(frame.chunk) - 1}")
        kind = "START_AUTH" if isinstance(frame, AuthStartFrame) else "START"
        return (f"{kind} session={frame.session_id:#06x} F={frame.fragment_size} "
                f"chunk={len(frame.chunk)} ack={int(frame.ack)} v{frame.version}"), notes
    if isinstance(frame, DataFrame):
        return f"DATA index={frame.index} {len(frame.payload)} bytes ack={int(frame.ack)}", notes
    reason = getattr(frame, "reason", None)
    if isinstance(reason, AbortReason):
        return f"ABORT {reason.name} ({reason.text})", notes
    name = type(frame).__name__.removesuffix("Frame").upper()
    values = {k: getattr(frame, k) for k in getattr(frame, "__slots__", ())}
    shown = " ".join(f"{k}={v}" for k, v in values.items())
    return f"{name} {shown}".strip(), notes


def dissect_frame(data: bytes, direction: Direction = "auto") -> Dissection:
    """Take one frame apart. With ``auto``, the uplink reading wins when both parse (and the
    other is mentioned in ``notes``)."""
    attempts: list[tuple[str, Any, str | None]] = []
    for side in ("up", "down") if direction == "auto" else (direction,):
        try:
            frame = parse_uplink(data) if side == "up" else parse_downlink(data)
            attempts.append((side, frame, None))
        except WireError as exc:
            attempts.append((side, None, str(exc)))
    good = [a for a in attempts if a[1] is not None]
    if not good and direction in ("auto", "down"):
        sealed = _dissect_sealed(data)
        if sealed is not None:
            return sealed
    if not good:
        reasons = "; ".join(f"as {side}link: {error}" for side, _, error in attempts)
        return Dissection("?", direction, data, error=reasons)
    side, frame, _ = good[0]
    specs = UPLINK_SPECS if side == "up" else DOWNLINK_SPECS
    spec = _spec_for(frame, specs)
    container = spec.declaration.parse(data)
    summary, notes = _summary(frame)
    for other_side, other, _ in good[1:]:
        notes.append(f"also parses as a {other_side}link {_summary(other)[0]}")
    return Dissection(spec.name, side, data, walk(spec.declaration, container, data), summary,
                      None, notes, frame)


def _dissect_sealed(data: bytes) -> Dissection | None:
    """A downlink of an authenticated session (spec section 15): a frame, a counter and a MIC.
    The MIC cannot be checked without the device's key; only the layout is read."""
    try:
        inner, counter, mic = split_sealed(data)
        frame = parse_downlink(inner)
    except WireError:
        return None
    spec = _spec_for(frame, DOWNLINK_SPECS)
    container = spec.declaration.parse(inner)
    summary, notes = _summary(frame)
    notes.append(f"sealed (section 15): counter={counter} MIC={mic.hex()} in the last "
                 f"{TRAILER_SIZE} bytes; the MIC is not checked without the device's key")
    return Dissection(spec.name, "down", data, walk(spec.declaration, container, inner),
                      f"{summary} counter={counter}", None, notes, frame)


def reassemble(frames: Iterable[bytes]) -> tuple[bytes, list[str]]:
    """The session stream prefix a capture of uplink frames holds (START chunk + DATA in index
    order, up to the first missing fragment), and notes on what was missing or repeated."""
    fragments: dict[int, bytes] = {}
    notes: list[str] = []
    session: int | None = None
    for data in frames:
        try:
            frame = parse_uplink(data)
        except WireError:
            continue
        if isinstance(frame, StartFrame):
            if session is not None and frame.session_id != session:
                notes.append(f"a new session {frame.session_id:#06x} starts; earlier fragments dropped")
                fragments.clear()
            session = frame.session_id
            fragments[0] = frame.chunk
        elif isinstance(frame, DataFrame):
            if frame.index in fragments and fragments[frame.index] != frame.payload:
                notes.append(f"fragment {frame.index} seen twice with different bytes")
            fragments[frame.index] = frame.payload
    stream = bytearray()
    index = 0
    while index in fragments:
        stream += fragments[index]
        index += 1
    missing = sorted(i for i in fragments if i > index)
    if missing:
        notes.append(f"fragment {index} missing; fragments {missing[0]}..{missing[-1]} not used")
    return bytes(stream), notes


def dissect_stream(stream: bytes) -> list[Dissection]:
    """The records of a session stream (or of its first bytes), each with its CRC checked."""
    out: list[Dissection] = []
    position = 0
    group = 0
    while position < len(stream):
        try:
            length = header_record_length(stream[position:])
        except WireError as exc:
            out.append(Dissection("record", "-", stream[position:], error=str(exc)))
            return out
        if length is None or position + length > len(stream):
            need = "?" if length is None else str(length)
            out.append(Dissection("record", "-", stream[position:], incomplete=True,
                                  error=f"the capture ends inside a header record ({need} bytes)"))
            return out
        record = stream[position : position + length]
        kind = "DESCRIPTOR" if group == 0 else f"GROUP {group}"
        dissection = Dissection(kind, "-", record)
        prefix = varuint_length(record[0])
        body = record[prefix:-CRC_SIZE]
        crc_ok = crc32_bytes(record[:-CRC_SIZE]) == record[-CRC_SIZE:]
        dissection.fields.append(Field(position, prefix, "length", str(len(body)), "body bytes",
                                       raw=record[:prefix]))
        try:
            if group == 0:
                header: Any = parse_descriptor(record)
                container = DESCRIPTOR_BODY.parse(body)
                dissection.fields += walk(DESCRIPTOR_BODY, container, stream, position + prefix)
                manifest = decode_manifest(bytes(container.manifest))
                dissection.summary = (f"model {header.model_id:#06x}, {header.width}x{header.height}, "
                                      f"{len(header.layer_sizes)} layers")
                if not manifest.empty:
                    dissection.notes.append(f"manifest {manifest.to_dict()}")
            else:
                header = parse_group_header(record)
                container = GROUP_BODY.parse(body)
                dissection.fields += walk(GROUP_BODY, container, stream, position + prefix)
                dissection.summary = (f"{len(header.layer_sizes)} layers from pass {header.first_pass} "
                                      f"over {header.region or 'the whole image'}")
        except WireError as exc:
            dissection.error = str(exc)
            out.append(dissection)
            return out
        dissection.fields.append(Field(position + length - CRC_SIZE, CRC_SIZE, "crc32",
                                       record[-CRC_SIZE:].hex() + (" ok" if crc_ok else " BAD"),
                                       "CRC-32 over length and body", raw=record[-CRC_SIZE:]))
        out.append(dissection)
        position += length
        for number, size in enumerate(header.layer_sizes):
            end = position + size + CRC_SIZE
            layer = stream[position:end]
            if len(layer) < size + CRC_SIZE:
                out.append(Dissection(f"LAYER {number}", "-", layer, incomplete=True,
                                      error=f"the capture ends inside the layer ({len(layer)} of "
                                            f"{size + CRC_SIZE} bytes)"))
                return out
            ok = crc32_bytes(layer[:size]) == layer[size:]
            pass_index = number if group == 0 else header.first_pass + number
            out.append(Dissection(
                f"LAYER {number}", "-", layer,
                [Field(position, size, "layer", _fmt(layer[:size]), f"codec pass {pass_index}",
                       raw=layer[:size]),
                 Field(position + size, CRC_SIZE, "crc32", layer[size:].hex() + (" ok" if ok else " BAD"),
                       "CRC-32 over the layer", raw=layer[size:])],
                f"pass {pass_index}, {size} bytes, CRC {'ok' if ok else 'BAD'}"))
            position = end
        group += 1
    return out


def format_dissection(d: Dissection) -> str:
    """Lines of text for one dissection, like a packet analyser's detail pane."""
    head = f"{d.kind} ({d.direction}link)" if d.direction in ("up", "down") else d.kind
    lines = [f"{head}: {len(d.data)} bytes {d.data[:32].hex()}{'...' if len(d.data) > 32 else ''}"]
    if d.error:
        lines.append(f"  {'incomplete' if d.incomplete else 'malformed'}: {d.error}")
        return "\n".join(lines)
    if d.summary:
        lines.append(f"  = {d.summary}")
    for item in d.fields:
        where = f"[{item.offset:>3}{'.' + item.bits if item.bits else ''}]"
        meaning = f"  ({item.meaning})" if item.meaning else ""
        lines.append(f"  {where:<10} {item.name:<14} {item.value}{meaning}")
    lines += [f"  note: {note}" for note in d.notes]
    return "\n".join(lines)
