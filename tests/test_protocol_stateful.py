"""A device and a server driven over an adversarial class A link by a hypothesis state machine.

The link loses (up to 50 % each way), duplicates, reorders, truncates and bit-flips frames, and,
as on LoRaWAN class A, only lets a downlink through after an uplink the network heard. Rules
also let the server application stop or refine, the device application answer refinements,
the device reboot (and resume), and the server forget everything. Whatever happens:

- every layer the server delivers is exactly the bytes the device sent for that index, in
  index order (or nothing is delivered);
- the server never holds more than its configured bound for the session;
- both sides end, with a reason, within a virtual time bounded from the configuration;
- without corruption on the downlink, a device that reports "complete" was fully delivered.
"""

from __future__ import annotations

import contextlib
import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lpimg.errors import ProtocolError
from lpimg.protocol import (
    DeviceSession,
    LayerReceived,
    ProtocolConfig,
    Region,
    ServerProtocol,
    SessionStarted,
    SessionState,
)

DEV = "cam-7"
CONFIG = ProtocolConfig(
    ack_timeout=5.0,
    refine_timeout=40.0,
    idle_timeout=900.0,
    finished_retention=100.0,
    max_layer_bytes=1024,
    max_pending_refines=2,
)
UPLINK_TIME = 2.0
"""Virtual seconds one uplink and its receive windows take."""


class AdversarialLink:
    """Loss, duplication, reordering (a frame held back until the next one), truncation and
    single-bit flips, each with its own probability, from one seeded random stream."""

    def __init__(self, rng: random.Random, loss_up: float, loss_down: float, damage: float) -> None:
        self.rng = rng
        self.loss = {"up": loss_up, "down": loss_down}
        self.damage = damage
        self.held: dict[str, list[tuple[int, bytes]]] = {"up": [], "down": []}
        self.downlink_corrupted = False

    def carry(self, direction: str, frame: bytes | None) -> list[bytes]:
        """What reaches the far end now, given one frame sent (or None: nothing new).

        A reordered frame is held back and overtaken by the next one to three frames.
        """
        rng = self.rng
        arriving = [data for wait, data in self.held[direction] if wait <= 1]
        self.held[direction] = [(w - 1, d) for w, d in self.held[direction] if w > 1]
        if frame is not None and rng.random() >= self.loss[direction]:
            copies = [frame] * (2 if rng.random() < self.damage else 1)
            for copy in copies:
                copy = self._damage(direction, copy)
                if rng.random() < self.damage:
                    self.held[direction].append((rng.randint(1, 3), copy))
                else:
                    arriving.append(copy)
        return arriving

    def _damage(self, direction: str, frame: bytes) -> bytes:
        rng = self.rng
        if rng.random() < self.damage / 2:
            frame = frame[: rng.randrange(len(frame))]
            self.downlink_corrupted |= direction == "down"
        if frame and rng.random() < self.damage / 2:
            data = bytearray(frame)
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            frame = bytes(data)
            self.downlink_corrupted |= direction == "down"
        return frame


class Transfer(RuleBasedStateMachine):
    """One session between a DeviceSession and a ServerProtocol over an AdversarialLink."""

    @initialize(
        sizes=st.lists(st.integers(0, 600), min_size=1, max_size=4),
        mtu=st.sampled_from([11, 14, 24, 51, 115, 242, 1500]),
        loss_up=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.5, 1.0]),
        loss_down=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.5, 1.0]),
        damage=st.sampled_from([0.0, 0.0, 0.02, 0.1]),
        seed=st.integers(0, 2**32 - 1),
    )
    def start(
        self, sizes: list[int], mtu: int, loss_up: float, loss_down: float, damage: float, seed: int
    ) -> None:
        self.rng = random.Random(seed)
        self.mtu = mtu
        self.link = AdversarialLink(self.rng, loss_up, loss_down, damage)
        layers = [self.rng.randbytes(size) for size in sizes]
        self.device = DeviceSession(
            7, layers, mtu=mtu, now=0.0, geometry=(640, 480), config=CONFIG,
            manifest={"capture_time": 1_700_000_000},
        )
        self.server = ServerProtocol(CONFIG)
        self.now = 0.0
        self.uplinks = 0
        self.reboots = 0
        self.amnesias = 0
        self.delivered: dict[int, bytes] = {}
        self.next_expected = 0

    # -- time -------------------------------------------------------------------------------

    def step(self) -> None:
        """One uplink opportunity of the device, or a jump to the next timer."""
        device, server = self.device, self.server
        frame = None if device.finished else device.next_frame(self.now)
        if frame is None:
            # liveness: a device with nothing to send always has a timer running
            assert device.finished or device.get_timer() is not None, "device stalled"
            timers = [t for t in (device.get_timer(), server.get_timer()) if t is not None]
            self.now = max(self.now, min(timers)) if timers else self.now + 1000.0
        else:
            assert len(frame) <= self.mtu
            self.uplinks += 1
            heard = self.link.carry("up", frame)
            for data in heard:
                server.receive_frame(DEV, data, self.now)
                self.memory_is_bounded()
            self.collect()
            answer = server.next_frame(DEV, self.now + 1.0) if heard else None
            for data in self.link.carry("down", answer) if heard else []:
                device.receive_frame(data, self.now + 1.0)
            self.now += UPLINK_TIME
        for core in (device, server):
            timer = core.get_timer()
            if timer is not None and timer <= self.now:
                core.handle_timer(self.now)
        self.collect()
        self.memory_is_bounded()

    def collect(self) -> None:
        while (event := self.server.next_event()) is not None:
            if isinstance(event, SessionStarted):
                self.next_expected = 0  # a new session (the server may have forgotten one)
            if isinstance(event, LayerReceived):
                assert event.index == self.next_expected, "layers out of order"
                assert event.data == self.device.layers[event.index], "wrong bytes delivered"
                self.delivered[event.index] = event.data
                self.next_expected += 1
        while self.device.next_event() is not None:
            pass

    # -- rules ------------------------------------------------------------------------------

    @rule(steps=st.integers(1, 40))
    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    @rule()
    def server_stops(self) -> None:
        info = self.server.session(DEV)
        if info is not None and info.state is SessionState.ACTIVE and info.layers_delivered:
            self.server.stop(DEV, self.now)
            self.collect()

    @rule(
        region=st.none() | st.builds(Region, st.just(1), st.just(2), st.integers(1, 9), st.just(3)),
        pass_index=st.integers(0, 20),
    )
    def server_refines(self, region: Region | None, pass_index: int) -> None:
        with contextlib.suppress(ProtocolError):  # no active session, or requests pending
            self.server.refine(DEV, region, pass_index, now=self.now)

    @rule(count=st.integers(0, 2), size=st.integers(0, 300))
    def device_answers_refine(self, count: int, size: int) -> None:
        if self.device.refine_pending is not None and not self.device.finished:
            self.device.add_layers([self.rng.randbytes(size) for _ in range(count)], first_pass=5)

    @precondition(lambda self: self.reboots < 2)
    @rule()
    def device_reboots(self) -> None:
        old = self.device
        if old.finished:
            return
        self.reboots += 1
        self.device = DeviceSession.resume(
            old.session_id, old.layers, mtu=self.mtu, now=self.now, geometry=(640, 480),
            config=CONFIG, manifest={"capture_time": 1_700_000_000},
            added_groups=old.added_groups,
        )

    @precondition(lambda self: self.amnesias < 1)
    @rule()
    def server_forgets_everything(self) -> None:
        self.amnesias += 1
        self.collect()
        self.server = ServerProtocol(CONFIG)
        self.next_expected = 0

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def memory_is_bounded(self) -> None:
        info = self.server.session(DEV)
        if info is not None:
            assert info.held_bytes <= CONFIG.session_memory_bound(info.fragment_size)
            if info.state is not SessionState.ACTIVE:
                assert info.held_bytes == 0

    @invariant()
    def device_state_is_consistent(self) -> None:
        if self.device.finished:
            assert self.device.reason
        assert self.device.acknowledged_layers <= self.device.layer_count

    # -- the end ----------------------------------------------------------------------------

    def teardown(self) -> None:
        if not hasattr(self, "device"):
            return
        # A bound derived from the configuration: every fragment at most max_attempts times,
        # a round of polls (ack_timeout apart) per step of progress, one refine_timeout per
        # refinement, all of it again for each restart.
        refines = CONFIG.max_pending_refines + 2
        fragments = self.device.fragment_count + refines * (1 + 2 * 300 // (self.mtu - 2) + 2)
        progress_steps = fragments + self.device.layer_count + 2 * refines + 2
        polls = progress_steps * (CONFIG.max_stalled_polls + CONFIG.max_polls)
        uplinks = (fragments * CONFIG.max_attempts + polls) * (CONFIG.max_restarts + 2)
        bound = self.now + uplinks * (UPLINK_TIME + CONFIG.ack_timeout)
        bound += refines * CONFIG.refine_timeout
        while not self.device.finished:
            assert self.now <= bound, f"device still running at t={self.now}"
            self.step()
            if self.device.refine_pending is not None and self.rng.random() < 0.5:
                self.device.add_layers([self.rng.randbytes(40)], first_pass=5)
        assert self.device.reason
        # the server ends too: at the latest idle_timeout after the device's last frame
        deadline = self.now + CONFIG.idle_timeout + 1
        while (timer := self.server.get_timer()) is not None and timer <= deadline:
            self.now = max(self.now, timer)
            self.server.handle_timer(self.now)
            self.collect()
        info = self.server.session(DEV)
        assert info is None or info.state is not SessionState.ACTIVE
        if self.device.reason == "complete" and not self.link.downlink_corrupted:
            assert sorted(self.delivered) == list(range(self.device.layer_count))


TestTransfer = Transfer.TestCase
TestTransfer.settings = settings(
    max_examples=200,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
