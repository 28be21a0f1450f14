"""The whole system under attack: Device and Server endpoints over sim:// on the virtual clock,
driven by a hypothesis state machine.

Unlike tests/test_protocol_stateful.py (the sans-I/O cores alone), this runs the asyncio
endpoints with the codec, the device's session store and the simulated LoRaWAN link (airtime,
duty cycle, class A windows). The link loses up to 50 % each way and duplicates, reorders,
truncates and bit-flips what it carries; rules let time pass, reboot the device (a new
``Device`` resuming from its store), restart the server (a fresh ``Server``, nothing kept), let
a forger inject uplinks and downlinks (random bytes, plausible frames, replays and mutations of
genuine ones, frames sealed with another key) and start new pictures. Sessions run with or
without authentication (spec section 15). Whatever happens:

- no exception escapes an endpoint (a device task never raises; a server never counts an
  internal error);
- no corrupted picture is delivered: the reconstruction of every session's last and final
  updates is exactly what the codec gives for the layers the update lists, and with
  authentication every update belongs to a session the device really opened;
- with authentication, a device that reports "complete" was fully delivered by a server;
- the memory a server holds per session stays within its configured bound;
- every session ends, with a reason on both sides, within a bounded virtual time after the
  last rule.

``LPIMG_STATEFUL_EXAMPLES`` (default 12) and ``LPIMG_STATEFUL_STEPS`` (default 20) set the
size of the run; ``LPIMG_STATEFUL_EXAMPLES=2000`` is the issue's target run.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from endpoint_helpers import codec, crop, reference_reconstruction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lpimg.endpoint import Device, DeviceResult, ImageUpdate, Server
from lpimg.link import open_device_link, open_server_link
from lpimg.protocol import ProtocolConfig, SessionState
from lpimg.protocol.auth import seal_downlink
from lpimg.wire import (
    AbortReason,
    AckFrame,
    AuthStartFrame,
    DataFrame,
    DeviceAbortFrame,
    LayerCompleteFrame,
    PollFrame,
    RefineFrame,
    Region,
    ResumeFrame,
    ServerAbortFrame,
    StartFrame,
    StopFrame,
    build_downlink,
    build_uplink,
)

EXAMPLES = int(os.environ.get("LPIMG_STATEFUL_EXAMPLES", "12"))
STEPS = int(os.environ.get("LPIMG_STATEFUL_STEPS", "20"))
DEVICE = "cam-9"
KEY = bytes.fromhex("5a" * 16)
MTU = 24
CONFIG = ProtocolConfig(idle_timeout=3600.0, finished_retention=600.0)
HORIZON = 4 * 86400.0
"""Virtual seconds after the last rule within which everything must have ended: far above what
the configuration allows (attempts, polls and restarts of one session; the idle timeout)."""
REAL_TIMEOUT = 60.0
"""Wall seconds one rule may take before the run counts as stalled."""

pytestmark = pytest.mark.timeout(max(600, 30 * EXAMPLES))

_counter = iter(range(1 << 62))


def _image() -> np.ndarray:
    return crop(width=32, height=32)


downlink_frames = st.one_of(
    st.just(StopFrame()),
    st.builds(ServerAbortFrame, st.sampled_from(list(AbortReason))),
    st.builds(LayerCompleteFrame, st.integers(1, 40)),
    st.builds(AckFrame, st.integers(0, 200)),
    st.builds(RefineFrame, st.integers(0, 15), st.none() | st.builds(
        Region, st.integers(0, 1), st.integers(0, 1), st.integers(1, 2), st.integers(1, 2)),
        st.integers(0, 30)),
)
uplink_frames = st.one_of(
    st.builds(StartFrame, st.integers(0, 0xFFFF), st.just(MTU - 2), st.binary(min_size=1, max_size=19)),
    st.builds(AuthStartFrame, st.integers(0, 0xFFFF), st.just(MTU - 2),
              st.binary(min_size=1, max_size=19)),
    st.builds(DataFrame, st.integers(0, 80), st.binary(min_size=1, max_size=22), st.booleans()),
    st.just(PollFrame()),
    st.builds(ResumeFrame, st.integers(0, 0xFFFF)),
    st.builds(DeviceAbortFrame, st.sampled_from(list(AbortReason))),
)


class SystemMachine(RuleBasedStateMachine):
    """One device, one server (restartable), one forger, one simulated network."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = Path(tempfile.mkdtemp(prefix="lpimg-system-"))
        self.image = _image()
        self.auth = False
        self.url = ""
        self.server_link: Any = None
        self.server: Server | None = None
        self.servers: list[Server] = []
        self.device_link: Any = None
        self.device: Device | None = None
        self.device_task: asyncio.Task[DeviceResult] | None = None
        self.results: list[DeviceResult] = []
        self.updates: list[ImageUpdate] = []
        self.session_ids: set[int] = set()
        self.uplinks: list[bytes] = []
        self.downlinks: list[bytes] = []
        self.rng = random.Random(0)
        self.started = False

    # -- plumbing ----------------------------------------------------------------------------

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, REAL_TIMEOUT))

    @property
    def clock(self) -> Any:
        return self.device_link.clock

    def _tap(self, link: Any, store: list[bytes], method: str, *, server: bool) -> None:
        """Record every genuine frame a link sends, for the forger to replay."""
        original = getattr(link, method)

        async def send(*args: Any) -> None:
            store.append(bytes(args[-1]))
            del store[:-200]
            await original(*args)

        setattr(link, method, send)

    async def _open_server(self) -> None:
        self.server_link = await open_server_link(self.url)
        self._tap(self.server_link, self.downlinks, "send", server=True)
        server = Server(self.server_link, codec=codec(), config=CONFIG,
                        keys={DEVICE: KEY} if self.auth else None, on_update=self.updates.append)
        server.start()
        self.server = server
        self.servers.append(server)

    async def _open_device(self) -> None:
        self.device_link = await open_device_link(self.url, DEVICE)
        self._tap(self.device_link, self.uplinks, "send", server=False)

    def _start_device(self) -> None:
        device = Device(self.device_link, codec=codec(), store=self.folder / "store", config=CONFIG,
                        mtu=MTU, key=KEY if self.auth else None)
        self.device = device
        self.device_task = self.loop.create_task(device.send(self.image))

    def _note_session(self) -> None:
        if self.device is not None and self.device.session is not None:
            self.session_ids.add(self.device.session.session_id)

    def _collect(self) -> None:
        """Take the device's result if its task has ended (re-raising what it raised)."""
        self._note_session()
        task = self.device_task
        if task is not None and task.done():
            self.device_task = None
            if not task.cancelled():
                result = task.result()  # an exception escaping the device endpoint fails here
                assert result.reason, "a device session ended without a reason"
                self.results.append(result)

    def _advance(self, seconds: float) -> None:
        self._run(self.clock.wait_until(self.clock.time() + seconds))
        self._collect()

    # -- rules -------------------------------------------------------------------------------

    @initialize(
        auth=st.booleans(),
        loss=st.sampled_from([0.0, 0.1, 0.3, 0.5]),
        downlink_loss=st.sampled_from([0.0, 0.1, 0.3, 0.5]),
        duplicate=st.sampled_from([0.0, 0.1, 0.3]),
        reorder=st.sampled_from([0.0, 0.1, 0.3]),
        truncate=st.sampled_from([0.0, 0.05, 0.2]),
        bitflip=st.sampled_from([0.0, 0.05, 0.2]),
        seed=st.integers(0, 1 << 16),
    )
    def setup(self, auth: bool, loss: float, downlink_loss: float, duplicate: float, reorder: float,
              truncate: float, bitflip: float, seed: int) -> None:
        self.auth = auth
        self.rng = random.Random(seed)
        self.url = (f"sim://lorawan-eu868:dr2?uplink_loss={loss}&downlink_loss={downlink_loss}"
                    f"&duplicate={duplicate}&reorder={reorder}&truncate={truncate}"
                    f"&bitflip={bitflip}&seed={seed}&net=system-{next(_counter)}")
        self._run(self._open_server())
        self._run(self._open_device())
        self._start_device()
        self.started = True
        self._advance(1.0)

    @rule(seconds=st.sampled_from([1.0, 30.0, 120.0, 600.0, 3600.0]))
    def let_time_pass(self, seconds: float) -> None:
        self._advance(seconds)

    @precondition(lambda self: self.device_task is not None)
    @rule()
    def reboot_device(self) -> None:
        """Power loss at an arbitrary instant; the camera boots and resumes from its store."""
        task = self.device_task
        assert task is not None
        task.cancel()
        self._run(asyncio.gather(task, return_exceptions=True))
        self._note_session()
        self.device_task = None
        self._run(self.device_link.close())
        self._run(self._open_device())
        self._start_device()
        self._advance(1.0)

    @precondition(lambda self: self.device_task is None)
    @rule()
    def next_picture(self) -> None:
        self._start_device()
        self._advance(1.0)

    @rule()
    def restart_server(self) -> None:
        """The server process dies and a fresh one starts (it keeps nothing)."""
        server = self.server
        assert server is not None
        self._run(server.close())
        assert server.counters.internal_errors == 0
        self._run(self.server_link.close())
        self._run(self._open_server())
        self._advance(1.0)

    @rule(frame=uplink_frames)
    def forge_uplink(self, frame: Any) -> None:
        self.clock.inject_uplink(DEVICE, build_uplink(frame))
        self._advance(0.5)

    @rule(data=st.binary(min_size=0, max_size=30))
    def forge_uplink_bytes(self, data: bytes) -> None:
        self.clock.inject_uplink(DEVICE, data)
        self._advance(0.5)

    @precondition(lambda self: bool(self.uplinks))
    @rule(pick=st.integers(0, 1 << 16), flip=st.booleans())
    def replay_uplink(self, pick: int, flip: bool) -> None:
        frame = bytearray(self.uplinks[pick % len(self.uplinks)])
        if flip:
            frame[pick % len(frame)] ^= 1 << (pick % 8)
        self.clock.inject_uplink(DEVICE, bytes(frame))
        self._advance(0.5)

    @rule(frame=downlink_frames, how=st.sampled_from(["plain", "wrong_key", "random_mic"]))
    def forge_downlink(self, frame: Any, how: str) -> None:
        data = build_downlink(frame)
        counter = (1 << 31) + self.rng.randrange(1 << 30)  # far above any genuine counter
        if how == "wrong_key":
            session = self.device.session if self.device is not None else None
            data = seal_downlink(bytes(16), counter, data, session and session.session_id)
        elif how == "random_mic":
            data = data + counter.to_bytes(4, "big") + self.rng.randbytes(4)
        self.clock.inject_downlink(DEVICE, data)
        self._advance(0.5)

    @precondition(lambda self: bool(self.downlinks))
    @rule(pick=st.integers(0, 1 << 16), flip=st.booleans())
    def replay_downlink(self, pick: int, flip: bool) -> None:
        frame = bytearray(self.downlinks[pick % len(self.downlinks)])
        if flip:
            frame[pick % len(frame)] ^= 1 << (pick % 8)
        self.clock.inject_downlink(DEVICE, bytes(frame))
        self._advance(0.5)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def nothing_escaped_and_memory_is_bounded(self) -> None:
        if not self.started:
            return
        for server in self.servers:
            assert server.counters.internal_errors == 0
            task = server._task
            if task is not None and task.done() and not task.cancelled():
                assert task.exception() is None
        protocol = self.servers[-1].protocol
        assert len(protocol.devices()) <= CONFIG.max_sessions
        for device in protocol.devices():
            info = protocol.session(device)
            assert info is not None
            assert info.held_bytes <= CONFIG.session_memory_bound(info.fragment_size)

    @invariant()
    def only_genuine_sessions_are_published(self) -> None:
        """With authentication the server publishes only sessions the device opened. A plain
        START's header has no check of its own (the link's is assumed, section 2), so a flipped
        bit can rename a session: its layers are still checked to be exact at the end."""
        self._note_session()
        for update in self.updates:
            assert update.device == DEVICE
            if self.auth:
                assert update.session_id in self.session_ids, "a session the device never opened"

    # -- the end -----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.started:
                self._finish()
        finally:
            self._close()

    def _finish(self) -> None:
        """Let virtual time run until every session has ended, then check the pictures."""
        deadline = self.clock.time() + HORIZON
        while not self._all_ended():
            assert self.clock.time() < deadline, "a session did not end in bounded virtual time"
            self._advance(600.0)
        server = self.servers[-1]
        for record in server.sessions():
            assert record.reason, "a server session ended without a reason"
        finals = [u for u in self.updates if u.final]
        assert all(u.reason for u in finals)
        for update in self._to_check():
            got = update.reconstruction
            assert np.array_equal(got, reference_reconstruction(self.image, update)), update
        if self.auth:
            for result in self.results:
                if result.reason == "complete":
                    assert any(u.session_id == result.session_id and u.reason == "complete"
                               and u.layers == result.layers for u in finals), result

    def _to_check(self) -> list[ImageUpdate]:
        last: dict[int, ImageUpdate] = {}
        finals = []
        for update in self.updates:
            last[update.session_id] = update
            if update.final:
                finals.append(update)
        chosen = {id(u): u for u in [*finals, *last.values()]}
        return list(chosen.values())

    def _all_ended(self) -> bool:
        self._collect()
        if self.device_task is not None:
            return False
        protocol = self.servers[-1].protocol
        for device in protocol.devices():
            info = protocol.session(device)
            if info is not None and info.state is SessionState.ACTIVE:
                return False
        return all(not handle.active for handle in self.servers[-1].sessions())

    def _close(self) -> None:
        async def close() -> None:
            if self.device_task is not None:
                self.device_task.cancel()
                await asyncio.gather(self.device_task, return_exceptions=True)
            for server in self.servers:
                await server.close()
            if self.device_link is not None:
                await self.device_link.close()
            if self.server_link is not None:
                await self.server_link.close()

        try:
            self.loop.run_until_complete(close())
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)


SystemMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("LPIMG_STATEFUL_RANDOM") is None,
)
TestSystem = SystemMachine.TestCase
