"""Two small construct field types the frames need and construct 2.10 lacks in compilable form.

- :class:`BitFields`: named unsigned bit fields packed most significant bit first into a few
  bytes. construct's ``BitStruct`` does the same but falls back to its slow bit-stream path even
  in a compiled parser (about 8x slower here); the 2-byte data header is on the hot path.
- :class:`VarUInt`: the QUIC variable-length integer (RFC 9000, section 16) restricted to its
  1-, 2- and 4-byte forms and to the shortest encoding, so every value has exactly one byte form
  and a C implementer can reuse a QUIC varint routine.

Both keep their layout as data (``fields``, ``FORMS``), which the spec generator reads to print
the byte tables of spec/PROTOCOL.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from construct import (
    ConstError,
    Construct,
    Container,
    FormatFieldError,
    IntegerError,
    SizeofError,
)
from construct.core import stream_read, stream_write


@dataclass(frozen=True, slots=True)
class Bits:
    """One field of a :class:`BitFields`: a name, a width in bits, and optionally a constant.

    ``flag`` fields parse to ``bool``. A constant field is checked on parse and written on
    build; it still appears in the parsed container so that the layout is self-describing.
    """

    name: str
    width: int
    const: int | None = None
    flag: bool = False
    doc: str = ""


class BitFields(Construct):  # type: ignore[misc]
    """Unsigned bit fields packed MSB first into ``sum(widths) / 8`` big-endian bytes."""

    def __init__(self, *fields: Bits) -> None:
        super().__init__()
        total = sum(field.width for field in fields)
        if total % 8 or not fields:
            raise ValueError(f"bit fields must fill whole bytes, got {total} bits")
        self.fields = fields
        self.length = total // 8
        layout = []
        shift = total
        for field in fields:
            shift -= field.width
            layout.append((field, shift, (1 << field.width) - 1))
        self._layout = tuple(layout)

    def _parse(self, stream: Any, context: Any, path: str) -> Container:
        value = int.from_bytes(stream_read(stream, self.length, path), "big")
        result = Container()
        for field, shift, mask in self._layout:
            item = (value >> shift) & mask
            if field.const is not None and item != field.const:
                raise ConstError(f"{field.name} must be {field.const}, got {item}", path=path)
            result[field.name] = bool(item) if field.flag else item
        return result

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        value = 0
        for field, shift, mask in self._layout:
            item = field.const if field.const is not None else int(obj[field.name])
            if not 0 <= item <= mask:
                raise IntegerError(f"{field.name}={item} does not fit {field.width} bits", path)
            value |= item << shift
        stream_write(stream, value.to_bytes(self.length, "big"), self.length, path)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        return self.length


class VarUInt(Construct):  # type: ignore[misc]
    """QUIC varint, 1/2/4-byte forms only, shortest form required.

    The two most significant bits of the first byte give the length (00: 1 byte, 6-bit value;
    01: 2 bytes, 14 bits; 10: 4 bytes, 30 bits); the rest is the value, big-endian. The 8-byte
    form (11) is refused: no field of this protocol can need it.
    """

    FORMS = ((1, 6), (2, 14), (4, 30))
    MAX = (1 << 30) - 1

    def _parse(self, stream: Any, context: Any, path: str) -> int:
        first = stream_read(stream, 1, path)[0]
        form = first >> 6
        if form == 3:
            raise FormatFieldError("8-byte varints are not used by this protocol", path=path)
        length, _ = self.FORMS[form]
        rest = stream_read(stream, length - 1, path) if length > 1 else b""
        value = int.from_bytes(bytes([first & 0x3F]) + rest, "big")
        if form and value < 1 << self.FORMS[form - 1][1]:
            raise FormatFieldError(f"varint {value} is not in its shortest form", path=path)
        return value

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> int:
        value = int(obj)
        if not 0 <= value <= self.MAX:
            raise IntegerError(f"varint {value} is outside 0..{self.MAX}", path)
        data = encode_varuint(value)
        stream_write(stream, data, len(data), path)
        return value

    def _sizeof(self, context: Any, path: str) -> int:
        raise SizeofError("a varint has no fixed size", path=path)


def encode_varuint(value: int) -> bytes:
    """The shortest QUIC varint form of ``value`` (0 <= value < 2**30)."""
    for form, (length, bits) in enumerate(VarUInt.FORMS):
        if value < 1 << bits:
            return ((form << (8 * length - 2)) | value).to_bytes(length, "big")
    raise ValueError(f"varint {value} is too large")


def varuint_length(first_byte: int) -> int:
    """How many bytes a varint takes, from its first byte (0 for the refused 8-byte form)."""
    form = first_byte >> 6
    return 0 if form == 3 else VarUInt.FORMS[form][0]
