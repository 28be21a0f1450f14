"""What the protocol cores report to their applications, as small frozen dataclasses.

Server-side events carry the link address of the device (``device``) and the session id;
device-side events carry the session id and ``device=None`` where a class is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lpimg.wire import AbortReason, Manifest, Region


@dataclass(frozen=True)
class SessionStarted:
    """Server: a session's descriptor arrived and verified."""

    device: str
    session_id: int
    model_id: int
    geometry: tuple[int, int]
    layer_sizes: tuple[int, ...]
    manifest: Manifest = field(default_factory=Manifest)


@dataclass(frozen=True)
class SessionResumed:
    """Server: a rebooted device re-attached to its session."""

    device: str
    session_id: int


@dataclass(frozen=True)
class LayersAnnounced:
    """Server: the device appended layers answering a refine request (possibly none)."""

    device: str
    session_id: int
    first_index: int
    layer_sizes: tuple[int, ...]
    region: Region | None
    first_pass: int


@dataclass(frozen=True)
class LayerReceived:
    """Server: layer ``index`` verified its CRC; ``data`` is exactly what the device sent.

    Layers arrive in index order. ``pass_index`` and ``region`` say which codec pass over which
    rectangle (None: the whole image) the layer is.
    """

    device: str
    session_id: int
    index: int
    data: bytes
    pass_index: int
    region: Region | None = None


@dataclass(frozen=True)
class SessionCompleted:
    """Both sides: every announced layer was delivered (``layer_count`` of them)."""

    device: str | None
    session_id: int
    layer_count: int


@dataclass(frozen=True)
class Stopped:
    """Both sides: the server said it had enough."""

    device: str | None
    session_id: int


@dataclass(frozen=True)
class Aborted:
    """Both sides: the session ended without delivering everything.

    ``reason`` is the human-readable why (the same text as the device's ``reason``); ``code``
    is the wire reason; ``by_peer`` is True when the other side sent the abort.
    """

    device: str | None
    session_id: int
    reason: str
    code: AbortReason
    by_peer: bool = False


@dataclass(frozen=True)
class RefineRequested:
    """Device: the server asks for passes up to ``pass_index`` over ``region``.

    Answer with ``DeviceSession.add_layers(...)`` (an empty list declines) before
    ``ProtocolConfig.refine_timeout`` runs out.
    """

    session_id: int
    region: Region | None
    pass_index: int
    priority: int


@dataclass(frozen=True)
class LayersAcknowledged:
    """Device: the server verified layers 0..count-1."""

    session_id: int
    count: int


Event = (
    SessionStarted
    | SessionResumed
    | LayersAnnounced
    | LayerReceived
    | SessionCompleted
    | Stopped
    | Aborted
    | RefineRequested
    | LayersAcknowledged
)
