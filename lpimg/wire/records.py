"""Records of the session stream: what the fragments carry once put back together.

A session moves one byte stream, made of *groups*. Group 0 is the session's opening: a
descriptor record (model, geometry, layer plan, manifest) followed by one record per layer.
Every later group answers one refine request: a group header record (region, first pass, the
sizes of the new layers, possibly none) followed by those layers. A group always starts on a
fresh fragment, so the fragment index of a group's first byte never depends on later groups.

Header records (descriptor, group header)::

    varint L | body (L bytes) | CRC-32 over varint and body (4 bytes, big-endian)

Layer records::

    layer bytes (size from the plan) | CRC-32 over the layer bytes (4 bytes, big-endian)

Headers are length-prefixed so the receiver can check them before it knows anything else; a
layer needs no length because its group header announced it. Every record ends with a CRC, so
nothing a receiver acts on is unchecked, whatever the link does to single frames.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from construct import Array, GreedyBytes, Int8ub, Int16ub, Struct, Terminated, this

from lpimg.errors import WireError
from lpimg.wire.codes import MAX_LAYER_COUNT
from lpimg.wire.crc import CRC_SIZE, crc32_bytes
from lpimg.wire.fields import VarUInt, encode_varuint, varuint_length
from lpimg.wire.manifest import Manifest, decode_manifest, encode_manifest
from lpimg.wire.region import Region, region_from_wire, region_to_wire

DESCRIPTOR_BODY = Struct(
    "model_id" / Int16ub * "codec model the layers were produced with (a 16-bit weights digest)",
    "width" / Int16ub * "image width in pixels (0: not an image)",
    "height" / Int16ub * "image height in pixels",
    "layer_count" / VarUInt() * "layers in group 0",
    "layer_sizes" / Array(this.layer_count, VarUInt()) * "bytes of each layer, CRC excluded",
    "manifest" / GreedyBytes * "CBOR manifest map, or nothing",
)

GROUP_BODY = Struct(
    "x" / Int8ub * "region the new layers refine, latent units (all four 0: whole image)",
    "y" / Int8ub * "",
    "width" / Int8ub * "",
    "height" / Int8ub * "",
    "first_pass" / Int8ub * "codec pass index of the group's first layer",
    "layer_count" / VarUInt() * "layers in the group (0: the refine request is declined)",
    "layer_sizes" / Array(this.layer_count, VarUInt()) * "bytes of each layer, CRC excluded",
    Terminated,
)

RecordCheck = Callable[[bytes], bytes]
"""The 4-byte check that closes a record, from the bytes it covers. The default is the CRC-32;
an authenticated session passes a truncated AES-CMAC bound to the session and the record's
place in the stream (:mod:`lpimg.protocol.auth`). Layouts do not change: both are 4 bytes."""

_DESCRIPTOR = DESCRIPTOR_BODY.compile()
_GROUP = GROUP_BODY.compile()


@dataclass(frozen=True)
class Descriptor:
    """The session descriptor: what the server must know before the first layer."""

    model_id: int
    width: int
    height: int
    layer_sizes: tuple[int, ...]
    manifest: Manifest = field(default_factory=Manifest)

    def __post_init__(self) -> None:
        if not 0 <= self.model_id <= 0xFFFF:
            raise WireError(f"model id {self.model_id} does not fit 16 bits")
        if not (0 <= self.width <= 0xFFFF and 0 <= self.height <= 0xFFFF):
            raise WireError(f"geometry {self.width}x{self.height} does not fit 16 bits")
        _check_sizes(self.layer_sizes)


@dataclass(frozen=True)
class GroupHeader:
    """The announcement of layers appended in answer to a refine request."""

    region: Region | None
    first_pass: int
    layer_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.first_pass <= 255:
            raise WireError(f"first pass {self.first_pass} does not fit a byte")
        _check_sizes(self.layer_sizes)


def _check_sizes(sizes: Sequence[int]) -> None:
    if len(sizes) > MAX_LAYER_COUNT:
        raise WireError(f"{len(sizes)} layers in one group; at most {MAX_LAYER_COUNT}")
    for size in sizes:
        if not 0 <= size <= VarUInt.MAX:
            raise WireError(f"layer size {size} is outside 0..{VarUInt.MAX}")


def _frame_header(body: bytes, check: RecordCheck | None) -> bytes:
    prefix = encode_varuint(len(body))
    return prefix + body + (check or crc32_bytes)(prefix + body)


def _verify(covered: bytes, value: bytes, check: RecordCheck | None) -> bool:
    """Constant-time comparison, so a forger learns nothing from how long a reject takes."""
    return hmac.compare_digest((check or crc32_bytes)(covered), bytes(value))


def build_descriptor(descriptor: Descriptor, check: RecordCheck | None = None) -> bytes:
    """The whole descriptor record (length, body, CRC)."""
    fields: dict[str, Any] = {
        "model_id": descriptor.model_id,
        "width": descriptor.width,
        "height": descriptor.height,
        "layer_count": len(descriptor.layer_sizes),
        "layer_sizes": list(descriptor.layer_sizes),
        "manifest": encode_manifest(descriptor.manifest),
    }
    return _frame_header(_build(_DESCRIPTOR, fields, "descriptor"), check)


def build_group_header(header: GroupHeader, check: RecordCheck | None = None) -> bytes:
    """The whole group header record (length, body, CRC)."""
    x, y, width, height = region_to_wire(header.region)
    fields: dict[str, Any] = {
        "x": x,
        "y": y,
        "width": width,
        "height": height,
        "first_pass": header.first_pass,
        "layer_count": len(header.layer_sizes),
        "layer_sizes": list(header.layer_sizes),
    }
    return _frame_header(_build(_GROUP, fields, "group header"), check)


def _build(declaration: Any, fields: dict[str, Any], name: str) -> bytes:
    try:
        return bytes(declaration.build(fields))
    except Exception as error:
        raise WireError(f"cannot build {name}: {error}") from error


def header_record_length(head: bytes) -> int | None:
    """Total length of the header record starting with ``head``, or None if ``head`` is too
    short to tell. Raises :class:`WireError` for the refused 8-byte varint form."""
    if not head:
        return None
    prefix = varuint_length(head[0])
    if prefix == 0:
        raise WireError("header record length uses the refused 8-byte varint form")
    if len(head) < prefix:
        return None
    try:
        body = VarUInt().parse(head[:prefix])
    except Exception as error:
        raise WireError(f"bad header record length: {error}") from error
    return prefix + int(body) + CRC_SIZE


def _check_header_record(record: bytes, name: str, check: RecordCheck | None) -> bytes:
    """Verify the CRC of a whole header record and return its body."""
    if len(record) < 1 + CRC_SIZE:
        raise WireError(f"{name} record is too short")
    prefix = varuint_length(record[0])
    total = header_record_length(record)
    if total is None or total != len(record) or prefix == 0:
        raise WireError(f"{name} record length does not match its prefix")
    if not _verify(record[:-CRC_SIZE], record[-CRC_SIZE:], check):
        raise WireError(f"{name} record fails its {'CRC-32' if check is None else 'check'}")
    return record[prefix:-CRC_SIZE]


def parse_descriptor(record: bytes, check: RecordCheck | None = None) -> Descriptor:
    """Verify and decode a whole descriptor record (WireError or ManifestError on failure)."""
    body = _check_header_record(record, "descriptor", check)
    try:
        parsed = _DESCRIPTOR.parse(body)
    except Exception as error:
        raise WireError(f"malformed descriptor: {error}") from error
    manifest = decode_manifest(parsed.manifest)  # raises ManifestError, a WireError
    return Descriptor(
        parsed.model_id, parsed.width, parsed.height, tuple(parsed.layer_sizes), manifest
    )


def parse_group_header(record: bytes, check: RecordCheck | None = None) -> GroupHeader:
    """Verify and decode a whole group header record."""
    body = _check_header_record(record, "group header", check)
    try:
        parsed = _GROUP.parse(body)
        region = region_from_wire(parsed.x, parsed.y, parsed.width, parsed.height)
    except WireError:
        raise
    except Exception as error:
        raise WireError(f"malformed group header: {error}") from error
    return GroupHeader(region, parsed.first_pass, tuple(parsed.layer_sizes))


def build_layer_record(layer: bytes, check: RecordCheck | None = None) -> bytes:
    """A layer followed by its CRC-32 (or the session's record check)."""
    return bytes(layer) + (check or crc32_bytes)(bytes(layer))


def layer_record_size(layer_size: int) -> int:
    """Bytes a layer of ``layer_size`` occupies in the stream."""
    return layer_size + CRC_SIZE


def check_layer_record(record: bytes, check: RecordCheck | None = None) -> bytes:
    """The layer bytes of a whole layer record whose CRC verifies; WireError otherwise."""
    if len(record) < CRC_SIZE:
        raise WireError("layer record is shorter than its CRC")
    layer = record[:-CRC_SIZE]
    if not _verify(layer, record[-CRC_SIZE:], check):
        raise WireError(f"layer fails its {'CRC-32' if check is None else 'check'}")
    return bytes(layer)
