"""Loss models and adversarial impairments for the simulated link.

A model is a frozen description (``IndependentLoss(0.1)``); :meth:`start` turns it into a
process with its own state and a seeded :class:`random.Random`, so one :class:`SimLink` run twice
with the same seed loses exactly the same frames, and the uplink and downlink draw from
independent streams. A process answers ``lost()`` once per frame, in transmission order.

- :class:`IndependentLoss`: each frame lost with probability p (a clean radio at the cell edge).
- :class:`GilbertElliott`: a two-state Markov chain, good and bad, each with its own loss rate;
  losses come in bursts (a passing truck, rain fade, a collision streak), which is what a bitmap
  ACK protocol must survive.
- :class:`DropList`: lose exactly the listed frame indices, for tests that need one scenario.
- :class:`CombinedLoss`: lost if any member says so (a drop list on top of random loss).
- :class:`Impairments`: what an adversarial network does to frames that do arrive:
  duplicates, extra delay (reordering), truncation, bit flips.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from lpimg.errors import LinkError


class LossProcess(Protocol):
    """A running loss model: one ``lost()`` call per frame, in order."""

    def lost(self) -> bool: ...


class LossModel(Protocol):
    """A loss description that can start independent, seeded processes."""

    def start(self, rng: random.Random) -> LossProcess: ...


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise LinkError(f"{name} must be a probability in [0, 1], got {value}")


class _Never:
    def lost(self) -> bool:
        return False


@dataclass(frozen=True)
class NoLoss:
    """A perfect channel."""

    def start(self, rng: random.Random) -> LossProcess:
        """A process that never loses a frame."""
        return _Never()


class _Bernoulli:
    def __init__(self, p: float, rng: random.Random) -> None:
        self._p = p
        self._rng = rng

    def lost(self) -> bool:
        return self._rng.random() < self._p


@dataclass(frozen=True)
class IndependentLoss:
    """Every frame lost independently with probability ``p``."""

    p: float

    def __post_init__(self) -> None:
        _check_probability("loss rate", self.p)

    def start(self, rng: random.Random) -> LossProcess:
        """A memoryless Bernoulli process."""
        return _Bernoulli(self.p, rng)


class _GilbertElliottProcess:
    def __init__(self, model: GilbertElliott, rng: random.Random) -> None:
        self._model = model
        self._rng = rng
        self.bad = model.start_bad

    def lost(self) -> bool:
        model = self._model
        rate = model.loss_bad if self.bad else model.loss_good
        lost = self._rng.random() < rate
        # Transition after the frame, so the chain state is the one the frame saw.
        flip = model.p_bg if self.bad else model.p_gb
        if self._rng.random() < flip:
            self.bad = not self.bad
        return lost


@dataclass(frozen=True)
class GilbertElliott:
    """Two-state bursty loss: good -> bad with ``p_gb``, bad -> good with ``p_bg`` per frame.

    Frames are lost with ``loss_good`` in the good state and ``loss_bad`` in the bad state. With
    the defaults (0 and 1) this is the classic Gilbert model: a burst is a visit to the bad state,
    its mean length is 1 / p_bg frames and the long-run loss rate is p_gb / (p_gb + p_bg).
    """

    p_gb: float
    p_bg: float
    loss_good: float = 0.0
    loss_bad: float = 1.0
    start_bad: bool = False

    def __post_init__(self) -> None:
        for name in ("p_gb", "p_bg", "loss_good", "loss_bad"):
            _check_probability(name, getattr(self, name))
        if self.p_gb + self.p_bg == 0.0:
            raise LinkError("p_gb and p_bg cannot both be 0: the chain would never move")

    @classmethod
    def from_mean(
        cls,
        mean_loss: float,
        burst_length: float,
        *,
        loss_good: float = 0.0,
        loss_bad: float = 1.0,
    ) -> GilbertElliott:
        """The chain whose long-run loss is ``mean_loss`` and whose bad spells last
        ``burst_length`` frames on average (with the default loss rates: bursts of losses)."""
        if burst_length < 1.0:
            raise LinkError(f"mean burst length must be >= 1 frame, got {burst_length}")
        if not loss_good <= mean_loss <= loss_bad or loss_good == loss_bad:
            raise LinkError(
                f"mean loss {mean_loss} must lie between loss_good {loss_good} and "
                f"loss_bad {loss_bad} (which must differ)"
            )
        p_bg = 1.0 / burst_length
        bad_share = (mean_loss - loss_good) / (loss_bad - loss_good)
        if bad_share >= 1.0:
            raise LinkError("mean loss equal to loss_bad needs a chain that never leaves bad")
        p_gb = p_bg * bad_share / (1.0 - bad_share)
        if p_gb > 1.0:
            raise LinkError(
                f"mean loss {mean_loss} with bursts of {burst_length} frames needs "
                f"p_gb = {p_gb:.3f} > 1; use longer bursts"
            )
        return cls(p_gb=p_gb, p_bg=p_bg, loss_good=loss_good, loss_bad=loss_bad)

    @property
    def bad_share(self) -> float:
        """Long-run fraction of frames sent in the bad state."""
        return self.p_gb / (self.p_gb + self.p_bg)

    @property
    def mean_loss(self) -> float:
        """Long-run loss rate."""
        share = self.bad_share
        return share * self.loss_bad + (1.0 - share) * self.loss_good

    @property
    def mean_burst_length(self) -> float:
        """Mean number of consecutive frames spent in the bad state."""
        return 1.0 / self.p_bg if self.p_bg else float("inf")

    def start(self, rng: random.Random) -> LossProcess:
        """A running chain in its start state."""
        return _GilbertElliottProcess(self, rng)


class _Indexed:
    def __init__(self, drops: frozenset[int]) -> None:
        self._drops = drops
        self._index = 0

    def lost(self) -> bool:
        index = self._index
        self._index += 1
        return index in self._drops


@dataclass(frozen=True, init=False)
class DropList:
    """Lose exactly the frames whose 0-based index (per direction) is listed."""

    indices: frozenset[int]

    def __init__(self, indices: Iterable[int] = ()) -> None:
        drops = frozenset(int(i) for i in indices)
        if any(i < 0 for i in drops):
            raise LinkError(f"frame indices must be >= 0, got {sorted(drops)}")
        object.__setattr__(self, "indices", drops)

    def start(self, rng: random.Random) -> LossProcess:
        """A process that counts frames and drops the listed ones."""
        return _Indexed(self.indices)


class _Any:
    def __init__(self, processes: list[LossProcess]) -> None:
        self._processes = processes

    def lost(self) -> bool:
        # Every member sees every frame, so each keeps its own count and state.
        verdicts = [process.lost() for process in self._processes]
        return any(verdicts)


@dataclass(frozen=True)
class CombinedLoss:
    """A frame is lost if any member model loses it."""

    models: tuple[LossModel, ...]

    def start(self, rng: random.Random) -> LossProcess:
        """Member processes with their own streams derived from ``rng``."""
        return _Any([m.start(random.Random(rng.getrandbits(64))) for m in self.models])


@dataclass(frozen=True)
class Delivery:
    """One copy of a frame that reaches the far end: after ``delay_s`` extra, as ``data``."""

    delay_s: float
    data: bytes
    tags: tuple[str, ...] = ()


class ImpairmentProcess:
    """A running :class:`Impairments` with its own random stream."""

    def __init__(self, spec: Impairments, rng: random.Random) -> None:
        self._spec = spec
        self._rng = rng

    def apply(self, data: bytes) -> list[Delivery]:
        """What arrives of one frame that was not lost: one copy, or two when duplicated."""
        spec, rng = self._spec, self._rng
        copies = [self._impair(data, ())]
        if rng.random() < spec.duplicate:
            # A duplicate (heard by a second gateway, replayed by a backhaul) arrives late.
            delayed = self._impair(data, ("duplicate",))
            delay = rng.uniform(0.0, spec.reorder_delay_s)
            copies.append(Delivery(delayed.delay_s + delay, delayed.data, delayed.tags))
        return copies

    def _impair(self, data: bytes, tags: tuple[str, ...]) -> Delivery:
        spec, rng = self._spec, self._rng
        delay = 0.0
        if rng.random() < spec.reorder:
            delay = rng.uniform(0.0, spec.reorder_delay_s)
            tags += ("delayed",)
        if data and rng.random() < spec.truncate:
            data = data[: rng.randrange(len(data))]
            tags += ("truncated",)
        if data and rng.random() < spec.bitflip:
            bit = rng.randrange(8 * len(data))
            mutable = bytearray(data)
            mutable[bit // 8] ^= 1 << (bit % 8)
            data = bytes(mutable)
            tags += ("bitflip",)
        return Delivery(delay, data, tags)


@dataclass(frozen=True)
class Impairments:
    """Adversarial damage to frames that do arrive, each with its own probability per frame.

    ``reorder`` delays a frame by up to ``reorder_delay_s`` so later frames can overtake it;
    ``truncate`` cuts it to a random shorter length; ``bitflip`` flips one random bit (a
    corruption the LoRaWAN MIC would normally catch, so only a test wants it); ``duplicate``
    delivers a second copy, itself delayed by up to ``reorder_delay_s``.
    """

    duplicate: float = 0.0
    reorder: float = 0.0
    truncate: float = 0.0
    bitflip: float = 0.0
    reorder_delay_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("duplicate", "reorder", "truncate", "bitflip"):
            _check_probability(name, getattr(self, name))
        if self.reorder_delay_s < 0:
            raise LinkError(f"reorder delay must be >= 0, got {self.reorder_delay_s}")

    def start(self, rng: random.Random) -> ImpairmentProcess:
        """A running impairment process on its own random stream."""
        return ImpairmentProcess(self, rng)
