"""Provisioned device keys (spec section 15), read from files.

Key files are the endpoints' business: the protocol core (:mod:`lpimg.protocol.auth`) takes a
plain mapping of device id -> 16-byte key and never touches a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from lpimg.protocol.auth import AuthError, check_key


class KeyStore(Mapping[str, bytes]):
    """Device id -> 128-bit key: which devices must authenticate, and with what.

    A device in the store may only open authenticated sessions (a plain START from it is
    refused, so a forger cannot downgrade it); devices not in it run plain sessions. Load one
    from a JSON object ``{"device id": "32 hex digits", ...}`` with :meth:`load`.
    """

    def __init__(self, keys: Mapping[str, bytes | str] | None = None) -> None:
        self._keys: dict[str, bytes] = {}
        for device, key in (keys or {}).items():
            self[device] = key

    def __setitem__(self, device: str, key: bytes | str) -> None:
        self._keys[str(device)] = check_key(parse_key(key) if isinstance(key, str) else key)

    def __getitem__(self, device: str) -> bytes:
        return self._keys[device]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # never print keys
        return f"KeyStore({len(self._keys)} devices)"

    @classmethod
    def load(cls, path: str | Path) -> KeyStore:
        """Read a JSON key file (device id -> hex key)."""
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise AuthError(f"cannot read key file {path}: {error}") from error
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise AuthError(f"key file {path}: expected a JSON object of device id -> hex key")
        return cls(doc)


def parse_key(text: str) -> bytes:
    """A key written as 32 hex digits."""
    try:
        return check_key(bytes.fromhex(text.strip()))
    except ValueError as error:
        raise AuthError(f"a key is 32 hex digits: {error}") from error


def load_device_key(path: str | Path, device: str | None = None) -> bytes:
    """A device's own key from a file: 32 hex digits, or a key store file (then ``device``
    picks the entry)."""
    try:
        text = Path(path).read_text().strip()
    except OSError as error:
        raise AuthError(f"cannot read key file {path}: {error}") from error
    if text.startswith("{"):
        store = KeyStore.load(path)
        if device is None or device not in store:
            raise AuthError(f"key file {path} has no key for device {device!r}")
        return store[device]
    return parse_key(text)
