"""Link profiles: what a region and data rate allow (payload size, airtime, duty cycle, windows).

The numbers come from the LoRaWAN Regional Parameters (RP002-1.0.x) without repeater support:

- EU868 uplink DR0..DR5 = SF12..SF7 at 125 kHz; max application payload 51, 51, 51, 115, 242,
  242 bytes. RX1 uses the uplink data rate (RX1DROffset 0); RX2 is DR0 on 869.525 MHz.
  Devices obey a 1 % duty cycle per sub-band; the gateway obeys 1 % in the uplink's sub-band
  (RX1) and 10 % on 869.525 MHz (RX2).
- US915 uplink DR0..DR3 = SF10..SF7 at 125 kHz, DR4 = SF8 at 500 kHz; max payload 11, 53, 125,
  242, 242 bytes. Downlinks use 500 kHz data rates: RX1 is DR10..DR13 (DR0->10, 1->11, 2->12,
  3->13, 4->13), RX2 is DR8 (SF12/500 kHz) on 923.3 MHz. There is no duty cycle but a 400 ms
  dwell time per uplink, which is exactly why DR0 stops at 11 bytes: 12 would take 411.6 ms.
- NB-IoT-like: a ~1200-byte MTU, seconds of latency, no duty cycle, downlink at any time.

A spec string such as ``lorawan-eu868:dr0``, ``lorawan-us915:dr4`` or ``nbiot`` names a profile
(:func:`parse_link_spec`), so the CLI, benchmarks and tests all say the same thing the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lpimg.errors import LinkError
from lpimg.link.sim.airtime import LoRaModulation, lorawan_time_on_air

Window = Literal["rx1", "rx2"]


@dataclass(frozen=True)
class DataRate:
    """One LoRaWAN data rate of a region: its modulation and its largest FRMPayload."""

    index: int
    modulation: LoRaModulation
    max_payload: int

    @property
    def name(self) -> str:
        """``DR<n>`` as the Regional Parameters spell it."""
        return f"DR{self.index}"


def _dr(index: int, sf: int, bandwidth_hz: int, max_payload: int) -> DataRate:
    return DataRate(index, LoRaModulation(sf, bandwidth_hz), max_payload)


EU868_DATA_RATES: dict[int, DataRate] = {
    0: _dr(0, 12, 125_000, 51),
    1: _dr(1, 11, 125_000, 51),
    2: _dr(2, 10, 125_000, 51),
    3: _dr(3, 9, 125_000, 115),
    4: _dr(4, 8, 125_000, 242),
    5: _dr(5, 7, 125_000, 242),
}
"""EU868 uplink (and RX1/RX2) data rates. DR6 (SF7/250 kHz) and DR7 (FSK) are left out: few
networks offer them and the brief scopes DR0..DR5."""

US915_DATA_RATES: dict[int, DataRate] = {
    0: _dr(0, 10, 125_000, 11),
    1: _dr(1, 9, 125_000, 53),
    2: _dr(2, 8, 125_000, 125),
    3: _dr(3, 7, 125_000, 242),
    4: _dr(4, 8, 500_000, 242),
    8: _dr(8, 12, 500_000, 53),
    9: _dr(9, 11, 500_000, 129),
    10: _dr(10, 10, 500_000, 242),
    11: _dr(11, 9, 500_000, 242),
    12: _dr(12, 8, 500_000, 242),
    13: _dr(13, 7, 500_000, 242),
}
"""US915 uplink DR0..DR4 and downlink DR8..DR13."""

US915_RX1_DATA_RATE = {0: 10, 1: 11, 2: 12, 3: 13, 4: 13}
"""RX1 downlink data rate for each uplink data rate at RX1DROffset 0."""

EU868_UPLINK_DRS = range(0, 6)
US915_UPLINK_DRS = range(0, 5)


@dataclass(frozen=True)
class LoRaWANProfile:
    """A LoRaWAN class A device at a fixed uplink data rate in one region.

    ``sub_bands`` is how many duty-cycle sub-bands the device rotates over. The default 1 is the
    brief's conservative model (EU868's three default channels all sit in the 868.0-868.6 MHz
    sub-band); a TTN-style 8-channel plan spans two, which doubles the uplink rate.
    """

    region: Literal["EU868", "US915"]
    uplink: DataRate
    rx1: DataRate
    rx2: DataRate
    duty_cycle: float | None
    dwell_time_s: float | None
    rx1_gateway_duty_cycle: float | None
    rx2_gateway_duty_cycle: float | None
    rx1_delay_s: float = 1.0
    rx2_delay_s: float = 2.0
    sub_bands: int = 1

    def __post_init__(self) -> None:
        if self.duty_cycle is not None and not 0.0 < self.duty_cycle <= 1.0:
            raise LinkError(f"duty cycle must be in (0, 1], got {self.duty_cycle}")
        if self.sub_bands < 1:
            raise LinkError(f"sub_bands must be >= 1, got {self.sub_bands}")
        if not 0.0 < self.rx1_delay_s < self.rx2_delay_s:
            raise LinkError("RX1 must open after the uplink and before RX2")

    @property
    def name(self) -> str:
        """The spec string that parses back to this profile."""
        return f"lorawan-{self.region.lower()}:dr{self.uplink.index}"

    @property
    def mtu(self) -> int:
        """Largest application payload of one uplink."""
        return self.uplink.max_payload

    def uplink_airtime(self, application_bytes: int) -> float:
        """Seconds on air of an uplink carrying ``application_bytes`` (CRC on)."""
        return lorawan_time_on_air(self.uplink.modulation, application_bytes, uplink=True)

    def window(self, window: Window) -> DataRate:
        """The data rate a downlink uses in RX1 or RX2."""
        return self.rx1 if window == "rx1" else self.rx2

    def downlink_airtime(self, application_bytes: int, window: Window) -> float:
        """Seconds on air of a downlink in ``window`` (no PHY payload CRC on downlinks)."""
        return lorawan_time_on_air(self.window(window).modulation, application_bytes, uplink=False)

    def window_delay_s(self, window: Window) -> float:
        """When the window opens, counted from the end of the uplink."""
        return self.rx1_delay_s if window == "rx1" else self.rx2_delay_s

    def gateway_duty_cycle(self, window: Window) -> float | None:
        """The duty cycle a gateway must respect when it answers in ``window``."""
        return self.rx1_gateway_duty_cycle if window == "rx1" else self.rx2_gateway_duty_cycle


@dataclass(frozen=True)
class NbIotProfile:
    """An NB-IoT-like cellular link: big MTU, slow (seconds) but always reachable both ways.

    The bit rates are orders of magnitude of Cat-NB1 (tens of kbit/s), not measurements; they
    only decide how long the modem is busy sending, the latency dominates. Deliveries in one
    direction stay in order (one bearer), so reordering happens only if impairments ask for it.
    """

    mtu: int = 1200
    latency_s: tuple[float, float] = (1.0, 3.0)
    uplink_bps: float = 20_000.0
    downlink_bps: float = 20_000.0

    def __post_init__(self) -> None:
        low, high = self.latency_s
        if not 0.0 <= low <= high:
            raise LinkError(f"latency range must satisfy 0 <= low <= high, got {self.latency_s}")
        if self.mtu < 1 or self.uplink_bps <= 0 or self.downlink_bps <= 0:
            raise LinkError("NB-IoT MTU and bit rates must be positive")

    @property
    def name(self) -> str:
        """The spec string of this profile."""
        return "nbiot"

    def uplink_airtime(self, application_bytes: int) -> float:
        """Seconds the modem is busy sending ``application_bytes``."""
        return 8 * application_bytes / self.uplink_bps

    def downlink_airtime(self, application_bytes: int) -> float:
        """Seconds the network is busy sending ``application_bytes`` to the device."""
        return 8 * application_bytes / self.downlink_bps


LinkProfile = LoRaWANProfile | NbIotProfile


def eu868(dr: int, *, sub_bands: int = 1) -> LoRaWANProfile:
    """EU868 at uplink data rate ``dr`` (0..5)."""
    if dr not in EU868_UPLINK_DRS:
        raise LinkError(f"EU868 uplink data rates are DR0-DR5, got DR{dr}")
    rate = EU868_DATA_RATES[dr]
    return LoRaWANProfile(
        region="EU868",
        uplink=rate,
        rx1=rate,
        rx2=EU868_DATA_RATES[0],
        duty_cycle=0.01,
        dwell_time_s=None,
        rx1_gateway_duty_cycle=0.01,
        rx2_gateway_duty_cycle=0.10,
        sub_bands=sub_bands,
    )


def us915(dr: int) -> LoRaWANProfile:
    """US915 at uplink data rate ``dr`` (0..4)."""
    if dr not in US915_UPLINK_DRS:
        raise LinkError(f"US915 uplink data rates are DR0-DR4, got DR{dr}")
    return LoRaWANProfile(
        region="US915",
        uplink=US915_DATA_RATES[dr],
        rx1=US915_DATA_RATES[US915_RX1_DATA_RATE[dr]],
        rx2=US915_DATA_RATES[8],
        duty_cycle=None,
        dwell_time_s=0.4,
        rx1_gateway_duty_cycle=None,
        rx2_gateway_duty_cycle=None,
    )


_EXAMPLES = "'lorawan-eu868:dr0', 'lorawan-us915:dr4' or 'nbiot'"
_REGIONS = {"eu868": (eu868, EU868_UPLINK_DRS), "us915": (us915, US915_UPLINK_DRS)}


def parse_link_spec(spec: str) -> LinkProfile:
    """Turn ``lorawan-<region>:dr<n>`` or ``nbiot`` into a profile; LinkError says what is wrong."""
    if not isinstance(spec, str):
        raise LinkError(f"link spec must be a string such as {_EXAMPLES}, got {spec!r}")
    text = spec.strip().lower()
    if not text:
        raise LinkError(f"empty link spec; expected {_EXAMPLES}")
    kind, _, argument = text.partition(":")
    if kind == "nbiot":
        if argument:
            raise LinkError(f"'nbiot' takes no parameters, got {spec!r}")
        return NbIotProfile()
    if not kind.startswith("lorawan-"):
        raise LinkError(f"unknown link kind in {spec!r}; expected {_EXAMPLES}")
    region = kind.removeprefix("lorawan-")
    if region not in _REGIONS:
        raise LinkError(f"unknown LoRaWAN region {region!r} in {spec!r}; known: eu868, us915")
    factory, drs = _REGIONS[region]
    if not argument:
        raise LinkError(f"missing data rate in {spec!r}; expected e.g. 'lorawan-{region}:dr0'")
    digits = argument.removeprefix("dr")
    if argument == digits or not (digits.isascii() and digits.isdigit()):
        raise LinkError(f"bad data rate {argument!r} in {spec!r}; expected 'dr<n>'")
    dr = int(digits)
    if dr not in drs:
        raise LinkError(
            f"{region.upper()} uplink data rates are DR{drs[0]}-DR{drs[-1]}, got {argument!r}"
        )
    return factory(dr)


def all_profiles() -> list[LinkProfile]:
    """Every profile a spec string can name, in a stable order (for tables and sweeps)."""
    profiles: list[LinkProfile] = [eu868(dr) for dr in EU868_UPLINK_DRS]
    profiles += [us915(dr) for dr in US915_UPLINK_DRS]
    profiles.append(NbIotProfile())
    return profiles
