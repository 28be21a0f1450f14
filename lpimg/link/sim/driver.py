"""A discrete-event driver that runs a device and a server sans-I/O core over a simulated link.

Time is a float of virtual seconds; nothing sleeps, so a transfer that spends hours waiting for
the EU868 duty cycle runs in milliseconds. The driver owns the radio rules and the protocol cores
own every decision, through the pull API of docs/DESIGN-NOTES.md:

- the device is asked ``next_frame(now)`` whenever its radio is free and the duty cycle and the
  fair-use budget allow; ``None`` means "nothing now" and the device is not asked again until a
  downlink reaches it, one of its timers fires, or an ``on_event`` hook ran;
- an uplink occupies the channel for its airtime, may be lost or impaired, and reaches the server
  as ``server.receive_frame(addr, data, now)`` when it ends;
- LoRaWAN class A: RX1 opens 1 s and RX2 2 s after the uplink ends. If the network heard the
  uplink, the server is asked ``next_frame(addr, now)`` at RX1 and, if it had nothing (or the
  gateway could not transmit there), again at RX2; at most one downlink per uplink. A lost uplink
  opens no window on the network side. The device radio stays busy until the downlink it
  received ends, or until RX2 has listened for a preamble;
- NB-IoT: no windows. The server is drained of downlinks whenever it may have something new
  (after each step), each one delivered after the link latency;
- both sides' ``get_timer()`` deadlines are honoured with ``handle_timer(now)``, and their
  ``next_event()`` queues are drained after every step and recorded with a timestamp.

It ends when the device is ``finished`` and nothing is in flight, when nothing can happen any
more ("idle"), or at ``until``.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

from lpimg.errors import LinkError
from lpimg.link.sim.budget import DutyCycle, FairUseBudget, FairUsePolicy
from lpimg.link.sim.loss import Delivery, ImpairmentProcess, Impairments, LossModel, NoLoss
from lpimg.link.sim.profiles import (
    LinkProfile,
    LoRaWANProfile,
    NbIotProfile,
    Window,
    parse_link_spec,
)

Side = Literal["device", "server"]
EndedBy = Literal["finished", "until", "idle"]
EventHook = Callable[[Side, object, float], None]

_STALL_LIMIT = 10_000
"""Consecutive steps at one instant after which the simulation is declared stuck: a side whose
timer never moves would otherwise spin forever without virtual time advancing."""

# Tie-break order for things due at the same instant: information first (a frame that arrives
# exactly when a timer expires is seen before the timeout), then timers, windows, transmissions.
_DELIVER, _TIMER, _WINDOW, _ASK = range(4)


class DeviceEndpoint(Protocol):
    """The device half of the sans-I/O API (``lpimg.protocol.DeviceSession``)."""

    @property
    def finished(self) -> bool: ...

    def next_frame(self, now: float) -> bytes | None: ...

    def receive_frame(self, data: bytes, now: float) -> None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> object | None: ...


class ServerEndpoint(Protocol):
    """The server half of the sans-I/O API (``lpimg.protocol.ServerProtocol``)."""

    def receive_frame(self, device: str, data: bytes, now: float) -> None: ...

    def next_frame(self, device: str, now: float) -> bytes | None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> object | None: ...


@dataclass(frozen=True)
class SimLink:
    """A link profile plus the conditions of one simulated run.

    It is a description, not a running link: :func:`run_transfer` derives fresh random streams
    from ``seed`` each time, so the same ``SimLink`` gives the same transfer twice. Uplink and
    downlink losses and impairments draw from separate streams.
    """

    profile: LinkProfile
    uplink_loss: LossModel = NoLoss()
    downlink_loss: LossModel = NoLoss()
    uplink_impairments: Impairments | None = None
    downlink_impairments: Impairments | None = None
    seed: int = 0
    fair_use: FairUsePolicy | None = None
    gateway_duty_cycle: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.profile, NbIotProfile) and (
            self.fair_use is not None or self.gateway_duty_cycle
        ):
            raise LinkError("fair-use and gateway duty cycle apply to LoRaWAN profiles only")

    @classmethod
    def from_spec(cls, spec: str, **conditions: Any) -> SimLink:
        """``SimLink.from_spec("lorawan-eu868:dr0", uplink_loss=IndependentLoss(0.1))``."""
        return cls(parse_link_spec(spec), **conditions)


@dataclass(frozen=True)
class RecordedEvent:
    """An event one side emitted, and the virtual time it was drained at."""

    time_s: float
    side: Side
    event: object


@dataclass(frozen=True)
class FrameRecord:
    """One transmission as the radio saw it, for timing tests and traces."""

    direction: Literal["up", "down"]
    index: int
    start_s: float
    airtime_s: float
    size: int
    window: Literal["uplink", "rx1", "rx2", "any"]
    lost: bool
    tags: tuple[str, ...] = ()

    @property
    def end_s(self) -> float:
        """When the last symbol left the antenna."""
        return self.start_s + self.airtime_s


@dataclass
class TransferStats:
    """What a simulated transfer cost and how it ended.

    ``duration_s`` runs from the start to the moment the device became ``finished``, or to the
    end of the simulation if it never did. ``airtime_s`` is uplink airtime only, the figure duty
    cycle and fair use are about; downlink airtime is reported apart.
    """

    link: str
    uplink_frames: int = 0
    uplink_bytes: int = 0
    downlink_frames: int = 0
    downlink_bytes: int = 0
    airtime_s: float = 0.0
    downlink_airtime_s: float = 0.0
    duration_s: float = 0.0
    uplinks_lost: int = 0
    downlinks_lost: int = 0
    fair_use_deferrals: int = 0
    finished: bool = False
    reason: str | None = None
    ended_by: EndedBy = "until"
    events: list[RecordedEvent] = field(default_factory=list)
    frames: list[FrameRecord] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The counters as plain JSON-ready values (events and frame records left out)."""
        return {
            "link": self.link,
            "uplink_frames": self.uplink_frames,
            "uplink_bytes": self.uplink_bytes,
            "downlink_frames": self.downlink_frames,
            "downlink_bytes": self.downlink_bytes,
            "airtime_s": self.airtime_s,
            "downlink_airtime_s": self.downlink_airtime_s,
            "duration_s": self.duration_s,
            "uplinks_lost": self.uplinks_lost,
            "downlinks_lost": self.downlinks_lost,
            "fair_use_deferrals": self.fair_use_deferrals,
            "finished": self.finished,
            "reason": self.reason,
            "ended_by": self.ended_by,
        }


def _as_link(link: SimLink | LinkProfile | str) -> SimLink:
    if isinstance(link, SimLink):
        return link
    if isinstance(link, str):
        return SimLink(parse_link_spec(link))
    if isinstance(link, LoRaWANProfile | NbIotProfile):
        return SimLink(link)
    raise LinkError(f"expected a SimLink, a link profile or a spec string, got {link!r}")


class _Simulation:
    """The state of one run; :func:`run_transfer` is its only user."""

    def __init__(
        self,
        device: DeviceEndpoint,
        server: ServerEndpoint,
        link: SimLink,
        *,
        device_addr: str,
        start: float,
        until: float,
        on_event: EventHook | None,
    ) -> None:
        self.device = device
        self.server = server
        self.link = link
        self.profile = link.profile
        self.addr = device_addr
        self.start = start
        self.until = until
        self.on_event = on_event
        self.now = start
        self.stats = TransferStats(link=self.profile.name)

        def stream(name: str) -> random.Random:
            return random.Random(f"lpimg-sim/{link.seed}/{name}")

        self.uplink_loss = link.uplink_loss.start(stream("uplink-loss"))
        self.downlink_loss = link.downlink_loss.start(stream("downlink-loss"))
        self.uplink_impairments = (
            link.uplink_impairments.start(stream("uplink-impairments"))
            if link.uplink_impairments
            else None
        )
        self.downlink_impairments = (
            link.downlink_impairments.start(stream("downlink-impairments"))
            if link.downlink_impairments
            else None
        )
        self.latency = stream("latency")

        self.queue: list[tuple[float, int, int, Callable[[float], None]]] = []
        self.sequence = itertools.count()
        self.wants_to_send = True
        self.radio_free_at = start
        self.radio_busy = False
        self.finished_at: float | None = None
        self.ask_deferred = False

        self.duty: DutyCycle | None = None
        self.gateway: dict[Window, DutyCycle] = {}
        self.fair: FairUseBudget | None = None
        profile = self.profile
        if isinstance(profile, LoRaWANProfile):
            if profile.duty_cycle is not None:
                self.duty = DutyCycle(profile.duty_cycle, profile.sub_bands)
            if link.gateway_duty_cycle:
                for window in ("rx1", "rx2"):
                    fraction = profile.gateway_duty_cycle(window)
                    if fraction is not None:
                        self.gateway[window] = DutyCycle(fraction)
            if link.fair_use is not None:
                self.fair = FairUseBudget(link.fair_use, profile.uplink_airtime(profile.mtu))
        # NB-IoT: one bearer per direction, so deliveries keep their order.
        self.uplink_pipe_at = start
        self.downlink_pipe_at = start
        self.downlink_radio_free_at = start

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> TransferStats:
        ended_by: EndedBy
        steps_at_this_instant = 0
        self._settle()
        while True:
            if self.device.finished and not self.queue:
                ended_by = "finished"
                break
            step = self._next_step()
            if step is None:
                ended_by = "idle"
                break
            time, _, kind = step
            if time > self.until:
                self.now = self.until
                ended_by = "until"
                break
            steps_at_this_instant = steps_at_this_instant + 1 if time == self.now else 0
            if steps_at_this_instant > _STALL_LIMIT:
                raise LinkError(
                    f"simulation made no progress at t={time:.6f} s: '{kind}' keeps coming due "
                    "(a timer that handle_timer does not move, or an endless stream of frames)"
                )
            self.now = time
            self._dispatch(kind)
            self._settle()
        return self._finish(ended_by)

    def _next_step(self) -> tuple[float, int, str] | None:
        now = self.now
        candidates: list[tuple[float, int, str]] = []
        if self.queue:
            time, priority, _, _ = self.queue[0]
            candidates.append((time, priority, "queue"))
        if not self.device.finished:
            device_timer = self.device.get_timer()
            if device_timer is not None:
                candidates.append((max(device_timer, now), _TIMER, "device timer"))
            server_timer = self.server.get_timer()
            if server_timer is not None:
                candidates.append((max(server_timer, now), _TIMER, "server timer"))
            if self.wants_to_send and not self.radio_busy:
                candidates.append((self._ask_time(), _ASK, "uplink"))
        return min(candidates) if candidates else None

    def _ask_time(self) -> float:
        time = max(self.now, self.radio_free_at)
        if self.duty is not None:
            time = max(time, self.duty.ready_at())
        self.ask_deferred = False
        if self.fair is not None:
            allowed = self.fair.uplink_ready_at(time)
            self.ask_deferred = allowed > time
            time = allowed
        return time

    def _dispatch(self, kind: str) -> None:
        now = self.now
        if kind == "queue":
            _, _, _, action = heapq.heappop(self.queue)
            action(now)
        elif kind == "device timer":
            self.device.handle_timer(now)
            self.wants_to_send = True
        elif kind == "server timer":
            self.server.handle_timer(now)
        else:
            if self.ask_deferred:
                self.stats.fair_use_deferrals += 1
            self._uplink(now)

    def _settle(self) -> None:
        """Drain events (and, on NB-IoT, downlinks) until both sides are quiet at this instant."""
        while True:
            progressed = self._drain_events()
            if isinstance(self.profile, NbIotProfile):
                progressed = self._pump_downlinks() or progressed
            if not progressed:
                break
        if self.finished_at is None and self.device.finished:
            self.finished_at = self.now

    def _drain_events(self) -> bool:
        progressed = False
        sources: tuple[tuple[Side, Callable[[], object | None]], ...] = (
            ("device", self.device.next_event),
            ("server", self.server.next_event),
        )
        for side, next_event in sources:
            while (event := next_event()) is not None:
                progressed = True
                self.stats.events.append(RecordedEvent(self.now, side, event))
                if self.on_event is not None:
                    self.on_event(side, event, self.now)
                    # A hook may have given the device more work (add_layers after a refine).
                    self.wants_to_send = True
        return progressed

    def _schedule(self, time: float, priority: int, action: Callable[[float], None]) -> None:
        heapq.heappush(self.queue, (time, priority, next(self.sequence), action))

    def _finish(self, ended_by: EndedBy) -> TransferStats:
        stats = self.stats
        stats.ended_by = ended_by
        stats.finished = bool(self.device.finished)
        stats.reason = getattr(self.device, "reason", None)
        end = self.finished_at if self.finished_at is not None else self.now
        stats.duration_s = end - self.start
        return stats

    # -- uplinks ------------------------------------------------------------------------------

    def _uplink(self, now: float) -> None:
        frame = self.device.next_frame(now)
        if frame is None:
            self.wants_to_send = False
            return
        frame = bytes(frame)
        profile = self.profile
        if len(frame) > profile.mtu:
            raise LinkError(
                f"device produced a {len(frame)}-byte uplink; {profile.name} carries at most "
                f"{profile.mtu} bytes"
            )
        airtime = profile.uplink_airtime(len(frame))
        stats = self.stats
        index = stats.uplink_frames
        stats.uplink_frames += 1
        stats.uplink_bytes += len(frame)
        stats.airtime_s += airtime
        end = now + airtime
        lost = self.uplink_loss.lost()
        stats.uplinks_lost += lost
        deliveries = [] if lost else _impair(self.uplink_impairments, frame)

        if isinstance(profile, LoRaWANProfile):
            if profile.dwell_time_s is not None and airtime > profile.dwell_time_s:
                raise LinkError(
                    f"a {len(frame)}-byte uplink takes {airtime * 1000:.1f} ms on air, over the "
                    f"{profile.dwell_time_s * 1000:.0f} ms dwell time of {profile.region}"
                )
            if self.duty is not None:
                self.duty.transmit(now, airtime)
            if self.fair is not None:
                self.fair.charge_uplink(now, airtime)
            arrival = end
            self.radio_busy = True
            self._schedule(
                end + profile.rx1_delay_s,
                _WINDOW,
                partial(self._rx_window, profile, "rx1", end, not lost),
            )
        else:
            arrival = max(end + self.latency.uniform(*profile.latency_s), self.uplink_pipe_at)
            self.uplink_pipe_at = arrival
            self.radio_free_at = end
        for delivery in deliveries:
            self._schedule(
                arrival + delivery.delay_s, _DELIVER, partial(self._to_server, delivery.data)
            )
        stats.frames.append(
            FrameRecord("up", index, now, airtime, len(frame), "uplink", lost, _tags(deliveries))
        )

    def _to_server(self, data: bytes, now: float) -> None:
        self.server.receive_frame(self.addr, data, now)

    # -- downlinks ----------------------------------------------------------------------------

    def _rx_window(
        self, profile: LoRaWANProfile, window: Window, uplink_end: float, heard: bool, now: float
    ) -> None:
        """A class A receive window opens: the network may answer the uplink it heard."""
        gateway = self.gateway.get(window)
        if (
            heard
            and (gateway is None or gateway.ready_at() <= now)
            and (self.fair is None or self.fair.downlink_allowed(now))
        ):
            frame = self.server.next_frame(self.addr, now)
            if frame is not None:
                self._class_a_downlink(profile, window, bytes(frame), uplink_end, now)
                return
        if window == "rx1":
            self._schedule(
                uplink_end + profile.rx2_delay_s,
                _WINDOW,
                partial(self._rx_window, profile, "rx2", uplink_end, heard),
            )
        else:
            # Nothing came: the device listened long enough to rule out a preamble in RX2.
            self._release_radio(now + profile.rx2.modulation.preamble_time_s)

    def _class_a_downlink(
        self, profile: LoRaWANProfile, window: Window, frame: bytes, uplink_end: float, now: float
    ) -> None:
        rate = profile.window(window)
        if len(frame) > rate.max_payload:
            raise LinkError(
                f"server produced a {len(frame)}-byte downlink; {window.upper()} of "
                f"{profile.name} ({profile.region} {rate.name}) carries at most "
                f"{rate.max_payload} bytes"
            )
        airtime = profile.downlink_airtime(len(frame), window)
        gateway = self.gateway.get(window)
        if gateway is not None:
            gateway.transmit(now, airtime)
        if self.fair is not None:
            self.fair.charge_downlink(now)
        lost = self._downlink(frame, window, now, airtime, now + airtime)
        if lost and window == "rx1":
            # The device heard nothing in RX1, so it keeps listening in RX2, where the network,
            # having spent its one answer, sends nothing.
            self._schedule(
                uplink_end + profile.rx2_delay_s,
                _WINDOW,
                partial(self._rx_window, profile, "rx2", uplink_end, False),
            )
        else:
            self._release_radio(now + airtime)

    def _pump_downlinks(self) -> bool:
        """NB-IoT: the network may send whenever it likes; take everything the server has."""
        profile = self.profile
        assert isinstance(profile, NbIotProfile)
        sent = False
        for _ in range(_STALL_LIMIT):
            frame = self.server.next_frame(self.addr, self.now)
            if frame is None:
                return sent
            frame = bytes(frame)
            if len(frame) > profile.mtu:
                raise LinkError(
                    f"server produced a {len(frame)}-byte downlink; {profile.name} carries at "
                    f"most {profile.mtu} bytes"
                )
            airtime = profile.downlink_airtime(len(frame))
            start = max(self.now, self.downlink_radio_free_at)
            self.downlink_radio_free_at = start + airtime
            arrival = max(
                start + airtime + self.latency.uniform(*profile.latency_s), self.downlink_pipe_at
            )
            self.downlink_pipe_at = arrival
            self._downlink(frame, "any", start, airtime, arrival)
            sent = True
        raise LinkError(f"server kept producing downlinks at t={self.now:.6f} s without end")

    def _downlink(
        self,
        frame: bytes,
        window: Literal["rx1", "rx2", "any"],
        start: float,
        airtime: float,
        arrival: float,
    ) -> bool:
        """Count, lose or impair one downlink and schedule what reaches the device."""
        stats = self.stats
        index = stats.downlink_frames
        stats.downlink_frames += 1
        stats.downlink_bytes += len(frame)
        stats.downlink_airtime_s += airtime
        lost = self.downlink_loss.lost()
        stats.downlinks_lost += lost
        deliveries = [] if lost else _impair(self.downlink_impairments, frame)
        for delivery in deliveries:
            self._schedule(
                arrival + delivery.delay_s, _DELIVER, partial(self._to_device, delivery.data)
            )
        stats.frames.append(
            FrameRecord("down", index, start, airtime, len(frame), window, lost, _tags(deliveries))
        )
        return lost

    def _to_device(self, data: bytes, now: float) -> None:
        self.device.receive_frame(data, now)
        self.wants_to_send = True

    def _release_radio(self, time: float) -> None:
        self.radio_free_at = time
        self.radio_busy = False


def _impair(process: ImpairmentProcess | None, frame: bytes) -> list[Delivery]:
    return [Delivery(0.0, frame)] if process is None else process.apply(frame)


def _tags(deliveries: list[Delivery]) -> tuple[str, ...]:
    return tuple(sorted({tag for delivery in deliveries for tag in delivery.tags}))


def run_transfer(
    device: DeviceEndpoint,
    server: ServerEndpoint,
    link: SimLink | LinkProfile | str,
    *,
    device_addr: str = "dev",
    until: float,
    start: float = 0.0,
    on_event: EventHook | None = None,
) -> TransferStats:
    """Run ``device`` and ``server`` over ``link`` in virtual time from ``start`` to at most
    ``until`` seconds, and report what it cost.

    ``on_event(side, event, now)`` is called for every event as it is drained, so a test or an
    endpoint can react inside the simulation (call ``server.stop(...)`` or
    ``device.add_layers(...)``); the device is then offered the radio again. Misconfigurations
    the link cannot carry (a frame over the MTU, a US915 uplink over the dwell time) raise
    :class:`lpimg.LinkError`.
    """
    if until < start:
        raise LinkError(f"until ({until}) is before start ({start})")
    simulation = _Simulation(
        device,
        server,
        _as_link(link),
        device_addr=device_addr,
        start=start,
        until=until,
        on_event=on_event,
    )
    return simulation.run()
