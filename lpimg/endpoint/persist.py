"""The server's crash-safe state: sessions, held fragments and received layers in SQLite.

A gateway is killed, loses power or is upgraded while cameras are mid-transfer. With a state
file, :class:`lpimg.endpoint.Server` writes what every uplink changed *and commits it before the
answer goes out*, so anything a device was ever told is held is on disk; a server started again
on the same file resumes every session where it stood: the device's next request is answered
from the restored state and nothing acknowledged is asked for again.

The protocol core stays sans-I/O: :meth:`ServerProtocol.export_session` gives a session as
values and :meth:`ServerProtocol.restore_session` takes them back; this module only stores them.
Tables (one row per device; a device has one session at a time)::

    sessions(device, session_id, core JSON, app JSON)    the core's session and the endpoint's
                                                         view of it (geometry, image id, reason)
    fragments(device, idx, payload)                      fragments the core holds (the record
                                                         being reassembled and those past it)
    layers(device, idx, pass_index, region, at, size, data)   verified layers, to decode again

SQLite runs in WAL mode. ``synchronous=FULL`` (the default) makes each commit durable across a
power cut; ``NORMAL`` only across a process crash (SIGKILL), for a little less disk traffic.
Times are stored as Unix seconds and mapped to the server's clock on restore, so idle timeouts
go on counting while the server is down. Writes are incremental: a fragment is written once
and deleted when the core frees it, so an uplink costs one small transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lpimg.errors import LpimgError
from lpimg.protocol.reassembly import ReassemblyState
from lpimg.protocol.server import SessionSnapshot, SessionState
from lpimg.wire import AbortReason, Region

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
    device TEXT PRIMARY KEY, session_id INTEGER NOT NULL, core TEXT NOT NULL, app TEXT);
CREATE TABLE IF NOT EXISTS fragments(
    device TEXT NOT NULL, idx INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY(device, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS layers(
    device TEXT NOT NULL, idx INTEGER NOT NULL, pass_index INTEGER NOT NULL, region TEXT,
    at REAL NOT NULL, size INTEGER NOT NULL, data BLOB,
    PRIMARY KEY(device, idx)) WITHOUT ROWID;
"""


class StateError(LpimgError):
    """The server's state file cannot be opened or holds something unreadable."""


@dataclass(frozen=True)
class StoredLayer:
    """A verified layer as stored: ``data`` is None once its session ended."""

    index: int
    pass_index: int
    region: Region | None
    at: float
    size: int
    data: bytes | None


@dataclass
class StoredServerSession:
    """One device's session as a restarted server gets it back."""

    snapshot: SessionSnapshot
    app: dict[str, Any] | None
    """What the endpoint keeps of the session (None before its descriptor verified)."""
    layers: list[StoredLayer] = field(default_factory=list)


def _region_to_json(region: Region | None) -> list[int] | None:
    return None if region is None else [region.x, region.y, region.width, region.height]


def _region_from_json(value: Any) -> Region | None:
    return None if value is None else Region(*(int(v) for v in value))


def _snapshot_to_json(snapshot: SessionSnapshot, to_wall: Callable[[float], float]) -> str:
    reassembly = snapshot.reassembly
    doc: dict[str, Any] = {
        "state": snapshot.state.value,
        "fragment_size": snapshot.fragment_size,
        "started_at": to_wall(snapshot.started_at),
        "last_activity": to_wall(snapshot.last_activity),
        "finished_at": None if snapshot.finished_at is None else to_wall(snapshot.finished_at),
        "abort_reason": int(snapshot.abort_reason),
        "layer_count": snapshot.layer_count,
        "refines": [[_region_to_json(r), p, q] for r, p, q in snapshot.refines],
        "answered_groups": snapshot.answered_groups,
        "refine_sent": snapshot.refine_sent,
        "refine_ever_sent": snapshot.refine_ever_sent,
        "left": snapshot.left,
        "fingerprints": snapshot.fingerprints.hex(),
        "reassembly": None
        if reassembly is None
        else {
            "next": reassembly.next,
            "verified": reassembly.verified,
            "failures": reassembly.failures,
            "received": list(reassembly.received),
            "headers": [record.hex() for record in reassembly.headers],
            "group": reassembly.group,
            "layer": reassembly.layer,
            "offset": reassembly.offset,
        },
    }
    return json.dumps(doc, separators=(",", ":"))


def _snapshot_from_json(
    device: str,
    session_id: int,
    text: str,
    fragments: dict[int, bytes],
    from_wall: Callable[[float], float],
) -> SessionSnapshot:
    doc = json.loads(text)
    fragment_size = int(doc["fragment_size"])
    shape = doc["reassembly"]
    reassembly = None
    if shape is not None:
        reassembly = ReassemblyState(
            fragment_size,
            int(shape["next"]),
            int(shape["verified"]),
            int(shape["failures"]),
            tuple(int(i) for i in shape["received"]),
            fragments,
            tuple(bytes.fromhex(h) for h in shape["headers"]),
            int(shape["group"]),
            int(shape["layer"]),
            int(shape["offset"]),
        )
    finished = doc["finished_at"]
    return SessionSnapshot(
        device,
        session_id,
        fragment_size,
        SessionState(doc["state"]),
        from_wall(float(doc["started_at"])),
        from_wall(float(doc["last_activity"])),
        None if finished is None else from_wall(float(finished)),
        AbortReason(int(doc["abort_reason"])),
        int(doc["layer_count"]),
        tuple((_region_from_json(r), int(p), int(q)) for r, p, q in doc["refines"]),
        int(doc["answered_groups"]),
        bool(doc["refine_sent"]),
        bool(doc["refine_ever_sent"]),
        bool(doc["left"]),
        reassembly,
        bytes.fromhex(doc.get("fingerprints", "")),
    )


class ServerStore:
    """One SQLite state file of a server (see the module docstring). One process at a time."""

    def __init__(self, path: str | Path, *, synchronous: Literal["full", "normal"] = "full") -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level="DEFERRED")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES('version', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise StateError(f"{self.path}: state version {row[0]}, this lpimg reads {SCHEMA_VERSION}")
            self._db.commit()
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the server state {self.path}: {exc}") from exc
        self._held: dict[str, set[int]] = {}
        """Fragment indices on disk per device, so a save writes only the difference."""
        self._ids: dict[str, int] = {}
        """Session id on disk per device: a new id wipes the old session's rows."""
        self.commits = 0

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ServerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------

    def load(self, from_wall: Callable[[float], float] = float) -> Iterator[StoredServerSession]:
        """Every stored session. Rows that cannot be read are reported and skipped, never
        trusted half-way (:class:`StateError` is raised only for an unreadable file)."""
        db = self._db
        try:
            rows = db.execute("SELECT device, session_id, core, app FROM sessions").fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from exc
        for device, session_id, core, app in rows:
            fragments = dict(
                db.execute("SELECT idx, payload FROM fragments WHERE device=?", (device,)).fetchall()
            )
            layers = [
                StoredLayer(idx, pass_index, _region_from_json(json.loads(region)), at, size, data)
                for idx, pass_index, region, at, size, data in db.execute(
                    "SELECT idx, pass_index, region, at, size, data FROM layers WHERE device=? "
                    "ORDER BY idx", (device,))
            ]
            try:
                snapshot = _snapshot_from_json(device, session_id, core, fragments, from_wall)
                app_doc = json.loads(app) if app else None
            except (KeyError, TypeError, ValueError, LpimgError) as exc:
                raise StateError(f"{self.path}: session of {device!r} is unreadable: {exc}") from exc
            self._held[device] = set(fragments)
            self._ids[device] = session_id
            yield StoredServerSession(snapshot, app_doc, layers)

    # -- writing (each call joins the open transaction; :meth:`commit` ends it) -------------

    def _switch(self, device: str, session_id: int) -> None:
        if self._ids.get(device) == session_id:
            return
        self._db.execute("DELETE FROM fragments WHERE device=?", (device,))
        self._db.execute("DELETE FROM layers WHERE device=?", (device,))
        self._held[device] = set()
        self._ids[device] = session_id

    def add_layer(self, device: str, session_id: int, layer: StoredLayer) -> None:
        """Record a verified layer (written before the answer that tells the device so)."""
        self._switch(device, session_id)
        self._db.execute(
            "INSERT OR REPLACE INTO layers VALUES(?, ?, ?, ?, ?, ?, ?)",
            (device, layer.index, layer.pass_index, json.dumps(_region_to_json(layer.region)),
             layer.at, layer.size, layer.data),
        )

    def save(
        self,
        snapshot: SessionSnapshot,
        app: dict[str, Any] | None,
        to_wall: Callable[[float], float] = float,
    ) -> None:
        """Write a session's state: its row, and the fragments it gained or freed."""
        device = snapshot.device
        self._switch(device, snapshot.session_id)
        db = self._db
        db.execute(
            "INSERT OR REPLACE INTO sessions VALUES(?, ?, ?, ?)",
            (device, snapshot.session_id, _snapshot_to_json(snapshot, to_wall),
             None if app is None else json.dumps(app, separators=(",", ":"))),
        )
        held = self._held.setdefault(device, set())
        fragments = snapshot.reassembly.fragments if snapshot.reassembly is not None else {}
        gone = [index for index in held if index not in fragments]
        if gone:
            db.executemany("DELETE FROM fragments WHERE device=? AND idx=?", [(device, i) for i in gone])
            held.difference_update(gone)
        new = [(device, index, payload) for index, payload in fragments.items() if index not in held]
        if new:
            db.executemany("INSERT OR REPLACE INTO fragments VALUES(?, ?, ?)", new)
            held.update(index for _, index, _ in new)
        if snapshot.reassembly is None:  # ended: its layers are no longer needed to decode
            db.execute("UPDATE layers SET data=NULL WHERE device=? AND data IS NOT NULL", (device,))

    def forget(self, device: str) -> None:
        """The server no longer holds a session for ``device``."""
        for table in ("sessions", "fragments", "layers"):
            self._db.execute(f"DELETE FROM {table} WHERE device=?", (device,))  # noqa: S608
        self._held.pop(device, None)
        self._ids.pop(device, None)

    def holds(self, device: str) -> bool:
        """Whether ``device`` has a stored session (as last saved or loaded by this process)."""
        return device in self._ids

    def devices(self) -> set[str]:
        """Devices with a stored session (as last saved or loaded by this process)."""
        return set(self._ids)

    def commit(self) -> None:
        """Make everything written since the last commit durable (before answering)."""
        try:
            self._db.commit()
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the server state {self.path}: {exc}") from exc
        self.commits += 1
