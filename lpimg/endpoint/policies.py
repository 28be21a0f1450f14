"""Server policies: when is a picture good enough, and where should it get sharper?

A policy is a callable the :class:`~lpimg.endpoint.Server` calls with every
:class:`~lpimg.endpoint.ImageUpdate` of an active session, *before* it answers the uplink that
brought the update, so a decision reaches the device in the same receive window. It returns
nothing, an :class:`Action`, or several. Policies are plain objects, so an application can
write its own (a detector choosing a region, a quality model deciding to stop)::

    server = Server(link, policies=[ByteBudget(4000), RefineRegion(choose_face)])

Built-ins: :class:`ByteBudget` (stop after N layer bytes), :class:`TargetQuality` (stop once a
quality estimate reaches a target; the estimate is a callback, by default the fraction of codec
passes received), :class:`RefineRegion` (ask for more passes over a region a callback chooses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lpimg.wire import Region

if TYPE_CHECKING:
    from lpimg.endpoint.server import ImageUpdate


@dataclass(frozen=True)
class Stop:
    """End the session: the server has enough. ``why`` is recorded in the session's reason."""

    why: str = "stopped by the server"


@dataclass(frozen=True)
class Refine:
    """Ask for codec passes up to and including ``pass_index`` over ``region`` (latent units of
    16x16 pixels; None: the whole image)."""

    region: Region | None
    pass_index: int
    priority: int = 0


Action = Stop | Refine


class Policy(Protocol):
    """Anything that maps an update to what the server should do about it."""

    def __call__(self, update: ImageUpdate) -> Action | Sequence[Action] | None: ...


def pass_fraction(update: ImageUpdate) -> float:
    """A quality estimate from the layer count alone: the share of the codec's passes over the
    whole image received so far (0..1). Crude, but free: no decoding needed."""
    total = update.total_passes
    return min(1.0, update.layers / total) if total else 0.0


@dataclass
class ByteBudget:
    """Stop a session once its layers reach ``max_bytes`` (layer bytes, protocol overhead
    excluded): a gateway's per-picture allowance."""

    max_bytes: int

    def __call__(self, update: ImageUpdate) -> Action | None:
        if update.bytes >= self.max_bytes:
            return Stop(f"byte budget of {self.max_bytes} reached ({update.bytes} bytes)")
        return None


@dataclass
class TargetQuality:
    """Stop once ``estimate(update)`` reaches ``target``.

    ``estimate`` may be anything from :func:`pass_fraction` (the default) to a no-reference
    quality model run on ``update.reconstruction``; it is called for every update.
    """

    target: float
    estimate: Callable[[ImageUpdate], float] = pass_fraction

    def __call__(self, update: ImageUpdate) -> Action | None:
        value = self.estimate(update)
        if value >= self.target:
            return Stop(f"quality estimate {value:.3g} reached the target {self.target:g}")
        return None


RegionChoice = Refine | tuple[Region | None, int] | None


@dataclass
class RefineRegion:
    """Ask for a region chosen by ``choose(update)`` (a detector, the area that changed most).

    ``choose`` returns a :class:`Refine`, a ``(region, pass_index)`` pair, or None. Each distinct
    request is made once per session, at most ``max_requests`` times per session.
    """

    choose: Callable[[ImageUpdate], RegionChoice]
    max_requests: int = 4

    def __post_init__(self) -> None:
        self._made: dict[tuple[str, int], set[Refine]] = {}

    def __call__(self, update: ImageUpdate) -> Action | None:
        key = (update.device, update.session_id)
        if key not in self._made and len(self._made) >= 4096:  # bounded on a long-running gateway
            self._made.pop(next(iter(self._made)))
        made = self._made.setdefault(key, set())
        if len(made) >= self.max_requests:
            return None
        choice = self.choose(update)
        if choice is None:
            return None
        request = choice if isinstance(choice, Refine) else Refine(choice[0], choice[1])
        if request in made:
            return None
        made.add(request)
        return request
