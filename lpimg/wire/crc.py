"""The CRC-32 that closes every layer and header record of the session stream.

It is the common IEEE 802.3 CRC-32 (reflected polynomial 0xEDB88320, initial value and final
XOR 0xFFFFFFFF; check value 0xCBF43926 for "123456789"), computed with the ``crcmod`` API of
the maintained ``crcmod-plus`` wheel, and sent big-endian.
"""

from __future__ import annotations

import crcmod.predefined

CRC_SIZE = 4

_crc32 = crcmod.predefined.mkCrcFun("crc-32")


def crc32(data: bytes) -> int:
    """The CRC-32 of ``data`` as an unsigned 32-bit integer."""
    return int(_crc32(data))


def crc32_bytes(data: bytes) -> bytes:
    """The CRC-32 of ``data`` as the four big-endian bytes that follow it on the wire."""
    return crc32(data).to_bytes(CRC_SIZE, "big")
