"""The discrete-event driver, run with a miniature fragment-and-poll protocol.

The real protocol core is written elsewhere; these fakes follow the same duck-typed pull API
(docs/DESIGN-NOTES.md) so that every rule of the *link* can be checked on its own: airtime,
duty cycle, class A windows, loss, fair use, NB-IoT latency, termination.

Fake wire format: uplink ``D seq total chunk`` (data) or ``P`` (poll, asks for an ACK); downlink
``A bitmap`` (little-endian bit i = chunk i received), optionally padded.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import deque

import pytest

from lpimg import LinkError
from lpimg.link.sim import (
    DataRate,
    DropList,
    FrameRecord,
    GilbertElliott,
    Impairments,
    IndependentLoss,
    LoRaModulation,
    NbIotProfile,
    SimLink,
    TransferStats,
    eu868,
    run_transfer,
    us915,
)
from lpimg.link.sim.budget import TTN_FAIR_USE

DAY = 86_400.0


class FakeDevice:
    """Sends every chunk, then polls; resends what the ACK says is missing; gives up after
    ``max_polls`` unanswered polls, each waited for ``poll_timeout`` seconds. With ``announce``,
    a device that has nothing to send emits a ``("ready",)`` event the first time it is asked."""

    def __init__(
        self,
        payload: bytes,
        mtu: int,
        *,
        poll_timeout: float = 600.0,
        max_polls: int = 5,
        announce: bool = False,
    ) -> None:
        self.chunk_size = mtu - 3
        self.chunks: list[bytes] = []
        self.pending: deque[int] = deque()
        self.add_chunks(payload)
        self.poll_timeout = poll_timeout
        self.max_polls = max_polls
        self.awaiting_ack = False
        self.polls = 0
        self.timer: float | None = None
        self.finished = False
        self.reason: str | None = None
        self.announce = announce
        self.events: deque[tuple[str, ...]] = deque()
        self.received: list[tuple[float, bytes]] = []

    def add_chunks(self, payload: bytes) -> None:
        first = len(self.chunks)
        size = self.chunk_size
        self.chunks += [payload[i : i + size] for i in range(0, len(payload), size)]
        self.pending.extend(range(first, len(self.chunks)))
        assert len(self.chunks) < 256

    def next_frame(self, now: float) -> bytes | None:
        if self.finished:
            return None
        if not self.chunks:
            if self.announce:  # asked with nothing to send: say so once, as an event
                self.announce = False
                self.events.append(("ready",))
            return None
        if self.pending:
            seq = self.pending.popleft()
            return bytes([ord("D"), seq, len(self.chunks)]) + self.chunks[seq]
        if not self.awaiting_ack:
            self.awaiting_ack = True
            self.polls += 1
            self.timer = now + self.poll_timeout
            return b"P"
        return None

    def receive_frame(self, data: bytes, now: float) -> None:
        self.received.append((now, data))
        if self.finished or data[:1] != b"A":
            self.events.append(("malformed",))
            return
        bitmap = int.from_bytes(data[1:], "little")
        missing = [i for i in range(len(self.chunks)) if not bitmap >> i & 1]
        self.timer = None
        self.awaiting_ack = False
        self.polls = 0
        if missing:
            self.pending = deque(missing)
        else:
            self.finished, self.reason = True, "complete"
            self.events.append(("complete",))

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        if self.timer is None or now < self.timer:
            return
        self.timer = None
        if self.polls >= self.max_polls:
            self.finished, self.reason = True, f"gave up after {self.polls} polls"
            self.events.append(("gave up",))
        else:
            self.awaiting_ack = False

    def next_event(self) -> tuple[str, ...] | None:
        return self.events.popleft() if self.events else None


class FakeServer:
    """Reassembles chunks; answers a poll with an ACK bitmap.

    ``answer_after`` windows are let pass once an ACK is due (1 = answer in RX2);
    ``chatty`` answers every window whether or not a poll came; ``downlink_size`` pads ACKs.
    """

    def __init__(
        self, *, answer_after: int = 0, chatty: bool = False, downlink_size: int = 0
    ) -> None:
        self.answer_after = answer_after
        self.chatty = chatty
        self.downlink_size = downlink_size
        self.chunks: dict[int, bytes] = {}
        self.total = 0
        self.ack_due = False
        self.windows_waited = 0
        self.asks: list[float] = []
        self.arrivals: list[tuple[float, bytes]] = []
        self.devices: set[str] = set()
        self.events: deque[tuple[str, ...]] = deque()
        self.completed = False

    def receive_frame(self, device: str, data: bytes, now: float) -> None:
        self.devices.add(device)
        self.arrivals.append((now, data))
        if data[:1] == b"D" and len(data) >= 3 and data[1] < data[2]:
            self.total = max(self.total, data[2])
            self.chunks.setdefault(data[1], data[3:])
        elif data == b"P":
            self.ack_due = True
        else:
            self.events.append(("malformed", device))

    def next_frame(self, device: str, now: float) -> bytes | None:
        self.asks.append(now)
        if not (self.ack_due or self.chatty):
            return None
        if self.windows_waited < self.answer_after:
            self.windows_waited += 1
            return None
        self.windows_waited = 0
        self.ack_due = False
        bitmap = sum(1 << i for i in self.chunks)
        ack = b"A" + bitmap.to_bytes(max(1, (self.total + 7) // 8), "little")
        if self.total and len(self.chunks) == self.total and not self.completed:
            self.completed = True
            self.events.append(("complete", device))
        return ack.ljust(self.downlink_size, b"\0")

    def assembled(self) -> bytes:
        return b"".join(self.chunks[i] for i in range(self.total))

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("the fake server never sets a timer")

    def next_event(self) -> tuple[str, ...] | None:
        return self.events.popleft() if self.events else None


def payload_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def uplinks(stats: TransferStats) -> list[FrameRecord]:
    return [f for f in stats.frames if f.direction == "up"]


def downlinks(stats: TransferStats) -> list[FrameRecord]:
    return [f for f in stats.frames if f.direction == "down"]


# -- a clean transfer and its timing -----------------------------------------------------------


def test_clean_eu868_dr0_transfer_costs_what_the_formula_says() -> None:
    profile = eu868(0)
    payload = payload_of(480)  # 10 chunks of 48 bytes in 51-byte frames
    device, server = FakeDevice(payload, profile.mtu), FakeServer()
    stats = run_transfer(device, server, SimLink(profile), until=DAY)

    assert (stats.finished, stats.reason, stats.ended_by) == (True, "complete", "finished")
    assert server.assembled() == payload
    assert (stats.uplink_frames, stats.downlink_frames) == (11, 1)
    assert stats.uplink_bytes == 10 * 51 + 1
    assert stats.airtime_s == pytest.approx(10 * 2.793472 + profile.uplink_airtime(1))
    assert stats.downlink_bytes == 3
    assert stats.downlink_airtime_s == pytest.approx(profile.downlink_airtime(3, "rx1"))
    assert (stats.uplinks_lost, stats.downlinks_lost) == (0, 0)

    ups = uplinks(stats)
    for earlier, later in zip(ups, ups[1:], strict=False):
        # the 1 % duty cycle, not the radio, paces a DR0 device: 99 x airtime of silence
        assert later.start_s == pytest.approx(earlier.start_s + 100 * earlier.airtime_s)
    (ack,) = downlinks(stats)
    assert stats.duration_s == pytest.approx(ack.end_s)  # finished when the ACK arrived
    assert stats.duration_s > 9 * 279


def test_class_a_rx1_timing_and_who_is_asked_when() -> None:
    profile = eu868(3)
    device, server = FakeDevice(payload_of(300), profile.mtu), FakeServer()
    stats = run_transfer(device, server, SimLink(profile), until=DAY)
    ups = uplinks(stats)
    expected_asks = []
    for frame in ups[:-1]:  # data frames: nothing to say in RX1, asked again in RX2
        expected_asks += [frame.end_s + 1.0, frame.end_s + 2.0]
    expected_asks.append(ups[-1].end_s + 1.0)  # the poll is answered in RX1
    assert server.asks == pytest.approx(expected_asks)
    (ack,) = downlinks(stats)
    assert ack.window == "rx1"
    assert ack.start_s == pytest.approx(ups[-1].end_s + 1.0)
    assert ack.airtime_s == pytest.approx(profile.downlink_airtime(ack.size, "rx1"))


def test_class_a_rx2_answer_uses_rx2_timing_and_data_rate() -> None:
    profile = eu868(5)
    device, server = FakeDevice(payload_of(100), profile.mtu), FakeServer(answer_after=1)
    stats = run_transfer(device, server, SimLink(profile), until=DAY)
    assert stats.finished
    poll = uplinks(stats)[-1]
    (ack,) = downlinks(stats)
    assert ack.window == "rx2"
    assert ack.start_s == pytest.approx(poll.end_s + 2.0)
    # RX2 is DR0 (SF12) whatever the uplink rate: far longer on air than RX1 at DR5
    assert ack.airtime_s == pytest.approx(eu868(0).downlink_airtime(ack.size, "rx1"))
    assert ack.airtime_s > 10 * profile.downlink_airtime(ack.size, "rx1")


def test_at_most_one_downlink_per_uplink() -> None:
    profile = us915(1)
    device, server = FakeDevice(payload_of(500), profile.mtu), FakeServer(chatty=True)
    stats = run_transfer(device, server, SimLink(profile), until=DAY)
    ups, downs = uplinks(stats), downlinks(stats)
    assert stats.finished
    assert len(downs) == len(ups) == len(server.asks)  # chatty, yet asked once per uplink
    for up, down in zip(ups, downs, strict=True):
        assert down.window == "rx1" and down.start_s == pytest.approx(up.end_s + 1.0)


def test_device_radio_is_busy_until_the_class_a_windows_are_done() -> None:
    # US915 has no duty cycle, so the receive windows alone pace the device.
    profile = us915(1)
    rx2_listen = profile.rx2.modulation.preamble_time_s  # DR8: 12.25 symbols of 8.192 ms
    assert rx2_listen == pytest.approx(0.100352)

    quiet = run_transfer(FakeDevice(payload_of(500), profile.mtu), FakeServer(), profile, until=DAY)
    ups = uplinks(quiet)
    for earlier, later in zip(ups, ups[1:], strict=False):
        assert later.start_s == pytest.approx(earlier.end_s + 2.0 + rx2_listen)

    link = SimLink(profile, downlink_loss=DropList([1]))
    chatty = run_transfer(
        FakeDevice(payload_of(500), profile.mtu), FakeServer(chatty=True), link, until=DAY
    )
    ups, downs = uplinks(chatty), downlinks(chatty)
    assert downs[1].lost and not downs[0].lost
    # after a received RX1 downlink the radio is free as soon as it ends...
    assert ups[1].start_s == pytest.approx(downs[0].end_s)
    # ...after a lost one the device still listens through RX2
    assert ups[2].start_s == pytest.approx(ups[1].end_s + 2.0 + rx2_listen)


def test_two_sub_bands_double_the_uplink_rate() -> None:
    payload = payload_of(480)
    one = run_transfer(FakeDevice(payload, 51), FakeServer(), eu868(0), until=DAY)
    two = run_transfer(FakeDevice(payload, 51), FakeServer(), eu868(0, sub_bands=2), until=DAY)
    assert two.finished and two.uplink_frames == one.uplink_frames
    ups = uplinks(two)
    assert ups[2].start_s == pytest.approx(ups[0].start_s + 100 * ups[0].airtime_s)
    assert ups[1].start_s < ups[0].end_s + 3.0  # the second band was open
    assert two.duration_s < 0.6 * one.duration_s


# -- loss ---------------------------------------------------------------------------------------


def test_a_lost_uplink_opens_no_window_at_the_network() -> None:
    profile = eu868(0)
    payload = payload_of(480)
    device, server = FakeDevice(payload, profile.mtu), FakeServer()
    stats = run_transfer(device, server, SimLink(profile, uplink_loss=DropList([3])), until=DAY)
    assert stats.finished and server.assembled() == payload
    ups = uplinks(stats)
    assert [f.index for f in ups if f.lost] == [3]
    lost = ups[3]
    assert not any(abs(t - lost.end_s - d) < 1e-6 for t in server.asks for d in (1.0, 2.0))
    # 10 chunks, poll, chunk 3 again, poll
    assert stats.uplink_frames == 13 and stats.downlink_frames == 2
    assert stats.uplinks_lost == 1


def test_a_lost_ack_is_recovered_by_the_poll_timer() -> None:
    profile = eu868(0)
    payload = payload_of(480)
    device = FakeDevice(payload, profile.mtu, poll_timeout=600.0)
    server = FakeServer()
    stats = run_transfer(device, server, SimLink(profile, downlink_loss=DropList([0])), until=DAY)
    assert stats.finished and stats.reason == "complete"
    assert stats.downlinks_lost == 1 and stats.downlink_frames == 2
    polls = [f for f in uplinks(stats) if f.size == 1]
    assert len(polls) == 2
    assert polls[1].start_s == pytest.approx(polls[0].start_s + 600.0)


def test_total_uplink_loss_ends_with_the_device_giving_up() -> None:
    link = SimLink(eu868(2), uplink_loss=IndependentLoss(1.0))
    device, server = FakeDevice(payload_of(480), 51, max_polls=3), FakeServer()
    stats = run_transfer(device, server, link, until=30 * DAY)
    assert (stats.finished, stats.reason, stats.ended_by) == (
        True,
        "gave up after 3 polls",
        "finished",
    )
    assert stats.uplink_frames == 10 + 3 and stats.downlink_frames == 0
    assert server.asks == [] and server.arrivals == []
    assert stats.duration_s == pytest.approx(uplinks(stats)[-1].start_s + 600.0)


def test_frames_in_flight_when_the_device_finishes_are_still_delivered() -> None:
    link = SimLink(eu868(5), downlink_impairments=Impairments(duplicate=1.0, reorder_delay_s=9.0))
    device, server = FakeDevice(payload_of(100), 242), FakeServer()
    stats = run_transfer(device, server, link, until=DAY)
    (ack,) = downlinks(stats)
    (first, _), (second, _) = device.received  # the late duplicate still arrived
    assert first == pytest.approx(ack.end_s) and second > first
    assert stats.duration_s == pytest.approx(first)  # the transfer ended when the device finished
    assert ("malformed",) in [e.event for e in stats.events if e.side == "device"]


def test_until_bounds_a_device_that_never_gives_up() -> None:
    link = SimLink(eu868(2), uplink_loss=IndependentLoss(1.0))
    device = FakeDevice(payload_of(480), 51, max_polls=10**9)
    stats = run_transfer(device, FakeServer(), link, until=DAY)
    assert (stats.finished, stats.ended_by) == (False, "until")
    assert stats.duration_s == DAY
    assert uplinks(stats)[-1].start_s <= DAY


def test_same_seed_same_transfer_other_seed_other_transfer() -> None:
    def once(seed: int) -> TransferStats:
        link = SimLink(
            eu868(5),
            uplink_loss=IndependentLoss(0.3),
            downlink_loss=GilbertElliott.from_mean(0.3, 3.0),
            seed=seed,
        )
        return run_transfer(
            FakeDevice(payload_of(3000), 242, max_polls=20), FakeServer(), link, until=30 * DAY
        )

    first, again, other = once(11), once(11), once(12)
    assert first.finished
    assert first.frames == again.frames and first.as_dict() == again.as_dict()
    assert first.frames != other.frames


# -- budgets ------------------------------------------------------------------------------------


def test_fair_use_caps_uplink_airtime_per_day() -> None:
    profile = eu868(0)
    payload = payload_of(30 * 48)
    device, server = FakeDevice(payload, profile.mtu), FakeServer()
    link = SimLink(profile, fair_use=TTN_FAIR_USE)
    stats = run_transfer(device, server, link, until=10 * DAY)
    assert stats.finished and server.assembled() == payload
    per_day: dict[int, float] = {}
    for frame in uplinks(stats):
        day = int(frame.start_s // DAY)
        per_day[day] = per_day.get(day, 0.0) + frame.airtime_s
    assert max(per_day.values()) <= 30.0
    assert len(per_day) == 4  # 31 frames of up to 2.79 s, 10 a day
    assert stats.fair_use_deferrals == 3
    assert stats.duration_s > 3 * DAY


def test_fair_use_caps_downlinks_per_day() -> None:
    profile = eu868(5)
    device = FakeDevice(payload_of(20 * 239), profile.mtu, max_polls=1000)
    link = SimLink(profile, fair_use=TTN_FAIR_USE)
    stats = run_transfer(device, FakeServer(chatty=True), link, until=10 * DAY)
    assert stats.finished
    day0_up = [f for f in uplinks(stats) if f.start_s < DAY]
    day0_down = [f for f in downlinks(stats) if f.start_s < DAY]
    assert len(day0_up) > 10 and len(day0_down) == 10
    assert downlinks(stats)[10].start_s >= DAY


def test_gateway_duty_cycle_pushes_answers_to_rx2_then_silences_them() -> None:
    profile = eu868(5)

    def run(gateway_duty_cycle: bool) -> TransferStats:
        return run_transfer(
            FakeDevice(payload_of(12), mtu=4),  # 12 one-byte chunks in 4-byte uplinks
            FakeServer(chatty=True, downlink_size=40),
            SimLink(profile, gateway_duty_cycle=gateway_duty_cycle),
            until=DAY,
        )

    free = run(False)
    assert [f.window for f in downlinks(free)] == ["rx1"] * free.uplink_frames

    limited = run(True)
    assert limited.finished
    downs = downlinks(limited)
    windows = {f.window for f in downs}
    assert windows == {"rx1", "rx2"}
    assert len(downs) < limited.uplink_frames  # some uplinks found both windows closed
    for window, fraction in (("rx1", 0.01), ("rx2", 0.10)):
        sent = [f for f in downs if f.window == window]
        for earlier, later in zip(sent, sent[1:], strict=False):
            assert later.start_s >= earlier.start_s + earlier.airtime_s / fraction - 1e-9


# -- NB-IoT -------------------------------------------------------------------------------------


def test_nbiot_latency_order_and_no_duty_cycle() -> None:
    profile = NbIotProfile()
    payload = payload_of(5000)
    device, server = FakeDevice(payload, profile.mtu), FakeServer()
    stats = run_transfer(device, server, SimLink(profile, seed=5), until=DAY)
    assert stats.finished and server.assembled() == payload
    ups = uplinks(stats)
    assert len(ups) == 5 + 1
    for earlier, later in zip(ups, ups[1:], strict=False):
        assert later.start_s == pytest.approx(earlier.end_s)  # back to back
    arrivals = [t for t, _ in server.arrivals]
    assert [data for _, data in server.arrivals][:5] == [
        bytes([ord("D"), i, 5]) + payload[i * 1197 : (i + 1) * 1197] for i in range(5)
    ]
    previous = 0.0
    for frame, arrival in zip(ups, arrivals, strict=True):
        # 1-3 s of latency, or later when an earlier frame is still in the (in-order) pipe
        assert arrival - frame.end_s >= 1.0
        assert arrival - frame.end_s <= 3.0 or arrival == previous
        previous = arrival
    (ack,) = downlinks(stats)
    assert ack.window == "any"
    assert ack.start_s == pytest.approx(arrivals[-1])  # sent as soon as the poll arrived
    received_at = device.received[0][0]
    assert 1.0 <= received_at - ack.end_s <= 3.0
    assert stats.duration_s == pytest.approx(received_at)


def test_nbiot_server_that_never_stops_talking_is_an_error() -> None:
    device = FakeDevice(payload_of(100), 1200)
    with pytest.raises(LinkError, match="without end"):
        run_transfer(device, FakeServer(chatty=True), "nbiot", until=DAY)


# -- events, hooks, termination -----------------------------------------------------------------


def test_events_are_recorded_with_their_virtual_time_and_address() -> None:
    device, server = FakeDevice(payload_of(200), 242), FakeServer()
    stats = run_transfer(device, server, "lorawan-us915:dr3", device_addr="cam-7", until=DAY)
    assert stats.link == "lorawan-us915:dr3"
    assert server.devices == {"cam-7"}
    (ack,) = downlinks(stats)
    recorded = [(e.side, e.event, e.time_s) for e in stats.events]
    assert recorded == [
        ("server", ("complete", "cam-7"), pytest.approx(ack.start_s)),
        ("device", ("complete",), pytest.approx(ack.end_s)),
    ]


def test_a_frame_arriving_as_a_timer_expires_is_seen_first() -> None:
    profile = us915(3)

    class PunctualDevice(FakeDevice):
        """Times out on its one poll at the exact instant the RX1 answer ends."""

        def next_frame(self, now: float) -> bytes | None:
            frame = super().next_frame(now)
            if frame == b"P":
                self.timer = now + profile.uplink_airtime(1) + 1.0 + ack_airtime
            return frame

    ack_airtime = profile.downlink_airtime(2, "rx1")
    device = PunctualDevice(payload_of(10), profile.mtu, max_polls=1)
    stats = run_transfer(device, FakeServer(), profile, until=DAY)
    (ack,) = downlinks(stats)
    assert ack.end_s == device.received[0][0]
    assert stats.reason == "complete"  # not "gave up after 1 polls"


def test_a_hook_can_give_an_idle_device_work() -> None:
    idle = run_transfer(FakeDevice(b"", 51, announce=True), FakeServer(), eu868(0), until=DAY)
    assert (idle.ended_by, idle.uplink_frames, idle.duration_s) == ("idle", 0, 0.0)

    device, server = FakeDevice(b"", 51, announce=True), FakeServer()
    payload = payload_of(96)
    seen: list[tuple[str, object, float]] = []

    def hook(side: str, event: object, now: float) -> None:
        seen.append((side, event, now))
        if event == ("ready",):
            device.add_chunks(payload)

    stats = run_transfer(device, server, eu868(0), until=DAY, on_event=hook)
    assert stats.finished and server.assembled() == payload
    assert seen[0] == ("device", ("ready",), 0.0)
    assert [(e.side, e.event, e.time_s) for e in stats.events] == seen


def test_adversarial_link_is_survived_and_accounted_for() -> None:
    damage = Impairments(duplicate=0.2, reorder=0.2, truncate=0.1, bitflip=0.1)
    link = SimLink(
        eu868(5),
        uplink_loss=IndependentLoss(0.2),
        downlink_loss=IndependentLoss(0.2),
        uplink_impairments=damage,
        downlink_impairments=damage,
        seed=3,
    )
    device, server = FakeDevice(payload_of(4000), 242, max_polls=50), FakeServer()
    stats = run_transfer(device, server, link, until=30 * DAY)
    assert stats.ended_by == "finished"
    tags = {tag for frame in stats.frames for tag in frame.tags}
    assert tags == {"duplicate", "delayed", "truncated", "bitflip"}
    for records, received in (
        (uplinks(stats), server.arrivals),
        (downlinks(stats), device.received),
    ):
        delivered = sum(1 + ("duplicate" in f.tags) for f in records if not f.lost)
        assert len(received) == delivered


# -- misuse -------------------------------------------------------------------------------------


def test_oversized_uplink_is_a_link_error() -> None:
    with pytest.raises(LinkError, match="carries at most 51 bytes"):
        run_transfer(FakeDevice(payload_of(100), 60), FakeServer(), eu868(0), until=DAY)


def test_oversized_rx2_downlink_is_a_link_error() -> None:
    server = FakeServer(answer_after=1, downlink_size=60)  # fits RX1 at DR5, not RX2 at DR0
    with pytest.raises(LinkError, match="RX2 .* at most 51 bytes"):
        run_transfer(FakeDevice(payload_of(100), 242), server, eu868(5), until=DAY)


def test_uplink_over_the_dwell_time_is_a_link_error() -> None:
    too_generous = DataRate(0, LoRaModulation(10, 125_000), max_payload=20)
    profile = dataclasses.replace(us915(0), uplink=too_generous)
    with pytest.raises(LinkError, match="dwell time"):
        run_transfer(FakeDevice(payload_of(40), 20), FakeServer(), profile, until=DAY)


def test_a_timer_that_never_moves_is_reported_not_spun_on() -> None:
    class StuckDevice(FakeDevice):
        def get_timer(self) -> float | None:
            return 5.0

        def handle_timer(self, now: float) -> None:
            pass

    with pytest.raises(LinkError, match="no progress"):
        run_transfer(StuckDevice(b"", 51), FakeServer(), eu868(0), until=DAY)


def test_bad_arguments() -> None:
    with pytest.raises(LinkError):
        run_transfer(FakeDevice(b"", 51), FakeServer(), "lorawan-eu868:dr9", until=DAY)
    with pytest.raises(LinkError):
        run_transfer(FakeDevice(b"", 51), FakeServer(), eu868(0), start=10.0, until=5.0)
    with pytest.raises(LinkError):
        run_transfer(FakeDevice(b"", 51), FakeServer(), 42, until=DAY)  # type: ignore[arg-type]
    with pytest.raises(LinkError):
        SimLink(NbIotProfile(), fair_use=TTN_FAIR_USE)


# -- speed --------------------------------------------------------------------------------------


def test_hours_of_airtime_in_a_fraction_of_a_second() -> None:
    link = SimLink(
        eu868(0), uplink_loss=IndependentLoss(0.1), downlink_loss=IndependentLoss(0.1), seed=1
    )
    device, server = FakeDevice(payload_of(200 * 48), 51, max_polls=20), FakeServer()
    started = time.perf_counter()
    stats = run_transfer(device, server, link, until=30 * DAY)
    elapsed = time.perf_counter() - started
    assert stats.finished and stats.reason == "complete"
    assert stats.duration_s > 15 * 3600  # ~220 frames x 279 s of duty cycle
    assert elapsed < 2.0  # typically ~20 ms; generous for a loaded 2-core machine
