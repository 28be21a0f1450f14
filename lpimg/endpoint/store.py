"""A device's persistent session store: what a rebooted camera needs to resume, not restart.

Layout of the store directory::

    session.json             the session: id, MTU, model, geometry, manifest, layer plan, state
    s<id>-<n>.bin            layer n of session <id>, raw bytes, exactly as sent
    s<id>-latents.npy        the picture's latents (int8), so refine requests can be answered
    reference.bin            a fixed camera's reference state and its frame id (kept between
                             sessions: the next picture is coded against it)

Every file is written atomically (a temporary file in the same directory, fsync, rename, fsync
of the directory), and layer files are written before the ``session.json`` that names them, so
a power cut at any instant leaves either the old state or the new one, never a session that
points at a half-written layer. That matters: :meth:`lpimg.protocol.DeviceSession.resume` must
rebuild *exactly* the same byte stream, or the server would assemble garbage (its CRCs would
catch it, at the cost of airtime).

When a session ends, its layer files are deleted and ``session.json`` keeps only the last
session id and how it ended, so the next picture gets a different session id (a server treats a
START with the current id as a repeat).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lpimg.codec.bitplane import LayerSpec
from lpimg.codec.bitplane import Region as CodecRegion
from lpimg.errors import LpimgError
from lpimg.protocol import AddedGroup
from lpimg.wire import Region as WireRegion

if TYPE_CHECKING:
    from lpimg.endpoint.references import HeldReference

STORE_VERSION = 1


class StoreError(LpimgError):
    """The session store is unreadable or inconsistent (it is then ignored, not trusted)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp's 0600 would hide outputs from readers
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _region_json(region: WireRegion | CodecRegion | None) -> list[int] | None:
    if region is None:
        return None
    if isinstance(region, WireRegion):
        return [region.x, region.y, region.width, region.height]
    return [region.x, region.y, region.w, region.h]


@dataclass
class StoredSession:
    """Everything :meth:`DeviceSession.resume` and the refine answers need after a reboot."""

    session_id: int
    mtu: int
    model_id: int
    width: int
    height: int
    top_plane: int
    manifest: bytes
    """The CBOR manifest exactly as the descriptor carried it."""
    digest: str
    specs: list[LayerSpec] = field(default_factory=list)
    """The codec pass and region of every layer, in session order."""
    groups: list[AddedGroup] = field(default_factory=list)
    """The refine groups appended after group 0 (DeviceSession.added_groups)."""
    has_latents: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STORE_VERSION,
            "state": "active",
            "session_id": self.session_id,
            "mtu": self.mtu,
            "model_id": self.model_id,
            "geometry": [self.width, self.height],
            "top_plane": self.top_plane,
            "manifest": self.manifest.hex(),
            "digest": self.digest,
            "layers": [{"pass": s.index, "region": _region_json(s.region)} for s in self.specs],
            "groups": [
                {"region": _region_json(g.region), "first_pass": g.first_pass, "count": g.layer_count}
                for g in self.groups
            ],
            "latents": self.has_latents,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StoredSession:
        try:
            width, height = doc["geometry"]
            specs = [
                LayerSpec(int(item["pass"]), None if item["region"] is None else CodecRegion(*item["region"]))
                for item in doc["layers"]
            ]
            groups = [
                AddedGroup(
                    None if g["region"] is None else WireRegion(*g["region"]),
                    int(g["first_pass"]),
                    int(g["count"]),
                )
                for g in doc["groups"]
            ]
            return cls(
                session_id=int(doc["session_id"]),
                mtu=int(doc["mtu"]),
                model_id=int(doc["model_id"]),
                width=int(width),
                height=int(height),
                top_plane=int(doc["top_plane"]),
                manifest=bytes.fromhex(doc["manifest"]),
                digest=str(doc["digest"]),
                specs=specs,
                groups=groups,
                has_latents=bool(doc.get("latents", False)),
            )
        except (KeyError, TypeError, ValueError, LpimgError) as exc:
            raise StoreError(f"stored session is malformed: {exc}") from exc


class DeviceStore:
    """One device's store directory (created if missing). Not safe for two processes at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the session store {self.path}: {exc}") from exc
        self._file = self.path / "session.json"

    # -- reading -----------------------------------------------------------------------------

    def _doc(self) -> dict[str, Any] | None:
        try:
            text = self._file.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self._file}: {exc}") from exc
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise StoreError(f"{self._file} is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != STORE_VERSION:
            raise StoreError(f"{self._file} is not a version {STORE_VERSION} session store")
        return doc

    def load(self) -> StoredSession | None:
        """The unfinished session, or None (nothing stored, or the last session ended)."""
        doc = self._doc()
        if doc is None or doc.get("state") != "active":
            return None
        stored = StoredSession.from_json(doc)
        for index in range(len(stored.specs)):
            if not self._layer_path(stored.session_id, index).exists():
                raise StoreError(f"layer {index} of session {stored.session_id} is missing from {self.path}")
        return stored

    def layers(self, stored: StoredSession) -> list[bytes]:
        """Every stored layer of ``stored``, in session order."""
        try:
            return [self._layer_path(stored.session_id, i).read_bytes() for i in range(len(stored.specs))]
        except OSError as exc:
            raise StoreError(f"cannot read the stored layers: {exc}") from exc

    def latents(self, stored: StoredSession) -> np.ndarray | None:
        if not stored.has_latents:
            return None
        try:
            return np.load(self._latents_path(stored.session_id), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the stored latents: {exc}") from exc

    def last_session(self) -> tuple[int, str | None] | None:
        """(id, how it ended) of the most recent session, if any."""
        try:
            doc = self._doc()
        except StoreError:
            return None
        if doc is None or "session_id" not in doc:
            return None
        return int(doc["session_id"]), doc.get("reason")

    def next_session_id(self) -> int:
        """A session id different from the previous session's (random for a new store)."""
        last = self.last_session()
        if last is None:
            return secrets.randbelow(0x10000)
        return (last[0] + 1) & 0xFFFF

    # -- writing -----------------------------------------------------------------------------

    def begin(self, stored: StoredSession, layers: Sequence[bytes], latents: np.ndarray | None) -> None:
        """Record a new session: its layers and latents first, then the session file."""
        self._discard_files(keep=None)
        for index, data in enumerate(layers):
            atomic_write(self._layer_path(stored.session_id, index), bytes(data))
        if latents is not None:
            import io

            buffer = io.BytesIO()
            np.save(buffer, np.asarray(latents, dtype=np.int8), allow_pickle=False)
            atomic_write(self._latents_path(stored.session_id), buffer.getvalue())
            stored.has_latents = True
        self._write(stored.to_json())

    def add_group(
        self, stored: StoredSession, group: AddedGroup, specs: Sequence[LayerSpec], layers: Sequence[bytes]
    ) -> None:
        """Record the layers answering a refine request (before they are announced)."""
        first = len(stored.specs)
        for offset, data in enumerate(layers):
            atomic_write(self._layer_path(stored.session_id, first + offset), bytes(data))
        stored.specs.extend(specs)
        stored.groups.append(group)
        self._write(stored.to_json())

    def finish(self, session_id: int, reason: str) -> None:
        """The session ended: keep only its id and reason, drop its layers."""
        self._write({"version": STORE_VERSION, "state": "finished", "session_id": session_id,
                     "reason": reason})
        self._discard_files(keep=None)

    # -- the reference (fixed cameras) ---------------------------------------------------------

    def save_reference(self, reference: HeldReference | None) -> None:
        """Keep the device's reference state across reboots (None forgets it). Separate from
        the session file: a finished session leaves the reference its acknowledged layers made."""
        path = self.path / "reference.bin"
        if reference is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        atomic_write(path, reference.to_bytes())

    def load_reference(self) -> HeldReference | None:
        """The stored reference, or None; StoreError if it is unreadable or corrupted."""
        from lpimg.endpoint.references import HeldReference

        try:
            blob = (self.path / "reference.bin").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read the stored reference: {exc}") from exc
        try:
            return HeldReference.from_bytes(blob)
        except LpimgError as exc:
            raise StoreError(f"the stored reference is unusable: {exc}") from exc

    def _write(self, doc: dict[str, Any]) -> None:
        atomic_write(self._file, json.dumps(doc, indent=1).encode())

    def _layer_path(self, session_id: int, index: int) -> Path:
        return self.path / f"s{session_id:04x}-{index:04d}.bin"

    def _latents_path(self, session_id: int) -> Path:
        return self.path / f"s{session_id:04x}-latents.npy"

    def _discard_files(self, keep: int | None) -> None:
        for path in self.path.glob("s????-*"):
            if keep is not None and path.name.startswith(f"s{keep:04x}-"):
                continue
            with contextlib.suppress(OSError):
                path.unlink()
