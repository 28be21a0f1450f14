"""Time on air against known figures, and the formula's structure.

The reference figures are the Semtech formula (SX1272/76 datasheet, AN1200.13) worked by hand,
the same numbers Semtech's LoRa calculator and The Things Network's airtime calculator print.
The US915 checks are independent of any calculator: the Regional Parameters cap each data rate's
payload so a full uplink fits the 400 ms dwell time, so the formula must put the largest payload
under 400 ms and one byte more over it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lpimg import LinkError
from lpimg.link.sim import (
    LORAWAN_OVERHEAD_BYTES,
    LoRaModulation,
    eu868,
    lorawan_time_on_air,
    us915,
)

SF12 = LoRaModulation(spreading_factor=12, bandwidth_hz=125_000)
SF7 = LoRaModulation(spreading_factor=7, bandwidth_hz=125_000)


def test_issue_figure_51_bytes_at_sf12_is_73_symbols_and_2_79_s() -> None:
    phy_payload = 51 + LORAWAN_OVERHEAD_BYTES
    assert phy_payload == 64
    assert SF12.ldro, "SF12/125 kHz has 32.8 ms symbols, LDRO must switch on"
    assert SF12.payload_symbols(phy_payload) == 73
    airtime = SF12.time_on_air(phy_payload)
    assert round(airtime, 2) == 2.79
    # (8 + 4.25 + 73) symbols of 4096 / 125 kHz = 32.768 ms
    assert airtime == pytest.approx(85.25 * 0.032768, abs=1e-12)
    assert lorawan_time_on_air(SF12, 51) == airtime


def test_sf7_13_byte_phy_payload_uplink_and_downlink() -> None:
    # 13 bytes = an empty LoRaWAN frame. Uplinks carry a payload CRC: 33 symbols, 46.3 ms;
    # downlinks do not: 28 symbols, 41.2 ms (the figure often quoted for SF7).
    assert SF7.payload_symbols(13) == 33
    assert SF7.time_on_air(13) == pytest.approx(0.046336, abs=1e-9)
    assert SF7.with_crc(False).payload_symbols(13) == 28
    assert SF7.with_crc(False).time_on_air(13) == pytest.approx(0.041216, abs=1e-9)
    assert lorawan_time_on_air(SF7, 0, uplink=False) == pytest.approx(0.041216, abs=1e-9)


@pytest.mark.parametrize(
    ("dr", "milliseconds"),
    [(0, 2793.5), (1, 1560.6), (2, 698.4), (3, 676.9), (4, 707.1), (5, 399.6)],
)
def test_eu868_full_frame_airtime(dr: int, milliseconds: float) -> None:
    profile = eu868(dr)
    assert profile.uplink_airtime(profile.mtu) * 1000 == pytest.approx(milliseconds, abs=0.05)


@pytest.mark.parametrize("dr", [0, 1, 2, 3])
def test_us915_max_payload_is_the_largest_under_the_dwell_time(dr: int) -> None:
    profile = us915(dr)
    assert profile.uplink_airtime(profile.mtu) <= 0.4
    if profile.mtu < 242:  # 242 is LoRaWAN's own ceiling (255-byte PHY payload), not dwell time
        assert profile.uplink_airtime(profile.mtu + 1) > 0.4


def test_us915_dr0_11_bytes_is_370_7_ms() -> None:
    assert us915(0).uplink_airtime(11) * 1000 == pytest.approx(370.688, abs=1e-6)


def test_low_data_rate_optimisation_follows_the_16_ms_symbol_rule() -> None:
    assert LoRaModulation(11, 125_000).ldro  # 16.384 ms
    assert not LoRaModulation(10, 125_000).ldro  # 8.192 ms
    assert not LoRaModulation(12, 500_000).ldro  # 8.192 ms
    forced = LoRaModulation(7, 125_000, low_data_rate_optimize=True)
    assert forced.ldro and forced.payload_symbols(64) > SF7.payload_symbols(64)


def test_implicit_header_saves_symbols() -> None:
    # 14 bytes at SF9: ceil(120 / 36) = 4 blocks with the 20-bit header, ceil(100 / 36) = 3 without
    implicit = LoRaModulation(9, 125_000, explicit_header=False)
    assert LoRaModulation(9, 125_000).payload_symbols(14) == 8 + 4 * 5
    assert implicit.payload_symbols(14) == 8 + 3 * 5


def test_coding_rate_scales_the_payload_blocks() -> None:
    cr45 = LoRaModulation(9, 125_000, coding_rate=1).payload_symbols(40)
    cr48 = LoRaModulation(9, 125_000, coding_rate=4).payload_symbols(40)
    assert (cr45 - 8) / 5 == (cr48 - 8) / 8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spreading_factor": 13, "bandwidth_hz": 125_000},
        {"spreading_factor": 7, "bandwidth_hz": 0},
        {"spreading_factor": 7, "bandwidth_hz": 125_000, "coding_rate": 5},
        {"spreading_factor": 7, "bandwidth_hz": 125_000, "preamble_symbols": -1},
    ],
)
def test_bad_modulation_is_a_link_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(LinkError):
        LoRaModulation(**kwargs)


def test_negative_payload_is_a_link_error() -> None:
    with pytest.raises(LinkError):
        SF7.time_on_air(-1)
    with pytest.raises(LinkError):
        lorawan_time_on_air(SF7, -1)


@given(
    sf=st.integers(7, 12),
    bandwidth=st.sampled_from([125_000, 250_000, 500_000]),
    coding_rate=st.integers(1, 4),
    crc=st.booleans(),
    size=st.integers(0, 254),
)
def test_airtime_grows_with_payload_in_whole_blocks(
    sf: int, bandwidth: int, coding_rate: int, crc: bool, size: int
) -> None:
    modulation = LoRaModulation(sf, bandwidth, coding_rate=coding_rate, crc=crc)
    here, after = modulation.payload_symbols(size), modulation.payload_symbols(size + 1)
    assert after >= here
    assert (here - 8) % (coding_rate + 4) == 0
    assert after - here in (0, coding_rate + 4)
    assert modulation.time_on_air(size + 1) >= modulation.time_on_air(size)
