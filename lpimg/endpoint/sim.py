"""``sim://``: the simulated LPWAN of :mod:`lpimg.link.sim` as a link, on a shared virtual clock.

A :class:`~lpimg.endpoint.Device` and a :class:`~lpimg.endpoint.Server` in one process (tests,
examples, the demo) talk over the same airtime, duty-cycle, class A and loss model that
:func:`lpimg.link.sim.run_transfer` applies to bare protocol cores, but through the ordinary
async link interface, so the endpoints run unchanged::

    sim://lorawan-eu868:dr3?loss=0.1&seed=1
    sim://lorawan-eu868:dr0?uplink_loss=0.3&burst=4&fair_use=1&net=field-a
    sim://nbiot?loss=0.05

Virtual time
    Every link end opened on one URL (per event loop and ``net=`` name) joins one
    :class:`SimNetwork`, a discrete-event medium with its own clock (``link.clock.time()``,
    starting at 0). The clock moves only when **no link end's owner can act at the current
    instant**: every end is either blocked in the medium (in ``recv``, or in a ``send`` that
    waits for the radio) or has not called into it for a few event-loop turns (its owner is
    done with it for now, or waits on something else). It then jumps to the next scheduled thing
    (a frame arriving, a receive window opening, a ``recv`` timeout). Hours of duty-cycle
    waiting therefore pass in milliseconds, and a run is deterministic for a given seed. The
    asyncio loop itself is untouched (no ``looptime``), so other tasks and real I/O keep working
    beside a simulation; only the link ends are on virtual time, and ``recv(timeout)`` timeouts
    are virtual seconds. Work between two calls into the medium takes no virtual time, so an
    owner must not await real time (``asyncio.sleep``, a thread) in the middle of reacting to a
    frame: the clock would move on without it. Use each link end from one task.

The model (per device, with the network shared):
    - an uplink occupies the device's radio for its LoRa time on air and is charged to the
      device's duty cycle (EU868: 1 %) and, with ``fair_use=1``, to The Things Network's fair
      use budget (30 s a day); ``send`` waits (virtually) until the radio may transmit, and
      ``transmit_ready_at()`` says when that is, so a device can pick its frame at that moment;
    - an uplink that is not lost reaches the server link when it ends;
    - class A: a downlink the server sends for a device waits in the network's queue for that
      device until one of its uplinks opens RX1 (1 s after it ends) or RX2 (2 s); at most one
      downlink per uplink, and none after a lost uplink (the network did not hear it). With
      ``gateway_dc=1`` the gateway's own duty cycle (1 % in RX1, 10 % in RX2) is enforced;
    - NB-IoT (``sim://nbiot``): no windows, downlinks at any time, seconds of latency.

Query parameters: ``loss`` (both directions), ``uplink_loss``, ``downlink_loss``, ``burst``
(mean burst length in frames: Gilbert-Elliott bursts at the same mean loss), ``seed``,
``duplicate``/``truncate``/``bitflip``/``reorder`` (adversarial impairments of frames that do
arrive, probabilities; a reordered frame is delayed by up to 5 s so later ones overtake it),
``fair_use``, ``gateway_dc``, ``net`` (network name, default ``default``) and ``device``
(device side: the device id). All ends of one network must give the same settings.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lpimg.errors import LinkError
from lpimg.link.base import DeviceLink, LinkStats, ServerLink, check_frame
from lpimg.link.sim.budget import TTN_FAIR_USE, DutyCycle, FairUseBudget
from lpimg.link.sim.loss import (
    Delivery,
    GilbertElliott,
    ImpairmentProcess,
    Impairments,
    IndependentLoss,
    LossModel,
    LossProcess,
    NoLoss,
)
from lpimg.link.sim.profiles import LinkProfile, LoRaWANProfile, NbIotProfile, Window, parse_link_spec
from lpimg.link.url import LinkURL, register_scheme, resolve_device_id

log = logging.getLogger("lpimg.endpoint.sim")

DOWNLINK_QUEUE = 8
"""Downlinks a network server keeps queued per device (oldest dropped first), like an LNS queue."""


@dataclass(frozen=True)
class SimSettings:
    """Everything a ``sim://`` URL configures; two ends of one network must agree on it."""

    profile: LinkProfile
    uplink_loss: float = 0.0
    downlink_loss: float = 0.0
    burst: float | None = None
    seed: int = 0
    duplicate: float = 0.0
    truncate: float = 0.0
    bitflip: float = 0.0
    reorder: float = 0.0
    fair_use: bool = False
    gateway_dc: bool = False
    net: str = "default"

    def loss_model(self, rate: float) -> LossModel:
        """Independent loss, or Gilbert-Elliott bursts of ``burst`` frames at the same mean."""
        if rate <= 0.0:
            return NoLoss()
        if self.burst is not None and self.burst > 1.0 and rate < 1.0:
            return GilbertElliott.from_mean(rate, self.burst)
        return IndependentLoss(rate)

    def impairments(self) -> Impairments | None:
        if self.duplicate or self.truncate or self.bitflip or self.reorder:
            return Impairments(duplicate=self.duplicate, truncate=self.truncate, bitflip=self.bitflip,
                               reorder=self.reorder)
        return None


def parse_sim_url(url: LinkURL) -> SimSettings:
    """Validate a ``sim://`` URL (consuming its query parameters except ``device``)."""
    spec = url.netloc or url.path.strip("/")
    if not spec:
        raise LinkError(f"sim:// needs a link profile such as lorawan-eu868:dr3, in {url.redacted}")
    if url.netloc and url.path not in ("", "/"):
        raise LinkError(f"unexpected path {url.path!r} in link URL {url.redacted}")
    profile = parse_link_spec(spec)
    loss = url.take_float("loss", 0.0, 0.0, 1.0)
    burst = url.take_float("burst", 0.0, 0.0, 1e6)
    settings = SimSettings(
        profile=profile,
        uplink_loss=url.take_float("uplink_loss", loss, 0.0, 1.0),
        downlink_loss=url.take_float("downlink_loss", loss, 0.0, 1.0),
        burst=burst or None,
        seed=url.take_int("seed", 0, -(2**63), 2**63 - 1),
        duplicate=url.take_float("duplicate", 0.0, 0.0, 1.0),
        truncate=url.take_float("truncate", 0.0, 0.0, 1.0),
        bitflip=url.take_float("bitflip", 0.0, 0.0, 1.0),
        reorder=url.take_float("reorder", 0.0, 0.0, 1.0),
        fair_use=url.take_bool("fair_use", False),
        gateway_dc=url.take_bool("gateway_dc", False),
        net=url.take_str("net", "default") or "default",
    )
    if isinstance(profile, NbIotProfile) and (settings.fair_use or settings.gateway_dc):
        raise LinkError(f"fair_use and gateway_dc apply to LoRaWAN profiles only, in {url.redacted}")
    if settings.burst is not None and settings.burst < 1.0:
        raise LinkError(f"burst is a mean length in frames (>= 1), in {url.redacted}")
    for rate in (settings.uplink_loss, settings.downlink_loss):
        settings.loss_model(rate)  # a burst/loss pair that has no chain fails here, not later
    return settings


@dataclass
class SimRadioStats:
    """What one device's radio did on the simulated network (virtual seconds)."""

    uplinks: int = 0
    uplink_bytes: int = 0
    airtime_s: float = 0.0
    uplinks_lost: int = 0
    downlinks: int = 0
    downlink_bytes: int = 0
    downlink_airtime_s: float = 0.0
    downlinks_lost: int = 0
    downlinks_dropped: int = 0
    """Downlinks the network discarded because its queue for the device overflowed."""
    fair_use_deferrals: int = 0
    undelivered: int = 0
    """Uplinks heard while no server link was open on the network."""


class _Waiter:
    """One coroutine blocked in the medium on behalf of a link end."""

    __slots__ = ("end", "future")

    def __init__(self, end: _End, future: asyncio.Future[None]) -> None:
        self.end = end
        self.future = future


@dataclass(order=True)
class _Scheduled:
    time: float
    seq: int
    action: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class _End:
    """A link end's membership of a network: its coroutines blocked in the medium, and a
    counter of its calls into the medium (to tell an owner that is busy from one that is done
    with the link for now)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiters: list[_Waiter] = []
        self.activity = 0


_SETTLE_HOPS = 3
"""Event-loop turns an end that is not blocked gets to call into the medium before the clock
moves on without it. A woken endpoint re-blocks within one turn (nothing in a sim link
suspends except a wait in the medium); an end whose owner is done (a device that finished but
keeps its link open) or waits on something else (a queue) shows no activity and is idle."""


class SimNetwork:
    """The shared medium and virtual clock of every ``sim://`` link end with the same settings.

    Not created directly: the first link end opened on a URL creates it, the last one closed
    forgets it (so a test that opens the URL again starts at t = 0 with fresh random streams).
    """

    def __init__(self, settings: SimSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.profile = settings.profile
        self._loop = loop
        self._now = 0.0
        self._heap: list[_Scheduled] = []
        self._seq = itertools.count()
        self._ends: set[_End] = set()
        self._advance_pending = False
        self._woke = False
        self.devices: dict[str, SimDeviceLink] = {}
        self.server: SimServerLink | None = None
        self._gateway: dict[Window, DutyCycle] = {}
        if isinstance(self.profile, LoRaWANProfile) and settings.gateway_dc:
            for window in ("rx1", "rx2"):
                fraction = self.profile.gateway_duty_cycle(window)  # type: ignore[arg-type]
                if fraction is not None:
                    self._gateway[window] = DutyCycle(fraction)  # type: ignore[index]

    # -- the clock ---------------------------------------------------------------------------

    def time(self) -> float:
        """Virtual seconds since the network was created."""
        return self._now

    def schedule(self, time: float, action: Callable[[], None]) -> _Scheduled:
        """Run ``action`` when the clock reaches ``time`` (at once if it is already past)."""
        item = _Scheduled(max(time, self._now), next(self._seq), action)
        heapq.heappush(self._heap, item)
        self._maybe_advance()
        return item

    def _join(self, end: _End) -> None:
        self._ends.add(end)

    def _leave(self, end: _End) -> None:
        self._ends.discard(end)
        self._maybe_advance()

    async def _block(self, end: _End, deadline: float | None) -> None:
        """Wait (as ``end``) until released by a delivery, the deadline or a notification."""
        future: asyncio.Future[None] = self._loop.create_future()
        waiter = _Waiter(end, future)
        timer = None
        if deadline is not None:
            timer = self.schedule(deadline, lambda: self._release(waiter))
        end.waiters.append(waiter)
        end.activity += 1
        self._maybe_advance()
        try:
            await future
        finally:
            self._unblock(waiter)
            if timer is not None:
                timer.cancelled = True

    @staticmethod
    def _unblock(waiter: _Waiter) -> None:
        if waiter in waiter.end.waiters:
            waiter.end.waiters.remove(waiter)

    def _release(self, waiter: _Waiter) -> None:
        """Wake one waiter. Its end counts as busy from this instant, not from when its task
        runs, so the clock cannot move past what the woken task is about to do."""
        self._unblock(waiter)
        if not waiter.future.done():
            waiter.future.set_result(None)
            self._woke = True

    def notify(self, end: _End) -> None:
        """Wake every coroutine of ``end`` (a frame arrived, its radio became free)."""
        for waiter in list(end.waiters):
            self._release(waiter)

    def _maybe_advance(self) -> None:
        """Arrange for the clock to move once no end's owner can act at this instant."""
        if self._advance_pending or not self._heap or not self._ends:
            return
        self._advance_pending = True
        if all(end.waiters for end in self._ends):
            self._loop.call_soon(self._settle, None, 0)
        else:
            marks = {end: end.activity for end in self._ends}
            self._loop.call_soon(self._settle, marks, _SETTLE_HOPS)

    def _settle(self, marks: dict[_End, int] | None, hops: int) -> None:
        if hops > 1:
            self._loop.call_soon(self._settle, marks, hops - 1)
            return
        self._advance_pending = False
        idle = all(end.waiters or (marks is not None and marks.get(end) == end.activity)
                   for end in self._ends)
        if idle:
            self._advance()
        else:
            self._maybe_advance()

    def _advance(self) -> None:
        """Nobody can act now: run what is due next, and go on until someone is woken."""
        while self._heap:
            item = heapq.heappop(self._heap)
            if item.cancelled:
                continue
            self._now = max(self._now, item.time)
            self._woke = False
            try:
                item.action()
            except Exception:  # a bug in the model must not stall every waiter silently
                log.exception("sim network: scheduled action failed")
            if self._woke:
                break
        self._maybe_advance()

    async def wait_until(self, time: float) -> None:
        """Wait until the virtual clock reaches ``time``, as an observer, not a link end.

        For a test or a simulation script that acts at chosen instants (reboot a device, inject a
        frame): the clock still moves only when no link end's owner can act, and stops at
        ``time`` so the caller runs before anything later happens.
        """
        future: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)
                self._woke = True

        self.schedule(time, wake)
        await future

    # -- forgers -------------------------------------------------------------------------------

    def inject_uplink(self, device_id: str, frame: bytes) -> None:
        """A forger's frame claiming to come from ``device_id`` reaches the server now (no
        airtime, no loss: the forger is assumed to have a good radio and no duty cycle)."""
        server = self.server
        if server is not None and not server.closed:
            server._deliver(device_id, bytes(frame))

    def inject_downlink(self, device_id: str, frame: bytes) -> None:
        """A forger's frame reaches ``device_id`` now, outside any receive window."""
        device = self.devices.get(device_id)
        if device is not None:
            device._deliver(bytes(frame))

    # -- membership --------------------------------------------------------------------------

    def attach_device(self, link: SimDeviceLink) -> None:
        if link.device in self.devices:
            raise LinkError(f"sim network {self.settings.net!r} already has a device {link.device!r}")
        self.devices[link.device] = link
        self._join(link._end)

    def attach_server(self, link: SimServerLink) -> None:
        if self.server is not None:
            raise LinkError(f"sim network {self.settings.net!r} already has a server link")
        self.server = link
        self._join(link._end)

    def detach(self, link: SimDeviceLink | SimServerLink) -> None:
        if isinstance(link, SimDeviceLink):
            if self.devices.get(link.device) is link:
                del self.devices[link.device]
        elif self.server is link:
            self.server = None
        self.notify(link._end)
        self._leave(link._end)
        if not self._ends:
            _forget(self)

    # -- radio -------------------------------------------------------------------------------

    def uplink(self, device: SimDeviceLink, frame: bytes) -> None:
        """``device`` transmits ``frame`` now (its radio was free: the caller waited)."""
        profile = self.profile
        now = self._now
        stats = device.radio
        airtime = profile.uplink_airtime(len(frame))
        stats.uplinks += 1
        stats.uplink_bytes += len(frame)
        stats.airtime_s += airtime
        end = now + airtime
        lost = device._uplink_loss.lost()
        stats.uplinks_lost += lost
        deliveries = [] if lost else _impair(device._uplink_impair, frame)
        if isinstance(profile, LoRaWANProfile):
            if profile.dwell_time_s is not None and airtime > profile.dwell_time_s:
                raise LinkError(
                    f"a {len(frame)}-byte uplink takes {airtime * 1000:.1f} ms on air, over the "
                    f"{profile.dwell_time_s * 1000:.0f} ms dwell time of {profile.region}"
                )
            if device._duty is not None:
                device._duty.transmit(now, airtime)
            if device._fair is not None:
                device._fair.charge_uplink(now, airtime)
            arrival = end
            # Busy until RX2 has listened for a preamble; an earlier downlink frees it sooner.
            device._radio_free_at = end + profile.rx2_delay_s + profile.rx2.modulation.preamble_time_s
            self.schedule(end + profile.rx1_delay_s, lambda: self._window(device, "rx1", end, not lost))
        else:
            arrival = max(end + device._latency.uniform(*profile.latency_s), device._uplink_pipe_at)
            device._uplink_pipe_at = arrival
            device._radio_free_at = end
        for delivery in deliveries:
            if delivery.data:
                data = delivery.data
                self.schedule(arrival + delivery.delay_s, lambda data=data: self._to_server(device, data))

    def _to_server(self, device: SimDeviceLink, frame: bytes) -> None:
        server = self.server
        if server is None or server.closed:
            device.radio.undelivered += 1
            return
        server._deliver(device.device, frame)

    def downlink(self, device_id: str, frame: bytes) -> None:
        """The server hands the network a downlink for ``device_id``."""
        device = self.devices.get(device_id)
        if device is None:
            # Like an LNS: an unknown device id is the caller's mistake.
            raise LinkError(f"no device {device_id!r} on sim network {self.settings.net!r}")
        if isinstance(self.profile, NbIotProfile):
            self._nbiot_downlink(device, frame)
            return
        queue = device._downlinks
        if len(queue) >= DOWNLINK_QUEUE:
            queue.popleft()
            device.radio.downlinks_dropped += 1
        queue.append(frame)

    def _window(self, device: SimDeviceLink, window: Window, uplink_end: float, heard: bool) -> None:
        profile = self.profile
        assert isinstance(profile, LoRaWANProfile)
        now = self._now
        gateway = self._gateway.get(window)
        fair = device._fair
        if (
            heard
            and device._downlinks
            and not device.closed
            and (gateway is None or gateway.ready_at() <= now)
            and (fair is None or fair.downlink_allowed(now))
        ):
            frame = device._downlinks.popleft()
            rate = profile.window(window)
            if len(frame) > rate.max_payload:
                device.radio.downlinks_dropped += 1
                log.warning(
                    "sim: %d-byte downlink for %s exceeds %s of %s (%d bytes); dropped",
                    len(frame), device.device, window.upper(), profile.name, rate.max_payload,
                )
            else:
                airtime = profile.downlink_airtime(len(frame), window)
                if gateway is not None:
                    gateway.transmit(now, airtime)
                if fair is not None:
                    fair.charge_downlink(now)
                stats = device.radio
                stats.downlinks += 1
                stats.downlink_bytes += len(frame)
                stats.downlink_airtime_s += airtime
                lost = device._downlink_loss.lost()
                stats.downlinks_lost += lost
                if not lost:
                    device._radio_free_at = now + airtime
                    for delivery in _impair(device._downlink_impair, frame):
                        if delivery.data:
                            data = delivery.data
                            self.schedule(now + airtime + delivery.delay_s,
                                          lambda data=data: device._deliver(data))
                    return
                if window == "rx2":
                    return  # the device listened through RX2 in vain: free as planned
                heard = False  # the network spent its one answer; RX2 stays silent
        if window == "rx1":
            self.schedule(uplink_end + profile.rx2_delay_s,
                          lambda: self._window(device, "rx2", uplink_end, heard))
        # Otherwise the radio frees at RX2 + preamble, as planned when the uplink was sent.

    def _nbiot_downlink(self, device: SimDeviceLink, frame: bytes) -> None:
        profile = self.profile
        assert isinstance(profile, NbIotProfile)
        now = self._now
        airtime = profile.downlink_airtime(len(frame))
        start = max(now, device._downlink_radio_free_at)
        device._downlink_radio_free_at = start + airtime
        arrival = max(start + airtime + device._latency.uniform(*profile.latency_s), device._downlink_pipe_at)
        device._downlink_pipe_at = arrival
        stats = device.radio
        stats.downlinks += 1
        stats.downlink_bytes += len(frame)
        stats.downlink_airtime_s += airtime
        lost = device._downlink_loss.lost()
        stats.downlinks_lost += lost
        if not lost:
            for delivery in _impair(device._downlink_impair, frame):
                if delivery.data:
                    data = delivery.data
                    self.schedule(arrival + delivery.delay_s, lambda data=data: device._deliver(data))


_NETWORKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SimNetwork]] = (
    weakref.WeakKeyDictionary()
)


def _network_for(settings: SimSettings) -> SimNetwork:
    loop = asyncio.get_running_loop()
    networks = _NETWORKS.setdefault(loop, {})
    network = networks.get(settings.net)
    if network is None:
        network = networks[settings.net] = SimNetwork(settings, loop)
    elif network.settings != settings:
        raise LinkError(
            f"sim network {settings.net!r} is already open with other settings "
            f"({network.settings.profile.name}, seed {network.settings.seed}); both ends of a "
            "network must use the same URL (or pick another ?net=)"
        )
    return network


def _forget(network: SimNetwork) -> None:
    networks = _NETWORKS.get(network._loop)
    if networks is not None and networks.get(network.settings.net) is network:
        del networks[network.settings.net]


def _impair(process: ImpairmentProcess | None, frame: bytes) -> list[Delivery]:
    return [Delivery(0.0, frame)] if process is None else process.apply(frame)


def _stream(settings: SimSettings, device: str, name: str) -> random.Random:
    return random.Random(f"lpimg-sim/{settings.seed}/{device}/{name}")


class SimDeviceLink(DeviceLink):
    """Device side of ``sim://``: one radio with its duty cycle, on the network's virtual clock."""

    def __init__(self, settings: SimSettings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.mtu = settings.profile.mtu
        self.stats = LinkStats()
        self.radio = SimRadioStats()
        self._end = _End(f"device {device}")
        self._network: SimNetwork | None = None
        self._inbox: deque[bytes] = deque()
        self._downlinks: deque[bytes] = deque()
        self._radio_free_at = 0.0
        self._uplink_pipe_at = 0.0
        self._downlink_pipe_at = 0.0
        self._downlink_radio_free_at = 0.0
        self._uplink_loss: LossProcess = settings.loss_model(settings.uplink_loss).start(
            _stream(settings, device, "uplink-loss"))
        self._downlink_loss: LossProcess = settings.loss_model(settings.downlink_loss).start(
            _stream(settings, device, "downlink-loss"))
        impairments = settings.impairments()
        self._uplink_impair = impairments.start(_stream(settings, device, "uplink-impairments")) \
            if impairments else None
        self._downlink_impair = impairments.start(_stream(settings, device, "downlink-impairments")) \
            if impairments else None
        self._latency = _stream(settings, device, "latency")
        profile = settings.profile
        self._duty: DutyCycle | None = None
        self._fair: FairUseBudget | None = None
        if isinstance(profile, LoRaWANProfile):
            if profile.duty_cycle is not None:
                self._duty = DutyCycle(profile.duty_cycle, profile.sub_bands)
            if settings.fair_use:
                self._fair = FairUseBudget(TTN_FAIR_USE, profile.uplink_airtime(profile.mtu))

    @property
    def clock(self) -> SimNetwork:
        """The virtual clock (``clock.time()``) every end of this network shares."""
        if self._network is None:
            raise LinkError("sim link is not open")
        return self._network

    async def open(self) -> None:
        self._network = _network_for(self.settings)
        self._network.attach_device(self)

    def transmit_ready_at(self) -> float:
        """Virtual time at which the radio may next transmit (after its receive windows, the
        duty cycle and the fair-use budget); the device should pick its frame then."""
        self._end.activity += 1
        time = self._radio_free_at
        if self._duty is not None:
            time = max(time, self._duty.ready_at())
        if self._fair is not None:
            time = self._fair.uplink_ready_at(time)
        return time

    async def send(self, frame: bytes) -> None:
        """Transmit when the radio may (waiting in virtual time if it is busy)."""
        frame = check_frame(frame, self.mtu)
        network = self._require_open()
        self._end.activity += 1
        while (ready := self.transmit_ready_at()) > network.time():
            if self._fair is not None and self._fair.uplink_ready_at(network.time()) > network.time():
                self.radio.fair_use_deferrals += 1
            await network._block(self._end, ready)
            network = self._require_open()
        network.uplink(self, frame)
        self.stats.count_out(frame)

    async def recv(self, timeout: float | None = None) -> bytes | None:
        """The next downlink; ``None`` after ``timeout`` virtual seconds."""
        network = self._require_open()
        self._end.activity += 1
        deadline = None if timeout is None else network.time() + max(0.0, timeout)
        while not self._inbox:
            if deadline is not None and network.time() >= deadline:
                return None
            await network._block(self._end, deadline)
            network = self._require_open()
        return self._inbox.popleft()

    def _deliver(self, frame: bytes) -> None:
        if self.closed:
            return
        self.stats.count_in(frame)
        self._inbox.append(frame)
        if self._network is not None:
            self._network.notify(self._end)

    def _require_open(self) -> SimNetwork:
        if self.closed:
            raise LinkError(f"sim device {self.device}: link is closed")
        if self._network is None:
            raise LinkError(f"sim device {self.device}: link is not open")
        return self._network

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._network is not None:
            self._network.detach(self)

    def __repr__(self) -> str:
        return f"<SimDeviceLink {self.device!r} {self.settings.profile.name} net={self.settings.net!r}>"


class SimServerLink(ServerLink):
    """Server side of ``sim://``: every device of the network, through one network server."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.mtu = settings.profile.mtu
        self.stats = LinkStats()
        self._end = _End("server")
        self._network: SimNetwork | None = None
        self._inbox: deque[tuple[str, bytes]] = deque()

    @property
    def clock(self) -> SimNetwork:
        """The virtual clock (``clock.time()``) every end of this network shares."""
        if self._network is None:
            raise LinkError("sim link is not open")
        return self._network

    async def open(self) -> None:
        self._network = _network_for(self.settings)
        self._network.attach_server(self)

    async def send(self, device: str, frame: bytes) -> None:
        """Queue ``frame`` for ``device``'s next receive window (class A) or send it (NB-IoT)."""
        frame = check_frame(frame, self.mtu)
        network = self._require_open()
        self._end.activity += 1
        network.downlink(device, frame)
        self.stats.count_out(frame)

    async def recv(self) -> tuple[str, bytes]:
        item = await self.recv_within(None)
        assert item is not None
        return item

    async def recv_within(self, timeout: float | None) -> tuple[str, bytes] | None:
        """The next uplink, or ``None`` after ``timeout`` virtual seconds."""
        network = self._require_open()
        self._end.activity += 1
        deadline = None if timeout is None else network.time() + max(0.0, timeout)
        while not self._inbox:
            if deadline is not None and network.time() >= deadline:
                return None
            await network._block(self._end, deadline)
            network = self._require_open()
        return self._inbox.popleft()

    def _deliver(self, device: str, frame: bytes) -> None:
        if len(frame) > self.mtu:
            self.stats.count_rejected("oversize")
            return
        self.stats.count_in(frame)
        self._inbox.append((device, frame))
        if self._network is not None:
            self._network.notify(self._end)

    def _require_open(self) -> SimNetwork:
        if self.closed:
            raise LinkError("sim server: link is closed")
        if self._network is None:
            raise LinkError("sim server: link is not open")
        return self._network

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._network is not None:
            self._network.detach(self)

    def __repr__(self) -> str:
        return f"<SimServerLink {self.settings.profile.name} net={self.settings.net!r}>"


def sim_device_link(url: LinkURL, device_id: str | None) -> SimDeviceLink:
    """Factory for ``sim://`` device links (see :mod:`lpimg.link.url`)."""
    device = resolve_device_id(url, device_id, required=True)
    assert device is not None
    settings = parse_sim_url(url)
    url.finish()
    return SimDeviceLink(settings, device)


def sim_server_link(url: LinkURL) -> SimServerLink:
    """Factory for ``sim://`` server links (see :mod:`lpimg.link.url`)."""
    settings = parse_sim_url(url)
    url.finish()
    return SimServerLink(settings)


def register() -> None:
    """Register ``sim://`` with :mod:`lpimg.link.url` (done on import of lpimg.endpoint)."""
    register_scheme("sim", sim_device_link, sim_server_link, replace=True)


def virtual_clock(link: Any) -> SimNetwork | None:
    """The virtual clock of a ``sim://`` link end, or None for a link on real time."""
    return link.clock if isinstance(link, SimDeviceLink | SimServerLink) else None

