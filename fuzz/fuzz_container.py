"""Fuzz the .lpi container parser."""

from __future__ import annotations

import atheris

# instrument the container only: the codec package imports torch, far too big to instrument
with atheris.instrument_imports(include=["lpimg.codec.container"]):
    from lpimg.codec import container
    from lpimg.codec.bitplane import LayerSpec, Region
    from lpimg.codec.pipeline import StreamHeader
    from lpimg.errors import LpimgError

import contextlib

from _harness import run


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(LpimgError):
        container.loads(data)


if __name__ == "__main__":
    header = StreamHeader(0x1234, 64, 48, 5)
    seeds = [
        container.dumps(header, [(LayerSpec(0), b"\x01\x02"), (LayerSpec(1, Region(0, 0, 2, 2)), b"")]),
        container.dumps(header, []),
    ]
    run(test_one_input, seeds)
