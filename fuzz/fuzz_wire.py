"""Fuzz every frame and record parser of lpimg.wire, plain and authenticated (spec 15)."""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from lpimg.errors import LpimgError
    from lpimg.protocol.auth import open_downlink, record_check
    from lpimg.wire import (
        check_layer_record,
        parse_descriptor,
        parse_downlink,
        parse_group_header,
        parse_uplink,
        split_sealed,
    )

import contextlib

from _harness import run, vector_seeds


def test_one_input(data: bytes) -> None:
    for parse in (parse_uplink, parse_downlink, parse_descriptor, parse_group_header):
        with contextlib.suppress(LpimgError):
            parse(data)
    with contextlib.suppress(LpimgError):
        check_layer_record(data)
    # authenticated sessions: a sealed downlink, and records carrying AES-CMAC tags
    with contextlib.suppress(LpimgError):
        frame, _, _ = split_sealed(data)
        parse_downlink(frame)
    with contextlib.suppress(LpimgError):
        open_downlink(KEY, data, 0, 5)
    for parse in (check_layer_record, parse_descriptor, parse_group_header):
        with contextlib.suppress(LpimgError):
            parse(data, record_check(KEY, 5, 0))


KEY = bytes(range(16))


if __name__ == "__main__":
    run(test_one_input, vector_seeds())
