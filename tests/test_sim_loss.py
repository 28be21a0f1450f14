"""Loss models and impairments: statistics for fixed seeds, burstiness, exact drop lists."""

from __future__ import annotations

import random

import pytest

from lpimg import LinkError
from lpimg.link.sim import (
    CombinedLoss,
    DropList,
    GilbertElliott,
    Impairments,
    IndependentLoss,
    LossModel,
    NoLoss,
)

N = 40_000


def draw(model: LossModel, n: int = N, seed: int = 1) -> list[bool]:
    process = model.start(random.Random(seed))
    return [process.lost() for _ in range(n)]


def burst_lengths(losses: list[bool]) -> list[int]:
    runs, current = [], 0
    for lost in losses:
        if lost:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


def conditional_loss(losses: list[bool]) -> float:
    """P(frame lost | previous frame lost): about the mean for independent loss, high for bursts."""
    after_loss = [b for a, b in zip(losses, losses[1:], strict=False) if a]
    return sum(after_loss) / len(after_loss)


def test_no_loss_never_loses() -> None:
    assert not any(draw(NoLoss(), 1000))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_independent_loss_rate(p: float) -> None:
    losses = draw(IndependentLoss(p))
    assert sum(losses) / N == pytest.approx(p, abs=0.01)
    if 0.0 < p < 1.0:
        assert conditional_loss(losses) == pytest.approx(p, abs=0.02)
        assert sum(burst_lengths(losses)) / len(burst_lengths(losses)) == pytest.approx(
            1.0 / (1.0 - p), rel=0.06
        )


def test_same_seed_same_losses_other_seed_other_losses() -> None:
    model = IndependentLoss(0.3)
    assert draw(model, 500, seed=4) == draw(model, 500, seed=4)
    assert draw(model, 500, seed=4) != draw(model, 500, seed=5)


def test_gilbert_elliott_from_mean_and_burst_length() -> None:
    model = GilbertElliott.from_mean(0.2, burst_length=5.0)
    assert model.p_bg == pytest.approx(0.2)
    assert model.p_gb == pytest.approx(0.05)
    assert model.mean_loss == pytest.approx(0.2)
    assert model.mean_burst_length == pytest.approx(5.0)
    losses = draw(model)
    assert sum(losses) / N == pytest.approx(0.2, abs=0.02)
    bursts = burst_lengths(losses)
    assert sum(bursts) / len(bursts) == pytest.approx(5.0, rel=0.1)


def test_gilbert_elliott_is_burstier_than_independent_loss_at_the_same_rate() -> None:
    bursty = draw(GilbertElliott.from_mean(0.1, burst_length=8.0))
    independent = draw(IndependentLoss(0.1))
    assert sum(bursty) / N == pytest.approx(sum(independent) / N, abs=0.02)
    assert conditional_loss(bursty) > 0.8  # 1 - p_bg = 0.875
    assert conditional_loss(independent) < 0.15
    assert max(burst_lengths(bursty)) > 3 * max(burst_lengths(independent))


def test_gilbert_elliott_with_partial_loss_in_each_state() -> None:
    model = GilbertElliott.from_mean(0.15, burst_length=10.0, loss_good=0.05, loss_bad=0.6)
    assert model.mean_loss == pytest.approx(0.15)
    assert sum(draw(model)) / N == pytest.approx(0.15, abs=0.02)


def test_gilbert_elliott_starting_bad_loses_the_first_frame() -> None:
    process = GilbertElliott(p_gb=0.0, p_bg=0.5, start_bad=True).start(random.Random(0))
    assert process.lost()


@pytest.mark.parametrize(
    ("mean", "burst", "kwargs"),
    [
        (0.2, 0.5, {}),  # bursts shorter than a frame
        (0.9, 1.0, {}),  # would need p_gb = 9
        (1.0, 4.0, {}),  # never leaves the bad state
        (0.02, 4.0, {"loss_good": 0.05}),  # below the good state's own loss
        (0.1, 4.0, {"loss_good": 0.3, "loss_bad": 0.3}),
    ],
)
def test_gilbert_elliott_from_mean_rejects_impossible_chains(
    mean: float, burst: float, kwargs: dict[str, float]
) -> None:
    with pytest.raises(LinkError):
        GilbertElliott.from_mean(mean, burst, **kwargs)


def test_gilbert_elliott_rejects_a_frozen_chain_and_bad_probabilities() -> None:
    with pytest.raises(LinkError):
        GilbertElliott(0.0, 0.0)
    with pytest.raises(LinkError):
        GilbertElliott(1.2, 0.1)


@pytest.mark.parametrize("p", [-0.1, 1.1])
def test_independent_loss_rejects_non_probabilities(p: float) -> None:
    with pytest.raises(LinkError):
        IndependentLoss(p)


def test_drop_list_drops_exactly_the_listed_indices() -> None:
    losses = draw(DropList([0, 3, 4, 9]), 12)
    assert [i for i, lost in enumerate(losses) if lost] == [0, 3, 4, 9]
    with pytest.raises(LinkError):
        DropList([-1])


def test_combined_loss_is_the_union_and_keeps_members_in_step() -> None:
    losses = draw(CombinedLoss((DropList([2, 5]), IndependentLoss(0.5))), 2000, seed=3)
    assert losses[2] and losses[5]
    assert sum(losses) / 2000 == pytest.approx(0.5, abs=0.05)


def test_impairment_certainties() -> None:
    rng = random.Random(2)
    frame = bytes(range(40))
    (copy,) = Impairments(truncate=1.0).start(rng).apply(frame)
    assert len(copy.data) < len(frame) and frame.startswith(copy.data)
    assert copy.tags == ("truncated",)

    (copy,) = Impairments(bitflip=1.0).start(rng).apply(frame)
    flipped = int.from_bytes(copy.data, "big") ^ int.from_bytes(frame, "big")
    assert len(copy.data) == len(frame) and flipped.bit_count() == 1

    (copy,) = Impairments(reorder=1.0, reorder_delay_s=3.0).start(rng).apply(frame)
    assert 0.0 <= copy.delay_s <= 3.0 and copy.tags == ("delayed",)

    original, duplicate = Impairments(duplicate=1.0).start(rng).apply(frame)
    assert original.data == duplicate.data == frame
    assert "duplicate" in duplicate.tags and original.delay_s == 0.0


def test_impairment_rates() -> None:
    process = Impairments(duplicate=0.2, truncate=0.1, bitflip=0.3).start(random.Random(9))
    deliveries = [process.apply(b"0123456789") for _ in range(10_000)]
    assert sum(len(d) == 2 for d in deliveries) / 10_000 == pytest.approx(0.2, abs=0.015)
    firsts = [d[0] for d in deliveries]
    assert sum("truncated" in d.tags for d in firsts) / 10_000 == pytest.approx(0.1, abs=0.015)
    assert sum("bitflip" in d.tags for d in firsts) / 10_000 == pytest.approx(0.3, abs=0.015)


def test_impairments_leave_an_empty_frame_alone() -> None:
    (copy,) = Impairments(truncate=1.0, bitflip=1.0).start(random.Random(0)).apply(b"")
    assert copy.data == b"" and copy.tags == ()


@pytest.mark.parametrize(
    "kwargs", [{"duplicate": 2.0}, {"bitflip": -0.5}, {"reorder_delay_s": -1.0}]
)
def test_bad_impairments(kwargs: dict[str, float]) -> None:
    with pytest.raises(LinkError):
        Impairments(**kwargs)
