"""Link profiles: the regional tables and the spec strings that name them."""

from __future__ import annotations

import pytest

from lpimg import LinkError, LpimgError
from lpimg.link.sim import (
    LoRaWANProfile,
    NbIotProfile,
    all_profiles,
    eu868,
    parse_link_spec,
    us915,
)

EU868_TABLE = {0: (12, 51), 1: (11, 51), 2: (10, 51), 3: (9, 115), 4: (8, 242), 5: (7, 242)}
US915_TABLE = {
    0: (10, 125_000, 11),
    1: (9, 125_000, 53),
    2: (8, 125_000, 125),
    3: (7, 125_000, 242),
    4: (8, 500_000, 242),
}


@pytest.mark.parametrize(("dr", "expected"), EU868_TABLE.items())
def test_eu868_data_rates(dr: int, expected: tuple[int, int]) -> None:
    profile = parse_link_spec(f"lorawan-eu868:dr{dr}")
    assert isinstance(profile, LoRaWANProfile)
    sf, mtu = expected
    assert profile.uplink.modulation.spreading_factor == sf
    assert profile.uplink.modulation.bandwidth_hz == 125_000
    assert profile.mtu == mtu
    assert profile.duty_cycle == 0.01
    assert profile.dwell_time_s is None
    assert profile.rx1 == profile.uplink  # RX1DROffset 0
    assert profile.rx2.index == 0 and profile.rx2.modulation.spreading_factor == 12
    assert (profile.rx1_gateway_duty_cycle, profile.rx2_gateway_duty_cycle) == (0.01, 0.10)
    assert profile.name == f"lorawan-eu868:dr{dr}"


@pytest.mark.parametrize(("dr", "expected"), US915_TABLE.items())
def test_us915_data_rates(dr: int, expected: tuple[int, int, int]) -> None:
    profile = parse_link_spec(f"lorawan-us915:dr{dr}")
    assert isinstance(profile, LoRaWANProfile)
    sf, bandwidth, mtu = expected
    assert profile.uplink.modulation.spreading_factor == sf
    assert profile.uplink.modulation.bandwidth_hz == bandwidth
    assert profile.mtu == mtu
    assert profile.duty_cycle is None
    assert profile.dwell_time_s == 0.4
    assert profile.rx1.index == min(10 + dr, 13)
    assert profile.rx1.modulation.bandwidth_hz == 500_000
    assert profile.rx2.index == 8
    assert profile.rx2.modulation.spreading_factor == 12
    assert profile.rx2.max_payload == 53


def test_class_a_window_delays() -> None:
    profile = eu868(0)
    assert profile.window_delay_s("rx1") == 1.0
    assert profile.window_delay_s("rx2") == 2.0


def test_downlinks_have_no_crc_so_they_are_no_longer_than_uplinks() -> None:
    profile = eu868(5)
    assert profile.downlink_airtime(10, "rx1") < profile.uplink_airtime(10)
    # RX2 is SF12 whatever the uplink data rate
    assert profile.downlink_airtime(10, "rx2") == eu868(0).downlink_airtime(10, "rx1")


def test_nbiot_profile() -> None:
    profile = parse_link_spec("nbiot")
    assert isinstance(profile, NbIotProfile)
    assert profile.mtu == 1200
    assert profile.latency_s == (1.0, 3.0)
    assert profile.uplink_airtime(1200) == pytest.approx(0.48)


@pytest.mark.parametrize(
    "spec",
    ["  LoRaWAN-EU868:DR3 ", "lorawan-eu868:dr3", "lorawan-eu868:dr03"],
)
def test_spec_parsing_ignores_case_and_spaces(spec: str) -> None:
    assert parse_link_spec(spec) == eu868(3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty link spec"),
        ("   ", "empty link spec"),
        ("wifi", "unknown link kind"),
        ("lorawan-as923:dr0", "unknown LoRaWAN region 'as923'"),
        ("lorawan-eu868", "missing data rate"),
        ("lorawan-eu868:", "missing data rate"),
        ("lorawan-eu868:sf12", "bad data rate 'sf12'"),
        ("lorawan-eu868:dr", "bad data rate 'dr'"),
        ("lorawan-eu868:dr-1", "bad data rate"),
        ("lorawan-eu868:dr²", "bad data rate"),
        ("lorawan-eu868:dr6", "EU868 uplink data rates are DR0-DR5"),
        ("lorawan-us915:dr5", "US915 uplink data rates are DR0-DR4"),
        ("lorawan-us915:dr8", "US915 uplink data rates are DR0-DR4"),
        ("nbiot:fast", "'nbiot' takes no parameters"),
    ],
)
def test_bad_specs_raise_link_error(spec: str, message: str) -> None:
    with pytest.raises(LinkError, match=message):
        parse_link_spec(spec)


def test_non_string_spec_raises_link_error() -> None:
    with pytest.raises(LpimgError):
        parse_link_spec(42)  # type: ignore[arg-type]


def test_profile_factories_reject_unknown_data_rates() -> None:
    with pytest.raises(LinkError):
        eu868(6)
    with pytest.raises(LinkError):
        us915(-1)
    with pytest.raises(LinkError):
        eu868(0, sub_bands=0)
    with pytest.raises(LinkError):
        NbIotProfile(latency_s=(3.0, 1.0))


def test_every_profile_round_trips_through_its_name() -> None:
    profiles = all_profiles()
    assert len(profiles) == 6 + 5 + 1
    for profile in profiles:
        assert parse_link_spec(profile.name) == profile
