"""The ``.lpi`` file: a stream header and layers, for the CLI and for archives.

    "LPI" version(u8=1) model_id(u16) width(u16) height(u16) top_plane(u8) layer_count(u16) hcrc(u32)
    layer_count x { pass(u8) flags(u8) [x y w h (u16 each) if flags&1] length(varint) crc(u32) data }

Big-endian. Every layer carries its own CRC-32 (as on the wire) so a damaged file names the first
bad layer instead of decoding into a garbage picture; the header CRC catches damaged geometry.
"""

from __future__ import annotations

from pathlib import Path

import construct as cs
import crcmod.predefined

from lpimg.codec.bitplane import LayerSpec, Region
from lpimg.codec.pipeline import StreamHeader
from lpimg.errors import ContainerError

_crc32 = crcmod.predefined.mkCrcFun("crc-32")
VERSION = 1

HeaderStruct = cs.Struct(
    "magic" / cs.Const(b"LPI"),
    "version" / cs.Int8ub,
    "model_id" / cs.Int16ub,
    "width" / cs.Int16ub,
    "height" / cs.Int16ub,
    "top_plane" / cs.Int8ub,
    "layer_count" / cs.Int16ub,
)
LayerStruct = cs.Struct(
    "pass_index" / cs.Int8ub,
    "flags" / cs.Int8ub,
    "region" / cs.If(cs.this.flags & 1, cs.Struct(
        "x" / cs.Int16ub, "y" / cs.Int16ub, "w" / cs.Int16ub, "h" / cs.Int16ub)),
    "length" / cs.VarInt,
    "crc" / cs.Int32ub,
    "data" / cs.Bytes(cs.this.length),
)


def dumps(header: StreamHeader, layers: list[tuple[LayerSpec, bytes]]) -> bytes:
    if header.condition is not None:
        # version 1 has no field for the reference hash: writing it would produce a file that
        # decodes, as an intra stream, into a wrong picture
        raise ContainerError("the .lpi format holds intra streams only, not reference-coded ones")
    head = HeaderStruct.build(dict(
        version=VERSION, model_id=header.model_id, width=header.width, height=header.height,
        top_plane=header.top_plane, layer_count=len(layers)))
    out = [head, _crc32(head).to_bytes(4, "big")]
    for spec, data in layers:
        r = spec.region
        out.append(LayerStruct.build(dict(
            pass_index=spec.index, flags=1 if r else 0,
            region=dict(x=r.x, y=r.y, w=r.w, h=r.h) if r else None,
            length=len(data), crc=_crc32(data), data=data)))
    return b"".join(out)


def loads(blob: bytes) -> tuple[StreamHeader, list[tuple[LayerSpec, bytes]]]:
    """Parse a whole file; any damage raises :class:`ContainerError` naming what is wrong."""
    size = HeaderStruct.sizeof()
    if len(blob) < size + 4:
        raise ContainerError(f"file is {len(blob)} bytes: too short for an .lpi header")
    if not blob.startswith(b"LPI"):
        raise ContainerError("not an .lpi file (bad magic)")
    try:
        h = HeaderStruct.parse(blob[:size])
    except cs.ConstructError as exc:
        raise ContainerError(f"bad .lpi header: {exc}") from exc
    if h.version != VERSION:
        raise ContainerError(f".lpi version {h.version} is not supported (this is {VERSION})")
    if int.from_bytes(blob[size:size + 4], "big") != _crc32(blob[:size]):
        raise ContainerError(".lpi header is corrupted (CRC mismatch)")
    if h.top_plane > 6:
        raise ContainerError(f".lpi header names top plane {h.top_plane}; at most 6 exist")
    header = StreamHeader(h.model_id, h.width, h.height, h.top_plane)
    layers: list[tuple[LayerSpec, bytes]] = []
    pos = size + 4
    for i in range(h.layer_count):
        try:
            rec = LayerStruct.parse(blob[pos:])
        except (cs.ConstructError, ValueError, OverflowError) as exc:
            raise ContainerError(f"layer {i} of {h.layer_count} is truncated or malformed") from exc
        if _crc32(rec.data) != rec.crc:
            raise ContainerError(f"layer {i} is corrupted (CRC mismatch)")
        region = Region(rec.region.x, rec.region.y, rec.region.w, rec.region.h) if rec.region else None
        layers.append((LayerSpec(rec.pass_index, region), bytes(rec.data)))
        pos += len(LayerStruct.build(rec))
    if pos != len(blob):
        raise ContainerError(f"{len(blob) - pos} unexpected bytes after the last layer")
    return header, layers


def read(path: str | Path) -> tuple[StreamHeader, list[tuple[LayerSpec, bytes]]]:
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise ContainerError(f"{path}: {exc.strerror or exc}") from exc
    return loads(blob)


def write(path: str | Path, header: StreamHeader, layers: list[tuple[LayerSpec, bytes]]) -> None:
    Path(path).write_bytes(dumps(header, layers))
