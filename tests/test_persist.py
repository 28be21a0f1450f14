"""Crash-safe server state: the core's session snapshots and their SQLite store.

The protocol core exports and restores sessions as values; :mod:`lpimg.endpoint.persist` keeps
them in SQLite. A restart is simulated here by building a new core from the stored state at
arbitrary points of a lossy transfer, including between the commit and the answer (the worst
instant for a crash: the state is on disk but the device never heard the answer).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from lpimg.bench.crash import _Header
from lpimg.endpoint import Server
from lpimg.endpoint.coding import with_top_plane
from lpimg.endpoint.persist import ServerStore, StateError, StoredLayer
from lpimg.errors import ProtocolError
from lpimg.link.base import ServerLink
from lpimg.protocol import (
    DeviceSession,
    LayerReceived,
    ProtocolConfig,
    RefineRequested,
    ServerProtocol,
    SessionState,
)
from lpimg.wire import Region, parse_downlink
from lpimg.wire.downlink import RefineFrame

DEV = "cam-9"


def layers_of(*sizes: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for size in sizes]


def restart(server: ServerProtocol, store: ServerStore, config: ProtocolConfig) -> ServerProtocol:
    """Persist every session, drop the core, and build a new one from the file alone."""
    for device in server.devices():
        snapshot = server.export_session(device)
        assert snapshot is not None
        store.save(snapshot, None)
    store.commit()
    fresh = ServerProtocol(config)
    reopened = ServerStore(store.path)
    for stored in reopened.load():
        fresh.restore_session(stored.snapshot)
    reopened.close()
    return fresh


def run(
    layers: list[bytes],
    *,
    tmp_path: Path,
    seed: int,
    loss: float,
    crash: float,
    mtu: int = 40,
    refine_after: int | None = None,
) -> tuple[DeviceSession, list[bytes], int]:
    """A lossy transfer; after each uplink the server crashes with probability ``crash``,
    after committing and before answering. Returns the device, the layers delivered and the
    number of restarts."""
    config = ProtocolConfig(window=8, ack_timeout=5.0)
    device = DeviceSession(0x0102, layers, mtu=mtu, now=0.0, config=config)
    server = ServerProtocol(config)
    store = ServerStore(tmp_path / f"state-{seed}.db", synchronous="normal")
    rng = random.Random(seed)
    delivered: list[bytes] = []
    restarts = 0
    now = 0.0
    refined = False

    def drain() -> None:
        nonlocal refined
        while (event := server.next_event()) is not None:
            if isinstance(event, LayerReceived):
                delivered.append(event.data)
                if refine_after is not None and not refined and len(delivered) == refine_after:
                    server.refine(DEV, Region(0, 0, 1, 1), 3)
                    refined = True
        while (event := device.next_event()) is not None:
            if isinstance(event, RefineRequested):
                device.add_layers([b"refined" * 3], region=Region(0, 0, 1, 1), first_pass=2)

    for _ in range(20_000):
        drain()
        if device.finished:
            break
        frame = device.next_frame(now)
        if frame is None:
            timers = [t for t in (device.get_timer(), server.get_timer()) if t is not None]
            now = max(now, min(timers))
            device.handle_timer(now)
            server.handle_timer(now)
            continue
        if rng.random() >= loss:
            server.receive_frame(DEV, frame, now)
            drain()
            if rng.random() < crash:
                server = restart(server, store, config)
                restarts += 1
            else:
                answer = server.next_frame(DEV, now + 1)
                if answer is not None and rng.random() >= loss:
                    device.receive_frame(answer, now + 1)
        now += 2.0
    drain()
    store.close()
    return device, delivered, restarts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_server_restarted_from_its_state_loses_nothing_it_acknowledged(tmp_path: Path, seed: int) -> None:
    layers = layers_of(300, 700, 90, seed=seed)
    device, delivered, restarts = run(layers, tmp_path=tmp_path, seed=seed, loss=0.15, crash=0.3)
    assert restarts >= 4
    assert device.reason == "complete"
    assert delivered == layers  # each layer delivered once, in order, across every restart
    assert device.stats.acknowledged_resent == 0  # nor was it ever told "unknown session"


def test_a_server_without_its_state_makes_the_device_send_acknowledged_fragments_again(
    tmp_path: Path,
) -> None:
    """The counter the crash tests rely on does see a server that forgot (the control case)."""
    config = ProtocolConfig(window=8)
    layers = layers_of(600)
    device = DeviceSession(5, layers, mtu=40, now=0.0, config=config)
    server = ServerProtocol(config)
    now = 0.0
    while device.stats.downlinks == 0:
        server.receive_frame(DEV, device.next_frame(now) or b"", now)
        answer = server.next_frame(DEV, now)
        if answer is not None:
            device.receive_frame(answer, now)
        now += 1
    server = ServerProtocol(config)  # restarted without state
    while not device.finished:
        frame = device.next_frame(now)
        if frame is None:
            now = device.get_timer() or now
            device.handle_timer(now)
            continue
        server.receive_frame(DEV, frame, now)
        answer = server.next_frame(DEV, now)
        if answer is not None:
            device.receive_frame(answer, now)
        now += 1
    assert device.reason == "complete" and device.stats.restarts == 1
    assert device.stats.acknowledged_resent >= 8


def test_refine_requests_and_groups_survive_restarts(tmp_path: Path) -> None:
    layers = layers_of(200, 200, seed=4)
    device, delivered, restarts = run(
        layers, tmp_path=tmp_path, seed=4, loss=0.1, crash=0.2, refine_after=1
    )
    assert restarts >= 3
    assert device.reason == "complete"
    assert delivered == [*layers, b"refined" * 3]
    assert device.stats.acknowledged_resent == 0


def test_a_pending_refine_is_sent_by_the_restored_server(tmp_path: Path) -> None:
    config = ProtocolConfig()
    device = DeviceSession(9, layers_of(100, 100), mtu=51, now=0.0, config=config)
    server = ServerProtocol(config)
    server.receive_frame(DEV, device.next_frame(0.0) or b"", 0.0)
    server.refine(DEV, Region(1, 1, 2, 2), 4, priority=2)
    with ServerStore(tmp_path / "s.db") as store:
        snapshot = server.export_session(DEV)
        assert snapshot is not None
        store.save(snapshot, {"note": "app view"})
        store.commit()
    with ServerStore(tmp_path / "s.db") as store:
        (stored,) = list(store.load())
    assert stored.snapshot == snapshot and stored.app == {"note": "app view"}
    fresh = ServerProtocol(config)
    fresh.restore_session(stored.snapshot)
    fresh.receive_frame(DEV, device.next_frame(1.0) or b"", 1.0)
    assert parse_downlink(fresh.next_frame(DEV, 1.5) or b"") == RefineFrame(0, Region(1, 1, 2, 2), 4, 2)


def test_finished_sessions_are_restored_and_answered(tmp_path: Path) -> None:
    config = ProtocolConfig()
    device = DeviceSession(3, layers_of(20), mtu=51, now=0.0, config=config)
    server = ServerProtocol(config)
    server.receive_frame(DEV, device.next_frame(0.0) or b"", 0.0)
    assert server.next_frame(DEV, 0.5) is not None
    info = server.session(DEV)
    assert info is not None and info.state is SessionState.COMPLETE
    with ServerStore(tmp_path / "s.db") as store:
        store.add_layer(DEV, 3, StoredLayer(0, 0, None, 0.0, 20, b"x" * 20))
        snapshot = server.export_session(DEV)
        assert snapshot is not None and snapshot.reassembly is None
        store.save(snapshot, None)
        store.commit()
    with ServerStore(tmp_path / "s.db") as store:
        (stored,) = list(store.load())
    assert stored.layers[0].data is None  # an ended session's layer bytes are dropped
    fresh = ServerProtocol(config)
    fresh.restore_session(stored.snapshot)
    info = fresh.session(DEV)
    assert info is not None and info.state is SessionState.COMPLETE and info.layers_delivered == 1


def test_store_rows_follow_the_core(tmp_path: Path) -> None:
    """Fragments freed by the core leave the file; a new session id wipes the old rows."""
    config = ProtocolConfig(window=64)
    device = DeviceSession(1, layers_of(2000), mtu=51, now=0.0, config=config)
    server = ServerProtocol(config)
    store = ServerStore(tmp_path / "s.db")
    for step in range(30):
        server.receive_frame(DEV, device.next_frame(float(step)) or b"", float(step))
        snapshot = server.export_session(DEV)
        assert snapshot is not None
        store.save(snapshot, None)
        store.commit()
    db = sqlite3.connect(tmp_path / "s.db")
    held = server.session(DEV).held_bytes  # type: ignore[union-attr]
    assert db.execute("SELECT sum(length(payload)) FROM fragments").fetchone()[0] == held
    other = DeviceSession(2, layers_of(100), mtu=51, now=0.0, config=config)
    server.receive_frame(DEV, other.next_frame(40.0) or b"", 40.0)
    snapshot = server.export_session(DEV)
    assert snapshot is not None
    store.save(snapshot, None)
    store.commit()
    rows = db.execute("SELECT session_id, (SELECT count(*) FROM fragments) FROM sessions").fetchall()
    assert rows == [(2, len(snapshot.reassembly.fragments))]  # type: ignore[union-attr]
    store.forget(DEV)
    store.commit()
    assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    store.close()
    db.close()


def test_damaged_state_is_refused_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    config = ProtocolConfig()
    device = DeviceSession(1, layers_of(500), mtu=51, now=0.0, config=config)
    server = ServerProtocol(config)
    for step in range(3):
        server.receive_frame(DEV, device.next_frame(float(step)) or b"", float(step))
    with ServerStore(path) as store:
        snapshot = server.export_session(DEV)
        assert snapshot is not None
        store.save(snapshot, None)
        store.commit()
    db = sqlite3.connect(path)
    core = db.execute("SELECT core FROM sessions").fetchone()[0]
    db.execute("UPDATE sessions SET core=?", (core.replace('"headers":["', '"headers":["00'),))
    db.commit()
    with ServerStore(path) as store:
        (stored,) = list(store.load())
    with pytest.raises(ProtocolError, match="damaged session snapshot"):
        ServerProtocol(config).restore_session(stored.snapshot)
    db.execute("UPDATE sessions SET core='{not json'")
    db.commit()
    db.close()
    with ServerStore(path) as store, pytest.raises(StateError, match="unreadable"):
        list(store.load())
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="cannot open"):
        ServerStore(tmp_path / "junk.db")


# -- the endpoint: Server(state=...) --------------------------------------------------------


class QueueLink(ServerLink):
    """An in-memory server link: the test plays the device and sees every answer."""

    def __init__(self) -> None:
        self.mtu = 242
        self.inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.sent: list[tuple[str, bytes]] = []
        self.idle = asyncio.Event()

    async def send(self, device: str, frame: bytes) -> None:
        self.sent.append((device, frame))

    async def close(self) -> None:
        self.closed = True

    async def recv(self) -> tuple[str, bytes]:
        if self.inbox.empty():
            self.idle.set()
        item = await self.inbox.get()
        self.idle.clear()
        return item

    async def deliver(self, device: str, frame: bytes) -> bytes | None:
        """Hand one uplink to the server; its answer, once it has handled it."""
        count = len(self.sent)
        self.idle.clear()
        await self.inbox.put((device, frame))
        await self.idle.wait()
        return self.sent[count][1] if len(self.sent) > count else None


def test_the_server_endpoint_resumes_from_its_state_file(tmp_path: Path) -> None:
    layers = layers_of(200, 300, 150, seed=8)
    config = ProtocolConfig(window=8)
    header = _Header(0x7E57, 64, 48, 5)

    async def main() -> None:
        device = DeviceSession(0x0A0B, layers, mtu=40, now=0.0, model_id=header.model_id,
                               geometry=(64, 48), manifest=with_top_plane(None, 5), config=config)
        first = Server(QueueLink(), decode=False, config=config, state=tmp_path / "state.db")
        first.start()
        for _ in range(12):
            answer = await first.link.deliver("cam", device.next_frame(0.0) or b"")  # type: ignore[attr-defined]
            if answer is not None:
                device.receive_frame(answer, 0.0)
        commits = first.counters.state_commits
        for frame in (b"\xff\xff", b"\x00", b"\x01"):  # malformed: counted, never written
            await first.link.deliver("cam", frame)  # type: ignore[attr-defined]
            await first.link.deliver("stranger", frame)  # type: ignore[attr-defined]
        assert first.counters.state_commits == commits and first.counters.malformed == 6
        held = first.session("cam").latest
        assert held is not None and held.layers >= 1
        first._task.cancel()  # type: ignore[union-attr]  # a crash: nothing more is written
        second = Server(QueueLink(), decode=False, config=config, state=tmp_path / "state.db")
        updates = second.updates()
        async with second:
            assert second.counters.sessions_restored == 1
            assert second.session("cam").active and second.session("cam").latest is None
            now = 1.0
            while not device.finished:
                frame = device.next_frame(now)
                if frame is None:
                    now = device.get_timer() or now
                    device.handle_timer(now)
                    continue
                answer = await second.link.deliver("cam", frame)  # type: ignore[attr-defined]
                if answer is not None:
                    device.receive_frame(answer, now)
                now += 1.0
            final = await second.session("cam").wait()
        seen = [update async for update in updates]
        assert device.reason == "complete" and device.stats.acknowledged_resent == 0
        assert final.reason == "complete" and final.layers == 3 and final.bytes == 650
        assert [layer.size for layer in final.received] == [200, 300, 150]
        assert final.received[0].at == pytest.approx(held.received[0].at, abs=1.0)
        assert seen[-1] is final

    asyncio.run(main())
