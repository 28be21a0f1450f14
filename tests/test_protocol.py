"""lpimg.protocol: the device and server cores over scripted links."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from lpimg.errors import ProtocolError
from lpimg.protocol import (
    RECEIVE_SPAN,
    Aborted,
    AbortReason,
    DeviceSession,
    LayerReceived,
    LayersAcknowledged,
    LayersAnnounced,
    ProtocolConfig,
    RefineRequested,
    Region,
    ServerProtocol,
    SessionCompleted,
    SessionResumed,
    SessionStarted,
    SessionState,
    Stopped,
    run_loopback,
)
from lpimg.wire import (
    AckFrame,
    DataFrame,
    LayerCompleteFrame,
    PollFrame,
    RefineFrame,
    ResumeFrame,
    ServerAbortFrame,
    StartFrame,
    StopFrame,
    build_downlink,
    build_uplink,
    parse_downlink,
    parse_uplink,
)

DEV = "dev-1"


def layers_of(*sizes: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for size in sizes]


@dataclass
class Link:
    """A scripted class A link: uplinks/downlinks can be dropped by their sequence number or
    by a predicate, and every frame is kept for assertions."""

    device: DeviceSession
    server: ServerProtocol
    drop_up: Callable[[int, bytes], bool] = lambda n, f: False
    drop_down: Callable[[int, bytes], bool] = lambda n, f: False
    on_event: Callable[[str, object], None] | None = None
    now: float = 0.0
    up: list[bytes] = field(default_factory=list)
    down: list[bytes] = field(default_factory=list)
    events: list[tuple[str, object]] = field(default_factory=list)

    def drain(self) -> None:
        for side, source in (("device", self.device), ("server", self.server)):
            while (event := source.next_event()) is not None:
                self.events.append((side, event))
                if self.on_event is not None:
                    self.on_event(side, event)

    def step(self) -> bool:
        """One uplink opportunity; False when nothing can happen any more."""
        self.drain()
        if self.device.finished:
            return False
        frame = self.device.next_frame(self.now)
        if frame is None:
            timers = [t for t in (self.device.get_timer(), self.server.get_timer()) if t]
            if not timers:
                return False
            self.now = max(self.now, min(timers))
            self.device.handle_timer(self.now)
            self.server.handle_timer(self.now)
            return True
        number = len(self.up)
        self.up.append(frame)
        if not self.drop_up(number, frame):
            self.server.receive_frame(DEV, frame, self.now)
            self.drain()
            answer = self.server.next_frame(DEV, self.now + 1)
            if answer is not None:
                index = len(self.down)
                self.down.append(answer)
                if not self.drop_down(index, answer):
                    self.device.receive_frame(answer, self.now + 1)
        self.now += 3.0
        return True

    def run(self, limit: int = 50_000) -> Link:
        for _ in range(limit):
            if not self.step():
                break
        self.drain()
        return self

    def server_events(self, kind: type) -> list:
        return [e for side, e in self.events if side == "server" and isinstance(e, kind)]

    def device_events(self, kind: type) -> list:
        return [e for side, e in self.events if side == "device" and isinstance(e, kind)]

    def received(self) -> list[bytes]:
        return [e.data for e in self.server_events(LayerReceived)]

    def data_indices(self) -> list[int]:
        frames = [parse_uplink(f) for f in self.up]
        return [f.index for f in frames if isinstance(f, DataFrame)]


def transfer(layers: list[bytes], mtu: int, **kwargs: object) -> Link:
    config = kwargs.pop("config", None) or ProtocolConfig()
    device = DeviceSession(1, layers, mtu=mtu, now=0.0, config=config, **kwargs)  # type: ignore[arg-type]
    return Link(device, ServerProtocol(config))


# -- the efficiency targets --------------------------------------------------------------------


@pytest.mark.parametrize(("mtu", "max_up", "max_down"), [(51, 42, 2), (242, 9, 2)])
def test_a_2001_byte_layer_meets_the_frame_targets(mtu: int, max_up: int, max_down: int) -> None:
    layers = layers_of(2001)
    link = transfer(layers, mtu).run()
    assert link.device.reason == "complete"
    assert link.received() == layers
    assert len(link.up) <= max_up
    assert len(link.down) <= max_down
    assert all(len(frame) <= mtu for frame in link.up)


def test_the_frame_count_arithmetic_at_51_bytes() -> None:
    """Group 0 = 13-byte descriptor + 2005-byte layer record = 2018 bytes; the start carries
    F0 = 51 - 5 = 46 of them, and 41 data fragments of F = 49 carry the other 1972."""
    link = transfer(layers_of(2001), 51).run()
    assert link.device.fragment_count == 42
    assert len(parse_uplink(link.up[0]).chunk) == 46  # type: ignore[union-attr]
    assert [len(f) for f in link.down] == [2, 2]  # one ACK per window of 32, then complete


@pytest.mark.parametrize("mtu", [11, 12, 13, 20, 51, 115, 222, 242, 1000, 1500])
def test_any_mtu_delivers_exact_bytes(mtu: int) -> None:
    layers = layers_of(0, 1, 300, 2500, seed=mtu)
    link = transfer(layers, mtu).run()
    assert link.device.reason == "complete"
    assert link.received() == layers
    assert all(len(frame) <= mtu for frame in link.up)
    assert link.device.fragment_count == len(link.up)  # nothing sent twice without loss


def test_mtu_outside_the_specified_range_is_refused() -> None:
    for mtu in (10, 1501):
        with pytest.raises(ProtocolError):
            DeviceSession(1, [b"x"], mtu=mtu, now=0)


def test_events_on_a_clean_transfer() -> None:
    layers = layers_of(10, 20, 30)
    link = transfer(
        layers, 51, model_id=3, geometry=(320, 240), manifest={"capture_time": 1_700_000_000}
    ).run()
    (started,) = link.server_events(SessionStarted)
    assert (started.model_id, started.geometry, started.layer_sizes) == (3, (320, 240), (10, 20, 30))
    assert started.manifest.capture_time == 1_700_000_000
    received = link.server_events(LayerReceived)
    assert [(e.index, e.pass_index, e.region) for e in received] == [(0, 0, None), (1, 1, None), (2, 2, None)]
    assert link.server_events(SessionCompleted) == [SessionCompleted(DEV, 1, 3)]
    assert link.device_events(SessionCompleted) == [SessionCompleted(None, 1, 3)]
    assert link.device_events(LayersAcknowledged)[-1].count == 3
    assert link.server.session(DEV).state is SessionState.COMPLETE  # type: ignore[union-attr]


def test_a_whole_stream_in_the_start_frame_asks_for_its_ack() -> None:
    link = transfer([b"tiny"], 242).run()
    assert len(link.up) == 1 and link.device.reason == "complete"
    assert parse_uplink(link.up[0]).ack  # type: ignore[union-attr]


def test_ack_each_layer_requests_more_downlinks() -> None:
    layers = layers_of(100, 100, 100)
    plain = transfer(layers, 51).run()
    eager = transfer(layers, 51, config=ProtocolConfig(ack_each_layer=True)).run()
    assert len(plain.down) == 1
    assert len(eager.down) == 3
    assert eager.received() == layers


def test_same_inputs_give_the_same_frames() -> None:
    def frames() -> list[bytes]:
        link = transfer(layers_of(700, 50), 24)
        link.drop_up = lambda n, f: n % 5 == 3
        return link.run().up

    assert frames() == frames()


# -- loss, selective retransmission, polls -----------------------------------------------------


def test_only_lost_fragments_are_sent_again() -> None:
    layers = layers_of(2001)
    link = transfer(layers, 51)
    lost = {3, 17, 33}
    seen: set[int] = set()

    def drop_first_copy(n: int, frame: bytes) -> bool:
        index = getattr(parse_uplink(frame), "index", None)
        if index in lost and index not in seen:
            seen.add(index)
            return True
        return False

    link.drop_up = drop_first_copy
    link.run()
    assert link.received() == layers
    indices = link.data_indices()
    repeated = sorted(i for i in set(indices) if indices.count(i) > 1)
    assert repeated == sorted(lost)
    assert link.device.stats.retransmissions == len(lost)


def test_a_lost_ack_is_recovered_by_a_poll() -> None:
    config = ProtocolConfig(ack_timeout=30.0)
    link = transfer(layers_of(300), 51, config=config)
    link.drop_down = lambda n, f: n == 0
    link.run()
    assert link.device.reason == "complete"
    assert link.device.stats.polls == 1
    assert parse_uplink(link.up[-1]) == PollFrame()


def test_the_device_polls_no_earlier_than_the_ack_timeout() -> None:
    device = DeviceSession(1, layers_of(300), mtu=51, now=0.0, config=ProtocolConfig(ack_timeout=20))
    sent_at = 0.0
    while (frame := device.next_frame(sent_at)) is not None:
        sent_at += 1
    assert parse_uplink(frame or b"\x80\x00x") is not None
    deadline = device.get_timer()
    assert deadline == pytest.approx(sent_at - 1 + 20)
    device.handle_timer(deadline - 0.5)  # type: ignore[operator]
    assert device.next_frame(deadline - 0.5) is None  # type: ignore[operator]
    device.handle_timer(deadline)  # type: ignore[arg-type]
    assert device.next_frame(deadline) == build_uplink(PollFrame())  # type: ignore[arg-type]


def test_no_downlink_at_all_gives_up_after_bounded_polls() -> None:
    config = ProtocolConfig(max_polls=5)
    link = transfer(layers_of(500), 51, config=config)
    link.drop_down = lambda n, f: True
    link.run()
    assert link.device.finished
    assert link.device.reason == "gave up after 5 polls without an answer"
    assert link.device.stats.polls == 5
    assert parse_uplink(link.up[-1]).reason is AbortReason.TOO_MANY_RETRIES  # type: ignore[union-attr]
    (aborted,) = link.device_events(Aborted)
    assert aborted.code is AbortReason.TOO_MANY_RETRIES


def test_no_uplink_at_all_gives_up_in_bounded_time() -> None:
    config = ProtocolConfig(max_polls=4, ack_timeout=10)
    link = transfer(layers_of(3000), 51, config=config)
    link.drop_up = lambda n, f: True
    link.run()
    assert link.device.reason == "gave up after 4 polls without an answer"
    # never more than one receive span ahead of the last ACK (none here)
    assert max(link.data_indices()) < RECEIVE_SPAN
    assert link.now < 1000


def test_a_fragment_that_never_arrives_exhausts_its_attempts() -> None:
    link = transfer(layers_of(400), 51, config=ProtocolConfig(max_attempts=3))
    link.drop_up = lambda n, f: getattr(parse_uplink(f), "index", None) == 4
    link.run()
    assert link.device.reason == "gave up: fragment 4 sent 3 times without being acknowledged"
    assert link.received() == []


def test_a_lost_start_is_answered_unknown_session_and_sent_again() -> None:
    layers = layers_of(500)
    link = transfer(layers, 51)
    link.drop_up = lambda n, f: n == 0
    link.run()
    assert link.device.reason == "complete"
    assert link.received() == layers
    assert parse_downlink(link.down[0]) == ServerAbortFrame(AbortReason.UNKNOWN_SESSION)
    starts = [f for f in link.up if isinstance(parse_uplink(f), StartFrame)]
    assert len(starts) == 2
    assert link.device.stats.restarts == 1


def test_a_server_that_forgot_the_session_is_served_again_then_refused() -> None:
    layers = layers_of(2000)
    config = ProtocolConfig(max_restarts=1)
    link = transfer(layers, 51, config=config)

    def run_until_acknowledged() -> None:
        count = len(link.down)
        while not any(isinstance(parse_downlink(f), AckFrame) for f in link.down[count:]):
            link.step()

    run_until_acknowledged()
    link.server = ServerProtocol(config)  # a server restart: it forgot the session
    while link.device.stats.restarts < 1:
        link.step()
    run_until_acknowledged()  # served again from the start
    link.server = ServerProtocol(config)
    link.run()
    assert link.device.reason == "aborted: unknown session"
    assert link.device.stats.restarts == 1


# -- CRC -------------------------------------------------------------------------------------


def test_a_corrupted_fragment_fails_the_crc_and_the_layer_is_sent_again() -> None:
    layers = layers_of(600, 100)
    link = transfer(layers, 51)
    original = link.server.receive_frame

    def corrupt(device: str, data: bytes, now: float) -> None:
        frame = parse_uplink(data)
        if isinstance(frame, DataFrame) and frame.index == 5 and not corrupt.done:  # type: ignore[attr-defined]
            corrupt.done = True  # type: ignore[attr-defined]
            data = data[:-1] + bytes([data[-1] ^ 0x10])
        original(device, data, now)

    corrupt.done = False  # type: ignore[attr-defined]
    link.server.receive_frame = corrupt  # type: ignore[method-assign]
    link.run()
    assert link.server.stats.crc_failures == 1
    assert link.received() == layers
    assert link.device.reason == "complete"
    repeated = {i for i in link.data_indices() if link.data_indices().count(i) > 1}
    assert 5 in repeated and len(repeated) >= 10  # the whole first layer came again


def test_repeated_crc_failures_abort_the_session() -> None:
    config = ProtocolConfig(max_crc_failures=2)
    link = transfer(layers_of(600), 51, config=config)
    original = link.server.receive_frame

    def corrupt(device: str, data: bytes, now: float) -> None:
        frame = parse_uplink(data)
        if isinstance(frame, DataFrame) and frame.index == 5:
            data = data[:-1] + bytes([data[-1] ^ 0x10])
        original(device, data, now)

    link.server.receive_frame = corrupt  # type: ignore[method-assign]
    link.run()
    assert link.device.reason == "aborted: corrupted"
    assert link.received() == []
    (aborted,) = link.server_events(Aborted)
    assert aborted.code is AbortReason.CORRUPTED


# -- stop, refine, abort ------------------------------------------------------------------------


def test_stop_ends_both_sides() -> None:
    layers = layers_of(300, 300, 300, 300)
    link = transfer(layers, 51)

    def on_event(side: str, event: object) -> None:
        if isinstance(event, LayerReceived) and event.index == 1:
            link.server.stop(DEV, link.now)

    link.on_event = on_event
    link.run()
    assert link.device.reason == "stopped"
    assert link.received() == layers[:2]
    assert link.server_events(Stopped) == [Stopped(DEV, 1)]
    assert link.device_events(Stopped) == [Stopped(None, 1)]
    assert StopFrame() in [parse_downlink(f) for f in link.down]
    with pytest.raises(ProtocolError):
        link.server.stop(DEV, link.now)


def test_refine_adds_layers_for_a_region() -> None:
    layers = layers_of(400, 400)
    extra = layers_of(150, 60, seed=9)
    link = transfer(layers, 51, geometry=(320, 240))
    region = Region(2, 3, 4, 5)

    def on_event(side: str, event: object) -> None:
        if side == "server" and isinstance(event, LayerReceived) and event.index == 0:
            link.server.refine(DEV, region, pass_index=7, priority=2, now=link.now)
        if side == "device" and isinstance(event, RefineRequested):
            assert (event.region, event.pass_index, event.priority) == (region, 7, 2)
            link.device.add_layers(extra, first_pass=6)

    link.on_event = on_event
    link.run()
    assert link.device.reason == "complete"
    assert link.received() == layers + extra
    (announced,) = link.server_events(LayersAnnounced)
    assert (announced.first_index, announced.layer_sizes) == (2, (150, 60))
    assert (announced.region, announced.first_pass) == (region, 6)
    received = link.server_events(LayerReceived)
    assert [(e.pass_index, e.region) for e in received[2:]] == [(6, region), (7, region)]
    assert link.server_events(SessionCompleted)[0].layer_count == 4
    assert RefineFrame(0, region, 7, 2) in [parse_downlink(f) for f in link.down]


def test_a_refine_the_application_ignores_is_declined_after_the_timeout() -> None:
    config = ProtocolConfig(refine_timeout=100.0)
    link = transfer(layers_of(200, 200), 51, config=config)

    def on_event(side: str, event: object) -> None:
        if side == "server" and isinstance(event, LayerReceived) and event.index == 0:
            link.server.refine(DEV, None, 3, now=link.now)

    link.on_event = on_event
    link.run()
    assert link.device.reason == "complete"
    (announced,) = link.server_events(LayersAnnounced)
    assert announced.layer_sizes == ()
    assert len(link.received()) == 2


def test_refine_requests_are_answered_in_order() -> None:
    link = transfer(layers_of(300), 51)
    asked: list[int] = []

    def on_event(side: str, event: object) -> None:
        if side == "server" and isinstance(event, SessionStarted):
            link.server.refine(DEV, Region(0, 0, 1, 1), 4, now=link.now)
            link.server.refine(DEV, Region(1, 1, 1, 1), 5, now=link.now)
        if side == "device" and isinstance(event, RefineRequested):
            asked.append(event.pass_index)
            link.device.add_layers([bytes([event.pass_index]) * 30])

    link.on_event = on_event
    link.run()
    assert asked == [4, 5]
    assert link.received()[1:] == [b"\x04" * 30, b"\x05" * 30]
    regions = [e.region for e in link.server_events(LayersAnnounced)]
    assert regions == [Region(0, 0, 1, 1), Region(1, 1, 1, 1)]


def test_layers_cannot_be_added_unasked() -> None:
    device = DeviceSession(1, [b"x"], mtu=51, now=0)
    with pytest.raises(ProtocolError, match="refine"):
        device.add_layers([b"more"])


def test_a_completed_session_cannot_be_refined() -> None:
    link = transfer(layers_of(50), 51).run()
    with pytest.raises(ProtocolError):
        link.server.refine(DEV, None, 1, now=link.now)


def test_the_server_application_can_reject_a_session() -> None:
    link = transfer(layers_of(500), 51, model_id=99)

    def on_event(side: str, event: object) -> None:
        if isinstance(event, SessionStarted) and event.model_id == 99:
            link.server.abort(DEV, AbortReason.REJECTED, link.now)

    link.on_event = on_event
    link.run()
    assert link.device.reason == "aborted: rejected"
    (aborted,) = link.device_events(Aborted)
    assert aborted.by_peer and aborted.code is AbortReason.REJECTED


def test_a_device_abort_reaches_the_server() -> None:
    link = transfer(layers_of(500), 51)
    for _ in range(3):
        link.step()
    link.device.abort()
    assert not link.device.finished  # the abort frame is still to be handed out
    link.run()
    assert link.device.finished and link.device.reason == "aborted: cancelled"
    (aborted,) = link.server_events(Aborted)
    assert aborted.by_peer and aborted.code is AbortReason.CANCELLED
    assert link.server.session(DEV).state is SessionState.ABORTED  # type: ignore[union-attr]


# -- resume after a reboot ---------------------------------------------------------------------


def test_resume_sends_only_what_the_server_lacks() -> None:
    layers = layers_of(2001)
    link = transfer(layers, 51)
    link.drop_up = lambda n, f: n in (10, 11)
    for _ in range(25):
        link.step()
    assert link.received() == []
    link.device = DeviceSession.resume(1, layers, mtu=51, now=link.now)
    link.drop_up = lambda n, f: False
    before = len(link.up)
    link.run()
    assert link.device.reason == "complete"
    assert link.received() == layers
    after = [parse_uplink(f) for f in link.up[before:]]
    assert after[0] == ResumeFrame(1)
    resent = sorted(f.index for f in after if isinstance(f, DataFrame))
    assert resent == [10, 11, *range(25, 42)]
    assert link.server_events(SessionResumed) == [SessionResumed(DEV, 1)]


def test_resume_rebuilds_refine_groups() -> None:
    layers = layers_of(300, 300)
    link = transfer(layers, 51)
    added = layers_of(200, seed=4)

    def on_event(side: str, event: object) -> None:
        if side == "server" and isinstance(event, LayerReceived) and event.index == 0:
            link.server.refine(DEV, Region(1, 1, 2, 2), 9, now=link.now)
        if side == "device" and isinstance(event, RefineRequested):
            link.device.add_layers(added, first_pass=8)

    link.on_event = on_event
    while not link.device.added_groups:
        link.step()
    link.step()
    stored = (link.device.layers, link.device.added_groups, link.device.fragment_count)
    link.on_event = None
    link.device = DeviceSession.resume(1, stored[0], mtu=51, now=link.now, added_groups=stored[1])
    assert link.device.fragment_count == stored[2]
    link.run()
    assert link.device.reason == "complete"
    assert link.received() == layers + added


def test_resume_of_a_session_the_server_never_saw_starts_it() -> None:
    layers = layers_of(100)
    device = DeviceSession.resume(5, layers, mtu=51, now=0.0)
    link = Link(device, ServerProtocol()).run()
    assert link.device.reason == "complete"
    assert link.received() == layers
    assert parse_downlink(link.down[0]) == ServerAbortFrame(AbortReason.UNKNOWN_SESSION)


def test_resume_of_a_completed_session_completes_at_once() -> None:
    layers = layers_of(100)
    link = transfer(layers, 51).run()
    link.device = DeviceSession.resume(1, layers, mtu=51, now=link.now)
    link.run()
    assert link.device.reason == "complete"
    assert len(link.received()) == 1
    assert parse_downlink(link.down[-1]) == LayerCompleteFrame(1)


# -- the server's bad-input handling and limits ---------------------------------------------------


def test_frames_for_an_unknown_session_get_an_abort_with_a_reason() -> None:
    server = ServerProtocol()
    for frame in (PollFrame(), ResumeFrame(3), DataFrame(4, b"x", ack=True)):
        server.receive_frame("stranger", build_uplink(frame), 0.0)
        assert server.next_frame("stranger", 1.0) == build_downlink(
            ServerAbortFrame(AbortReason.UNKNOWN_SESSION)
        )
        assert server.next_frame("stranger", 2.0) is None  # one answer per uplink
    assert server.stats.unknown_session == 3
    assert server.devices() == []


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x80\x00", b"\x50\x01", b"\x11\x00", b"\xff" * 300, bytes(range(256))],
)
def test_malformed_uplinks_are_counted_and_dropped(data: bytes) -> None:
    server = ServerProtocol()
    server.receive_frame(DEV, data, 0.0)
    assert server.stats.malformed == 1
    assert server.next_frame(DEV, 1.0) is None
    assert server.next_event() is None


def test_malformed_downlinks_are_counted_and_dropped() -> None:
    device = DeviceSession(1, [b"x" * 100], mtu=51, now=0)
    device.next_frame(0.0)
    for data in (b"", b"\xe0", b"\x40\x00", b"\x00\x01\x00"):
        device.receive_frame(data, 1.0)
    assert device.stats.malformed == 4
    assert not device.finished
    device.receive_frame(build_downlink(LayerCompleteFrame(9)), 1.0)  # more layers than announced
    assert device.stats.unexpected == 1


def test_an_unsupported_version_is_refused() -> None:
    server = ServerProtocol()
    server.receive_frame(DEV, build_uplink(StartFrame(1, 49, b"x", version=2)), 0.0)
    assert parse_downlink(server.next_frame(DEV, 1.0) or b"") == ServerAbortFrame(
        AbortReason.UNSUPPORTED_VERSION
    )
    assert server.devices() == []


def test_a_too_small_fragment_size_is_refused() -> None:
    server = ServerProtocol()
    server.receive_frame(DEV, build_uplink(StartFrame(1, 4, b"x")), 0.0)
    assert parse_downlink(server.next_frame(DEV, 1.0) or b"") == ServerAbortFrame(
        AbortReason.LIMIT_EXCEEDED
    )


def test_the_server_enforces_its_layer_limit() -> None:
    link = Link(
        DeviceSession(1, layers_of(3000), mtu=51, now=0.0),
        ServerProtocol(ProtocolConfig(max_layer_bytes=1000)),
    ).run()
    assert link.device.reason == "aborted: limit exceeded"
    assert link.server.session(DEV).state is SessionState.ABORTED  # type: ignore[union-attr]


def test_the_device_refuses_what_the_limits_forbid() -> None:
    config = ProtocolConfig(max_layer_bytes=100, max_layers=2)
    with pytest.raises(ProtocolError, match="max_layer_bytes"):
        DeviceSession(1, [b"x" * 101], mtu=51, now=0, config=config)
    with pytest.raises(ProtocolError, match="layers"):
        DeviceSession(1, [b"x"] * 3, mtu=51, now=0, config=config)
    with pytest.raises(ProtocolError, match="fragments"):
        DeviceSession(1, [bytes(65536)] * 3, mtu=11, now=0)
    with pytest.raises(ProtocolError, match="manifest"):
        DeviceSession(1, [b"x"], mtu=51, now=0, manifest={"note": "x" * 600})
    with pytest.raises(ProtocolError, match="at least one"):
        DeviceSession(1, [], mtu=51, now=0)


def test_a_full_server_refuses_then_evicts_finished_sessions() -> None:
    config = ProtocolConfig(max_sessions=2)
    server = ServerProtocol(config)
    for name in ("a", "b"):
        server.receive_frame(name, build_uplink(StartFrame(1, 49, b"x" * 46)), 0.0)
        server.next_frame(name, 0.5)
    server.receive_frame("c", build_uplink(StartFrame(1, 49, b"x" * 46)), 1.0)
    assert parse_downlink(server.next_frame("c", 1.5) or b"") == ServerAbortFrame(
        AbortReason.SERVER_FULL
    )
    server.stop("a", 2.0)
    server.receive_frame("c", build_uplink(StartFrame(1, 49, b"x" * 46)), 3.0)
    assert sorted(server.devices()) == ["b", "c"]
    assert server.stats.sessions_evicted == 1


def test_idle_sessions_end_and_finished_ones_are_forgotten() -> None:
    config = ProtocolConfig(idle_timeout=100.0, finished_retention=50.0)
    link = transfer(layers_of(2001), 51, config=config)
    for _ in range(5):
        link.step()
    server = link.server
    assert server.get_timer() == pytest.approx(link.now - 3 + 100)
    server.handle_timer(link.now + 200)
    (aborted,) = [e for e in iter(server.next_event, None) if isinstance(e, Aborted)]
    assert aborted.code is AbortReason.IDLE_TIMEOUT
    server.handle_timer(link.now + 300)
    assert server.devices() == []
    assert server.get_timer() is None


def test_an_idle_session_with_everything_delivered_counts_as_complete() -> None:
    link = transfer(layers_of(20), 51, config=ProtocolConfig(idle_timeout=10.0))
    link.drop_down = lambda n, f: True
    link.step()  # the only uplink (the whole stream fits the start); its answer is lost
    link.server.handle_timer(link.now + 20)
    events = list(iter(link.server.next_event, None))
    assert SessionCompleted(DEV, 1, 1) in events


def test_server_memory_stays_within_its_bound() -> None:
    config = ProtocolConfig(max_layer_bytes=20_000)
    layers = layers_of(20_000, 20_000)
    link = transfer(layers, 51, config=config)
    rng = random.Random(3)
    link.drop_up = lambda n, f: rng.random() < 0.3
    peak = 0
    while link.step():
        info = link.server.session(DEV)
        if info is not None:
            peak = max(peak, info.held_bytes)
    assert link.received() == layers
    assert 0 < peak <= config.session_memory_bound(49)
    assert link.server.session(DEV).held_bytes == 0  # type: ignore[union-attr]


def test_one_downlink_per_uplink() -> None:
    device = DeviceSession(1, layers_of(1000), mtu=51, now=0)
    server = ServerProtocol()
    server.receive_frame(DEV, device.next_frame(0.0) or b"", 0.0)
    for index in range(1, 40):
        frame = device.next_frame(float(index)) or b""
        server.receive_frame(DEV, frame, float(index))
        answers = [server.next_frame(DEV, index + 0.5) for _ in range(3)]
        assert answers[1:] == [None, None]


# -- the loopback helper ------------------------------------------------------------------------


def test_run_loopback_runs_a_transfer() -> None:
    layers = layers_of(999, 1)
    device = DeviceSession(2, layers, mtu=115, now=0.0)
    transcript = run_loopback(device, ServerProtocol(), address=DEV)
    received = [e.data for side, e in transcript.events if isinstance(e, LayerReceived)]
    assert received == layers
    assert len(transcript.uplinks) == device.fragment_count
    assert [d for direction, d in transcript.frames if direction == "down"] == transcript.downlinks


def _ack(next_index: int, held: Iterable[int] = ()) -> bytes:
    return build_downlink(AckFrame.from_received(next_index, held, 8))


def test_an_ack_only_marks_missing_what_was_sent_before_the_request() -> None:
    device = DeviceSession(1, layers_of(3000), mtu=51, now=0, config=ProtocolConfig(window=4))
    sent = [parse_uplink(device.next_frame(float(t)) or b"") for t in range(6)]
    assert [getattr(f, "ack", False) for f in sent] == [False, False, False, True, False, False]
    # the answer to the request on fragment 3, arriving after 4 and 5 went out
    device.receive_frame(_ack(2, [3]), 6.0)
    assert parse_uplink(device.next_frame(7.0) or b"") == DataFrame(2, sent[2].payload)  # type: ignore[union-attr]
    following = parse_uplink(device.next_frame(8.0) or b"")
    assert isinstance(following, DataFrame) and following.index == 6


def test_a_lost_start_on_a_fast_link_restarts_once() -> None:
    # MQTT or serial: the device sends several fragments before any answer comes back; each
    # one draws an "unknown session" abort, but only the first may restart the session
    layers = layers_of(2000)
    device = DeviceSession(7, layers, mtu=51, now=0.0)
    server = ServerProtocol()
    now = 0.0
    burst = [device.next_frame(now) for _ in range(6)]  # START (lost) and 5 fragments
    answers = []
    for frame in burst[1:]:
        server.receive_frame("dev", frame, now)
        answers.append(server.next_frame("dev", now))
    assert all(parse_downlink(a) == ServerAbortFrame(AbortReason.UNKNOWN_SESSION) for a in answers)
    for answer in answers:  # they arrive while the new start is queued, then just after it
        device.receive_frame(answer, now)
        if device._need_start:
            server.receive_frame("dev", device.next_frame(now), now)
    assert device.stats.restarts == 1 and not device.finished
    for _ in range(5000):  # then a perfect link to the end
        now += 1.0
        timer = device.get_timer()
        if timer is not None and timer <= now:
            device.handle_timer(now)
        frame = device.next_frame(now)
        if frame is not None:
            server.receive_frame("dev", frame, now)
            answer = server.next_frame("dev", now)
            if answer is not None:
                device.receive_frame(answer, now)
        if device.finished:
            break
    assert device.reason == "complete"
    assert device.stats.restarts == 1
