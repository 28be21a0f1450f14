"""The simulated LPWAN link: airtime, regional limits, loss, and a virtual-clock driver.

Use it to run the sans-I/O protocol cores over hours of LoRaWAN airtime in milliseconds::

    from lpimg.link.sim import IndependentLoss, SimLink, run_transfer

    link = SimLink.from_spec("lorawan-eu868:dr0", uplink_loss=IndependentLoss(0.1), seed=7)
    stats = run_transfer(device_session, server_protocol, link, until=7 * 86_400)
"""

from lpimg.link.sim.airtime import (
    LDRO_SYMBOL_TIME_S,
    LORAWAN_OVERHEAD_BYTES,
    LoRaModulation,
    lorawan_time_on_air,
)
from lpimg.link.sim.budget import TTN_FAIR_USE, DutyCycle, FairUseBudget, FairUsePolicy
from lpimg.link.sim.driver import (
    DeviceEndpoint,
    FrameRecord,
    RecordedEvent,
    ServerEndpoint,
    SimLink,
    TransferStats,
    run_transfer,
)
from lpimg.link.sim.loss import (
    CombinedLoss,
    Delivery,
    DropList,
    GilbertElliott,
    Impairments,
    IndependentLoss,
    LossModel,
    LossProcess,
    NoLoss,
)
from lpimg.link.sim.profiles import (
    EU868_DATA_RATES,
    US915_DATA_RATES,
    DataRate,
    LinkProfile,
    LoRaWANProfile,
    NbIotProfile,
    all_profiles,
    eu868,
    parse_link_spec,
    us915,
)

__all__ = [
    "EU868_DATA_RATES",
    "LDRO_SYMBOL_TIME_S",
    "LORAWAN_OVERHEAD_BYTES",
    "TTN_FAIR_USE",
    "US915_DATA_RATES",
    "CombinedLoss",
    "DataRate",
    "Delivery",
    "DeviceEndpoint",
    "DropList",
    "DutyCycle",
    "FairUseBudget",
    "FairUsePolicy",
    "FrameRecord",
    "GilbertElliott",
    "Impairments",
    "IndependentLoss",
    "LinkProfile",
    "LoRaModulation",
    "LoRaWANProfile",
    "LossModel",
    "LossProcess",
    "NbIotProfile",
    "NoLoss",
    "RecordedEvent",
    "ServerEndpoint",
    "SimLink",
    "TransferStats",
    "all_profiles",
    "eu868",
    "lorawan_time_on_air",
    "parse_link_spec",
    "run_transfer",
    "us915",
]
