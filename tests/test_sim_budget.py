"""Duty cycle and fair-use bookkeeping on their own (the driver tests check them in a transfer)."""

from __future__ import annotations

import math

import pytest

from lpimg import LinkError
from lpimg.link.sim import TTN_FAIR_USE, DutyCycle, FairUseBudget, FairUsePolicy


def test_duty_cycle_closes_the_band_for_99_times_the_airtime_at_1_percent() -> None:
    duty = DutyCycle(0.01)
    assert duty.ready_at() == -math.inf
    duty.transmit(10.0, 2.0)
    # 2 s on air, then 2 * (1/0.01 - 1) = 198 s of silence
    assert duty.ready_at() == pytest.approx(10.0 + 2.0 + 198.0)


def test_duty_cycle_refuses_an_early_transmission() -> None:
    duty = DutyCycle(0.01)
    duty.transmit(0.0, 1.0)
    with pytest.raises(LinkError, match="duty cycle"):
        duty.transmit(50.0, 1.0)


def test_sub_bands_are_used_in_turn() -> None:
    duty = DutyCycle(0.01, sub_bands=2)
    duty.transmit(0.0, 1.0)
    assert duty.ready_at() == -math.inf  # the second band is still open
    duty.transmit(0.0, 1.0)
    assert duty.ready_at() == pytest.approx(100.0)
    duty.transmit(100.0, 0.5)
    assert duty.ready_at() == pytest.approx(100.0)  # the other band, closed until 100 s
    with pytest.raises(LinkError):
        duty.transmit(99.0, 0.5)


@pytest.mark.parametrize(("fraction", "bands"), [(0.0, 1), (1.5, 1), (0.01, 0)])
def test_bad_duty_cycle_settings(fraction: float, bands: int) -> None:
    with pytest.raises(LinkError):
        DutyCycle(fraction, bands)


def test_ttn_fair_use_defaults() -> None:
    policy = TTN_FAIR_USE
    assert (policy.uplink_airtime_s, policy.downlinks, policy.window_s) == (30.0, 10, 86_400.0)


def test_fair_use_defers_to_the_next_window_when_a_full_frame_no_longer_fits() -> None:
    budget = FairUseBudget(TTN_FAIR_USE, worst_uplink_airtime_s=2.8)
    now = 100.0
    for _ in range(9):  # 9 * 2.8 = 25.2 s, another 2.8 still fits
        assert budget.uplink_ready_at(now) == now
        budget.charge_uplink(now, 2.8)
    assert budget.uplink_ready_at(now) == now
    budget.charge_uplink(now, 2.8)  # 28.0 s used, 2.0 s left < 2.8
    assert budget.uplink_ready_at(now) == 86_400.0
    assert budget.uplink_ready_at(86_400.0) == 86_400.0
    assert budget.uplink_airtime_used(0) == pytest.approx(28.0)
    assert budget.uplink_airtime_used(1) == 0.0


def test_fair_use_counts_downlinks_per_window() -> None:
    budget = FairUseBudget(FairUsePolicy(downlinks=2), worst_uplink_airtime_s=1.0)
    for _ in range(2):
        assert budget.downlink_allowed(5.0)
        budget.charge_downlink(5.0)
    assert not budget.downlink_allowed(86_399.0)
    assert budget.downlink_allowed(86_400.0)
    assert budget.downlinks_used(0) == 2


def test_fair_use_rejects_a_budget_smaller_than_one_frame() -> None:
    with pytest.raises(LinkError, match="whole fair-use budget"):
        FairUseBudget(FairUsePolicy(uplink_airtime_s=2.0), worst_uplink_airtime_s=2.8)
    with pytest.raises(LinkError):
        FairUsePolicy(uplink_airtime_s=0.0)
