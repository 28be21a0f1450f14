"""Fuzz every frame and record parser of lpimg.wire."""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from lpimg.errors import LpimgError
    from lpimg.wire import (
        check_layer_record,
        parse_descriptor,
        parse_downlink,
        parse_group_header,
        parse_uplink,
    )

import contextlib

from _harness import run, vector_seeds


def test_one_input(data: bytes) -> None:
    for parse in (parse_uplink, parse_downlink, parse_descriptor, parse_group_header):
        with contextlib.suppress(LpimgError):
            parse(data)
    with contextlib.suppress(LpimgError):
        check_layer_record(data)


if __name__ == "__main__":
    run(test_one_input, vector_seeds())
