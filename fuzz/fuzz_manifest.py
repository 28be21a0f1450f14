"""Fuzz the CBOR manifest decoder (and re-encode what it accepts)."""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from lpimg.errors import LpimgError
    from lpimg.wire import decode_manifest, encode_manifest

from _harness import run


def test_one_input(data: bytes) -> None:
    try:
        manifest = decode_manifest(data)
    except LpimgError:
        return
    # what was accepted re-encodes canonically (bytes, not ==: NaN is a legal CBOR value)
    canonical = encode_manifest(manifest)
    assert encode_manifest(decode_manifest(canonical)) == canonical


if __name__ == "__main__":
    seeds = [bytes.fromhex("a2001a6553f1000103"), b"\xa1\x03\xa1\x61m\x61x", b""]
    run(test_one_input, seeds)
