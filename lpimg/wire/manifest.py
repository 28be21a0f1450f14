"""The CBOR manifest: extensible metadata a session start carries for the application.

A manifest is a CBOR map (RFC 8949) with small integer keys for the fields this protocol
defines, so the common case costs a few bytes on a 51-byte link:

====  ==================  ==========================================================
key   field               CBOR type
====  ==================  ==========================================================
0     capture_time        unsigned or float: seconds since 1970-01-01T00:00:00Z
1     reference_id        unsigned: the reference frame both ends hold
2     reference_hash      byte string (at most 32 bytes): digest of that reference
3     device              map of text keys to text, integer or float: device info
====  ==================  ==========================================================

Keys 4..23 are reserved for this protocol; applications use integer keys >= 24 or text keys,
carried in ``extra``. An empty manifest is zero bytes, not an empty map. Values are plain CBOR:
no tags, so a decoder in C needs no semantic-tag support; an encoder MUST use the deterministic
encoding of RFC 8949 section 4.2.1 (shortest forms, sorted keys) so golden vectors are stable.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from lpimg.errors import ManifestError

CAPTURE_TIME, REFERENCE_ID, REFERENCE_HASH, DEVICE = 0, 1, 2, 3
RESERVED_KEYS = range(4, 24)
MAX_HASH_BYTES = 32
MAX_DEPTH = 8


@dataclass(frozen=True)
class Manifest:
    """Decoded manifest. ``extra`` holds application keys (ints >= 24 or text)."""

    capture_time: int | float | None = None
    reference_id: int | None = None
    reference_hash: bytes | None = None
    device: Mapping[str, str | int | float] | None = None
    extra: Mapping[int | str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.capture_time is not None and (
            isinstance(self.capture_time, bool)
            or not isinstance(self.capture_time, int | float)
            or not math.isfinite(self.capture_time)
            or self.capture_time < 0
        ):
            raise ManifestError(f"capture_time must be seconds >= 0, got {self.capture_time!r}")
        if self.reference_id is not None and (
            isinstance(self.reference_id, bool)
            or not isinstance(self.reference_id, int)
            or self.reference_id < 0
        ):
            raise ManifestError(f"reference_id must be an unsigned int, got {self.reference_id!r}")
        if self.reference_hash is not None and (
            not isinstance(self.reference_hash, bytes)
            or len(self.reference_hash) > MAX_HASH_BYTES
        ):
            raise ManifestError(f"reference_hash must be at most {MAX_HASH_BYTES} bytes")
        if self.device is not None:
            if not isinstance(self.device, Mapping):
                raise ManifestError("device must be a map of text keys")
            for key, value in self.device.items():
                if not isinstance(key, str) or isinstance(value, bool):
                    raise ManifestError(f"device info {key!r}: {value!r} is not text -> scalar")
                if not isinstance(value, str | int | float):
                    raise ManifestError(f"device info {key!r}: {value!r} is not text -> scalar")
        for key, value in self.extra.items():
            if isinstance(key, bool) or not (
                isinstance(key, str) or (isinstance(key, int) and key >= 24)
            ):
                raise ManifestError(f"application keys are text or integers >= 24, got {key!r}")
            _check_plain(value, 1)

    @property
    def empty(self) -> bool:
        """True when nothing would be sent."""
        return (
            self.capture_time is None
            and self.reference_id is None
            and self.reference_hash is None
            and self.device is None
            and not self.extra
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Manifest:
        """Build from ``{"capture_time": ..., "device": {...}, "my_key": ...}``.

        The protocol's own names map to their fields; any other key goes to ``extra``.
        """
        known = {"capture_time", "reference_id", "reference_hash", "device"}
        return cls(
            **{name: values[name] for name in known if name in values},
            extra={key: value for key, value in values.items() if key not in known},
        )

    def to_dict(self) -> dict[str | int, Any]:
        """The inverse of :meth:`from_dict` (fields that are ``None`` left out)."""
        values: dict[str | int, Any] = {}
        for name in ("capture_time", "reference_id", "reference_hash", "device"):
            value = getattr(self, name)
            if value is not None:
                values[name] = dict(value) if name == "device" else value
        values.update(self.extra)
        return values


def _check_plain(value: Any, depth: int) -> None:
    """Only untagged CBOR data model values, nested at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        raise ManifestError(f"manifest nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, bool | int | str | bytes):
        return
    if isinstance(value, float):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_plain(item, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, int | str):
                raise ManifestError(f"manifest map keys are integers or text, got {key!r}")
            _check_plain(item, depth + 1)
        return
    raise ManifestError(f"manifest value {value!r} is not plain CBOR")


def encode_manifest(manifest: Manifest | Mapping[str, Any] | None) -> bytes:
    """Deterministic CBOR bytes of a manifest (empty bytes for no or an empty manifest)."""
    if manifest is None:
        return b""
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_dict(manifest)
    if manifest.empty:
        return b""
    values: dict[int | str, Any] = {}
    if manifest.capture_time is not None:
        values[CAPTURE_TIME] = manifest.capture_time
    if manifest.reference_id is not None:
        values[REFERENCE_ID] = manifest.reference_id
    if manifest.reference_hash is not None:
        values[REFERENCE_HASH] = manifest.reference_hash
    if manifest.device is not None:
        values[DEVICE] = dict(manifest.device)
    values.update(manifest.extra)
    try:
        return bytes(cbor2.dumps(values, canonical=True))
    except Exception as error:
        raise ManifestError(f"manifest cannot be encoded: {error}") from error


def decode_manifest(data: bytes) -> Manifest:
    """Parse manifest bytes; anything but a well-formed plain CBOR map raises ManifestError."""
    if not data:
        return Manifest()
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except Exception as error:  # CBORDecodeError, but also RecursionError, ValueError...
        raise ManifestError(f"manifest is not valid CBOR: {error}") from error
    if stream.tell() != len(data):
        raise ManifestError(f"{len(data) - stream.tell()} bytes after the manifest map")
    if not isinstance(value, dict):
        raise ManifestError(f"manifest must be a CBOR map, got {type(value).__name__}")
    _check_plain(value, 0)
    fields: dict[str, Any] = {}
    extra: dict[int | str, Any] = {}
    names = {CAPTURE_TIME: "capture_time", REFERENCE_ID: "reference_id"}
    names |= {REFERENCE_HASH: "reference_hash", DEVICE: "device"}
    for key, item in value.items():
        if isinstance(key, int) and key in names:
            fields[names[key]] = item
        elif isinstance(key, int) and (key < 0 or key in RESERVED_KEYS):
            raise ManifestError(f"manifest key {key} is reserved")
        else:
            extra[key] = item
    return Manifest(**fields, extra=extra)
