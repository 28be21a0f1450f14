"""LoRa time on air, after the Semtech SX1272/76 datasheet and application note AN1200.13.

Airtime is the currency of an LPWAN: duty-cycle rules, dwell-time limits and fair-use budgets are
all stated in seconds on air, not in bytes. Every figure the simulator reports derives from
:meth:`LoRaModulation.time_on_air`, so it is written once here, in exact integer arithmetic for
the symbol count (a float ``ceil`` can be one symbol off at a block boundary).

    T_sym      = 2**SF / BW
    T_preamble = (n_preamble + 4.25) * T_sym
    n_payload  = 8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))) * (CR + 4), 0)
    T_packet   = T_preamble + n_payload * T_sym

PL is the PHY payload in bytes; for LoRaWAN that is the application payload plus
:data:`LORAWAN_OVERHEAD_BYTES`. IH = 1 for implicit header, DE = 1 with low-data-rate
optimisation, CR = 1..4 for coding rates 4/5..4/8.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lpimg.errors import LinkError

LORAWAN_OVERHEAD_BYTES = 13
"""MHDR (1) + FHDR without FOpts (7) + FPort (1) + MIC (4) wrapped around every application
payload, so a 51-byte payload is a 64-byte PHY payload on air."""

LDRO_SYMBOL_TIME_S = 0.016
"""Semtech mandates low-data-rate optimisation when a symbol lasts 16 ms or more (SF11 and SF12
at 125 kHz); LoRaWAN stacks switch it on automatically for exactly those data rates."""


@dataclass(frozen=True)
class LoRaModulation:
    """The radio settings that fix how long a LoRa packet occupies the channel.

    ``low_data_rate_optimize=None`` means "as a LoRaWAN stack would set it": on when the symbol
    time reaches :data:`LDRO_SYMBOL_TIME_S`.
    """

    spreading_factor: int
    bandwidth_hz: int
    coding_rate: int = 1
    preamble_symbols: int = 8
    explicit_header: bool = True
    crc: bool = True
    low_data_rate_optimize: bool | None = None

    def __post_init__(self) -> None:
        if not 5 <= self.spreading_factor <= 12:
            raise LinkError(f"spreading factor must be 5..12, got {self.spreading_factor}")
        if self.bandwidth_hz <= 0:
            raise LinkError(f"bandwidth must be positive, got {self.bandwidth_hz} Hz")
        if not 1 <= self.coding_rate <= 4:
            raise LinkError(f"coding rate index must be 1..4 (4/5..4/8), got {self.coding_rate}")
        if self.preamble_symbols < 0:
            raise LinkError(f"preamble length must be >= 0, got {self.preamble_symbols}")

    @property
    def symbol_time_s(self) -> float:
        """Duration of one chirp: 2**SF chips at BW chips per second."""
        return (1 << self.spreading_factor) / self.bandwidth_hz

    @property
    def ldro(self) -> bool:
        """Whether low-data-rate optimisation is in effect (explicit, or automatic)."""
        if self.low_data_rate_optimize is not None:
            return self.low_data_rate_optimize
        return self.symbol_time_s >= LDRO_SYMBOL_TIME_S

    @property
    def preamble_time_s(self) -> float:
        """Preamble plus sync word; also how long a receiver must listen to detect a packet."""
        return (self.preamble_symbols + 4.25) * self.symbol_time_s

    def payload_symbols(self, phy_payload_bytes: int) -> int:
        """Symbols after the preamble (header, payload, CRC), the integer heart of the formula."""
        if phy_payload_bytes < 0:
            raise LinkError(f"payload length must be >= 0, got {phy_payload_bytes}")
        sf = self.spreading_factor
        numerator = (
            8 * phy_payload_bytes
            - 4 * sf
            + 28
            + (16 if self.crc else 0)
            - (0 if self.explicit_header else 20)
        )
        denominator = 4 * (sf - (2 if self.ldro else 0))
        blocks = max(-(-numerator // denominator), 0)  # exact integer ceil
        return 8 + blocks * (self.coding_rate + 4)

    def time_on_air(self, phy_payload_bytes: int) -> float:
        """Seconds the packet occupies the channel, preamble included."""
        symbols = self.preamble_symbols + 4.25 + self.payload_symbols(phy_payload_bytes)
        return symbols * self.symbol_time_s

    def with_crc(self, crc: bool) -> LoRaModulation:
        """The same modulation with the payload CRC on or off (LoRaWAN downlinks carry none)."""
        return replace(self, crc=crc)


def lorawan_time_on_air(
    modulation: LoRaModulation, application_bytes: int, *, uplink: bool = True
) -> float:
    """Airtime of a LoRaWAN frame carrying ``application_bytes`` of FRMPayload.

    LoRaWAN uplinks carry a PHY payload CRC and downlinks do not (LoRaWAN 1.0.x, section 4),
    which is why a 13-byte PHY payload at SF7/125 kHz is 46.3 ms up and 41.2 ms down.
    """
    if application_bytes < 0:
        raise LinkError(f"payload length must be >= 0, got {application_bytes}")
    return modulation.with_crc(uplink).time_on_air(application_bytes + LORAWAN_OVERHEAD_BYTES)
