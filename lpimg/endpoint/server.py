"""The server role: many devices over one link, progressive decoding, stop and refine.

:class:`Server` is the asyncio adapter around :class:`lpimg.protocol.ServerProtocol` (which
reassembles, acknowledges and decides what each downlink window carries) and the codec's
:class:`~lpimg.codec.pipeline.ImageDecoder` (one per session, layers applied in index order)::

    async with open_server_link("ttn://eu1.cloud.thethings.network:8883?app=cams&tls=1") as link:
        async with Server(link, policies=[ByteBudget(3000)]) as server:
            async for update in server.updates():
                save(update.device, update.image_id, update.reconstruction)

Every uplink is handled in one go: the protocol core takes it, the layers it completed are
decoded, an :class:`ImageUpdate` is built and the :mod:`policies <lpimg.endpoint.policies>`
decide (stop, refine) *before* the core is asked for the answer, so a decision rides in the
receive window that uplink opened. Applications that watch :meth:`Server.updates` and call
``await server.session(device).stop()`` later act from the next window on.

Bad input (frames from devices not allowed, malformed frames, sessions whose model or geometry
this server cannot decode, peers that vanish) is logged once per cause and device, counted in
:attr:`Server.counters`, and never stops the server; every session ends with a final update
whose ``reason`` says how ("complete", "stopped: ...", "aborted: ...", "rejected: ...",
"interrupted: ...").

Fixed cameras. A session coded against a reference (manifest keys 1 and 2) is decoded against
the state the server holds of that device's earlier picture: :attr:`Server.references` keeps
each device's last two pictures and rebuilds the state of whichever prefix of their layers the
device names (:mod:`lpimg.endpoint.references`). A name that matches nothing is refused with
ABORT(UNKNOWN_REFERENCE) before any layer is decoded (final reason "rejected: unknown reference
..."), and the device sends the picture again without a reference.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lpimg.aio import cancel_and_wait
from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.endpoint.coding import layer_spec, stream_header
from lpimg.endpoint.persist import ServerStore, StoredLayer, StoredServerSession
from lpimg.endpoint.policies import Action, Policy, Refine, Stop
from lpimg.endpoint.references import ReferenceBank, ReferenceSource
from lpimg.endpoint.sim import SimServerLink
from lpimg.errors import CodecError, LinkError, LpimgError, ProtocolError, WireError
from lpimg.link.base import ServerLink
from lpimg.logs import OncePerDevice
from lpimg.protocol import (
    Aborted,
    Event,
    LayerReceived,
    LayersAnnounced,
    ProtocolConfig,
    ServerProtocol,
    SessionCompleted,
    SessionResumed,
    SessionStarted,
    Stopped,
)
from lpimg.protocol.stats import SERVER_CAUSES
from lpimg.wire import AbortReason, Manifest, Region, decode_manifest, encode_manifest

if TYPE_CHECKING:
    from lpimg.codec.pipeline import ImageDecoder, LearnedCodec, StreamHeader
    from lpimg.codec.reference import ConditionalDecoder

log = logging.getLogger("lpimg.endpoint.server")


@dataclass(frozen=True)
class LayerInfo:
    """One layer a session delivered: its index, codec pass, region, size and arrival time."""

    index: int
    pass_index: int
    region: Region | None
    size: int
    at: float


@dataclass(frozen=True)
class _Snapshot:
    codec: LearnedCodec
    q: np.ndarray
    passes: np.ndarray
    top: int
    width: int
    height: int

    def render(self) -> np.ndarray:
        from lpimg.codec.bitplane import coarse_passes

        return self.codec.synthesize(self.q, coarse_passes(self.passes, self.top), self.top,
                                     self.width, self.height)


@dataclass(frozen=True)
class _ConditionalSnapshot:
    """A reference-coded picture's decoder state, frozen: its arrays are copies, and the
    reference it reads is immutable."""

    decoder: ConditionalDecoder

    @classmethod
    def of(cls, decoder: ConditionalDecoder) -> _ConditionalSnapshot:
        frozen = copy.copy(decoder)
        frozen.q = decoder.q.copy()
        frozen.passes = decoder.passes.copy()
        return cls(frozen)

    def render(self) -> np.ndarray:
        return self.decoder.reconstruct()


@dataclass(frozen=True, eq=False)
class ImageUpdate:
    """What the server holds of one device's picture after an uplink (or at the session's end).

    ``reconstruction`` (uint8 HxWx3) is computed on first access from a snapshot of the decoder
    state, so updates nobody looks at cost no synthesis; it equals what the codec's
    ``ImageDecoder.reconstruct()`` gives after the same layers. Times are on the link's clock
    (virtual seconds for sim://); ``wall_time`` is the server's wall clock (Unix seconds).
    """

    device: str
    session_id: int
    image_id: str
    layers: int
    """Layers received and decoded so far (refinements included)."""
    bytes: int
    """Codec bytes of those layers (protocol overhead excluded)."""
    final: bool
    reason: str | None
    """Why the session ended (final updates only)."""
    started_at: float
    updated_at: float
    wall_time: float
    width: int
    height: int
    model_id: int
    total_passes: int
    """Codec passes of the whole stream (0 when the stream header is unknown)."""
    manifest: Manifest
    received: tuple[LayerInfo, ...]
    _snapshot: _Snapshot | _ConditionalSnapshot | None = field(default=None, repr=False)

    @property
    def reference_id(self) -> int | None:
        """Frame id of the reference the picture is coded against (None: intra)."""
        return self.manifest.reference_id

    @property
    def completed(self) -> bool:
        """True for a final update of a session that delivered what the server wanted."""
        return self.final and self.reason is not None and (
            self.reason == "complete" or self.reason.startswith("stopped")
        )

    @property
    def decodable(self) -> bool:
        """Whether :attr:`reconstruction` is available."""
        return self._snapshot is not None

    @cached_property
    def reconstruction(self) -> np.ndarray:
        """The picture as the layers received so far give it (uint8, height x width x 3)."""
        if self._snapshot is None:
            raise LpimgError(
                f"{self.device}/{self.image_id}: this session is not decoded here ({self.reason})"
            )
        return self._snapshot.render()


@dataclass
class ServerCounters:
    """What the server endpoint saw and dropped (the protocol's own are in ``protocol.stats``)."""

    uplinks: int = 0
    unknown_devices: int = 0
    """Uplinks from devices the server does not accept (dropped unread)."""
    malformed: int = 0
    """Uplinks the protocol could not parse."""
    sessions_started: int = 0
    completed: int = 0
    stopped: int = 0
    aborted: int = 0
    rejected: int = 0
    """Sessions this server refused to decode (model, geometry, missing top plane, reference)."""
    unknown_references: int = 0
    """Reference-coded sessions refused because the reference they name is not held here."""
    interrupted: int = 0
    decode_errors: int = 0
    updates: int = 0
    updates_dropped: int = 0
    """Updates a slow ``updates()`` consumer missed (its queue overflowed; finals are kept)."""
    send_failures: int = 0
    internal_errors: int = 0
    """Uplinks whose handling raised (a bug): logged with a traceback, and the server goes on."""
    sessions_restored: int = 0
    """Sessions taken back from the state file when the server started."""
    state_commits: int = 0
    """Transactions written to the state file (one per uplink that was answered or changed)."""


@dataclass
class _Record:
    device: str
    session_id: int
    started_at: float
    model_id: int
    geometry: tuple[int, int]
    manifest: Manifest
    image_id: str
    header: StreamHeader | None = None
    decoder: ImageDecoder | ConditionalDecoder | None = None
    source: ReferenceSource | None = None
    received: list[LayerInfo] = field(default_factory=list)
    bytes: int = 0
    updated_at: float = 0.0
    reason: str | None = None
    stop_why: str | None = None
    latest: ImageUpdate | None = None
    done: asyncio.Future[ImageUpdate] | None = None

    @property
    def active(self) -> bool:
        return self.reason is None


class SessionHandle:
    """One device's current session, for the application to steer."""

    def __init__(self, server: Server, record: _Record) -> None:
        self._server = server
        self._record = record

    @property
    def device(self) -> str:
        return self._record.device

    @property
    def session_id(self) -> int:
        return self._record.session_id

    @property
    def active(self) -> bool:
        return self._record.active

    @property
    def reason(self) -> str | None:
        """How the session ended (None while active)."""
        return self._record.reason

    @property
    def latest(self) -> ImageUpdate | None:
        """The most recent update of the session."""
        return self._record.latest

    async def refine(self, region: Region | None, pass_index: int, priority: int = 0) -> None:
        """Ask the device for codec passes up to and including ``pass_index`` over ``region``
        (latent units; None: the whole image). Sent in the device's next receive window."""
        self._server._refine(self._record, Refine(region, pass_index, priority))

    async def stop(self, why: str = "stopped by the application") -> None:
        """Tell the device it has sent enough (at its next receive window); the final update
        follows at once, with what was received."""
        self._server._stop(self._record, why)

    async def wait(self) -> ImageUpdate:
        """The session's final update, once it has ended."""
        if self._record.done is None:
            self._record.done = asyncio.get_running_loop().create_future()
            if self._record.reason is not None and self._record.latest is not None:
                self._record.done.set_result(self._record.latest)
        return await asyncio.shield(self._record.done)


_END = object()


class Server:
    """The server role over one :class:`~lpimg.link.ServerLink` (see the module docstring).

    ``codec`` (or ``model``, loaded at the first session) decodes; with ``decode=False`` the
    server only reassembles and reports layers and bytes. ``devices`` restricts which device
    ids are served (a collection or a predicate). ``policies`` are applied to every update of
    an active session, in order. ``on_update`` is called for every published update.
    ``state`` (a path or a :class:`~lpimg.endpoint.persist.ServerStore`) makes sessions survive
    a crash: every change is committed to that SQLite file before the answer is sent, and a
    server started on the same file resumes where the last one stood (``state_sync="normal"``
    trades durability across a power cut for less disk traffic).
    """

    def __init__(
        self,
        link: ServerLink,
        *,
        codec: LearnedCodec | None = None,
        model: str = DEFAULT_MODEL,
        decode: bool = True,
        config: ProtocolConfig | None = None,
        policies: Sequence[Policy] = (),
        devices: Collection[str] | Callable[[str], bool] | None = None,
        on_update: Callable[[ImageUpdate], None] | None = None,
        queue_size: int = 1024,
        state: str | Path | ServerStore | None = None,
        state_sync: str = "full",
        keys: Mapping[str, bytes] | None = None,
    ) -> None:
        self.link = link
        self._codec = codec
        self._model = model
        self.decode = decode
        # Sealed downlinks count on Unix time (spec section 15); sim:// runs on its own clock.
        offset = 0.0 if isinstance(link, SimServerLink) else time.time() - time.monotonic()
        self.protocol = ServerProtocol(config, keys=keys, clock_offset=offset)
        link.prioritize(self._prioritized)  # floods cannot starve running (or known) devices
        self.policies = list(policies)
        self._devices = devices
        self.on_update = on_update
        self.counters = ServerCounters()
        self._records: dict[str, _Record] = {}
        self.references = ReferenceBank(max_devices=self.protocol.config.max_sessions)
        """Each device's last pictures, for decoding the next ones against them."""
        self._subscribers: list[asyncio.Queue[Any]] = []
        self._queue_size = queue_size
        self._pending: dict[str, ImageUpdate] = {}
        self._warn_once = OncePerDevice(log)
        """Logs bad input once per cause and device, and a flood of new devices as summaries."""
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._stopping = False
        """Set by close(): run() ends at its next uplink even if the cancellation was lost."""
        self._processing = False
        self.error: LinkError | None = None
        """Why :meth:`run` stopped, when its link broke for good."""
        self._owns_store = state is not None and not isinstance(state, ServerStore)
        self.store: ServerStore | None = (
            state if isinstance(state, ServerStore) or state is None
            else ServerStore(state, synchronous="normal" if state_sync == "normal" else "full")
        )
        self._dirty: set[str] = set()
        self._evicted = 0
        self._restored = False

    # -- clock, codec, logging ---------------------------------------------------------------

    def _now(self) -> float:
        if isinstance(self.link, SimServerLink):
            return self.link.clock.time()
        return asyncio.get_running_loop().time()

    @property
    def codec(self) -> LearnedCodec:
        if self._codec is None:
            from lpimg.codec.pipeline import LearnedCodec

            self._codec = LearnedCodec.load(self._model)
        return self._codec

    def _prioritized(self, device: str) -> bool:
        """Frames the link hands over first when frames queue up: those of sessions whose
        descriptor verified and, when the server has a device list, of every listed device (so
        a listed device's session start does not compete with garbage from unknown ids)."""
        if self.protocol.is_established(device):
            return True
        return self._devices is not None and self._allowed(device)

    def _allowed(self, device: str) -> bool:
        if self._devices is None:
            return True
        if callable(self._devices):
            return bool(self._devices(device))
        return device in self._devices

    # -- public API --------------------------------------------------------------------------

    async def __aenter__(self) -> Server:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` as a background task (what ``async with`` does)."""
        self._restore()
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="lpimg server")
        return self._task

    async def close(self) -> None:
        """Stop serving: active sessions get a final "interrupted" update, iterators end. The
        link is left open (its owner closes it)."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            # Not ``cancel(); await task``: a cancellation swallowed inside the link (3.11's
            # wait_for) would make that wait for ever, see lpimg.aio.
            failure = await cancel_and_wait(task)
            if failure is not None and not isinstance(failure, LpimgError):
                raise failure
        if not self._closed:
            self._interrupt_all("server closed")
            self._end_subscribers()
        if self.store is not None and self._owns_store:
            self.store.close()
            self.store = None

    def updates(self) -> AsyncIterator[ImageUpdate]:
        """Every update published from now on, until the server closes. Each caller gets its
        own stream; a consumer that falls more than ``queue_size`` behind loses the oldest
        non-final updates (counted), never a final one."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._subscribers.append(queue)
        if self._closed:
            queue.put_nowait(_END)
        return self._iterate(queue)

    async def _iterate(self, queue: asyncio.Queue[Any]) -> AsyncIterator[ImageUpdate]:
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            if queue in self._subscribers:
                self._subscribers.remove(queue)

    @property
    def rejections(self) -> dict[str, int]:
        """Every uplink refused, by cause (``lpimg.protocol.stats.SERVER_CAUSES``, plus
        ``unknown_device`` for devices this server does not serve)."""
        found = dict(self.protocol.stats.rejections)
        if self.counters.unknown_devices:
            found["unknown_device"] = self.counters.unknown_devices
        return found

    def session(self, device: str) -> SessionHandle:
        """The current (or last) session of ``device``; :class:`lpimg.LpimgError` if none."""
        record = self._records.get(device)
        if record is None:
            raise LpimgError(f"no session from device {device!r}")
        return SessionHandle(self, record)

    def sessions(self) -> list[SessionHandle]:
        """Every device's current or last session."""
        return [SessionHandle(self, record) for record in self._records.values()]

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled or the link is closed; a link that breaks for good raises
        :class:`lpimg.LinkError`. Either way every active session gets its final
        ("interrupted") update and every :meth:`updates` iterator ends."""
        link = self.link
        protocol = self.protocol
        why = "server closed"
        self._restore()
        try:
            while not self._stopping:
                now = self._now()
                deadline = protocol.get_timer()
                if deadline is not None and deadline <= now:
                    protocol.handle_timer(now)
                    self._process(now)
                    self._publish()
                    self._persist(everything=True)
                    continue
                timeout = None if deadline is None else deadline - now
                try:
                    item = await self._recv(timeout)
                except LinkError as exc:
                    if link.closed:
                        why = "link closed"
                        return
                    why = f"link failed: {exc}"
                    self.error = exc
                    raise
                if item is None:
                    continue
                try:
                    await self._uplink(*item)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception:  # one device's bad luck must not stop every other device
                    self.counters.internal_errors += 1
                    log.exception("failed to handle an uplink from %r; serving on", item[0])
        finally:
            self._interrupt_all(why)
            self._end_subscribers()

    def _end_subscribers(self) -> None:
        self._closed = True
        for queue in self._subscribers:
            queue.put_nowait(_END)

    async def _recv(self, timeout: float | None) -> tuple[str, bytes] | None:
        if isinstance(self.link, SimServerLink):
            return await self.link.recv_within(timeout)
        try:
            async with asyncio.timeout(timeout):
                return await self.link.recv()
        except TimeoutError:
            return None

    async def _uplink(self, device: str, frame: bytes) -> None:
        counters = self.counters
        counters.uplinks += 1
        if not self._allowed(device):
            counters.unknown_devices += 1
            self._warn_once("unknown", device, "dropping uplinks from unknown device %r", device)
            return
        protocol = self.protocol
        now = self._now()
        malformed = protocol.stats.malformed
        limited = dict(protocol.stats.limit_rejections)
        protocol.receive_frame(device, frame, now)
        if protocol.stats.malformed > malformed:
            counters.malformed += 1
        for cause in protocol.stats.take_fresh():
            self._warn_once(cause, device, "%r: rejected an uplink (%s: %s): %s", device, cause,
                            SERVER_CAUSES.get(cause, cause), frame[:16].hex())
        if protocol.stats.limit_rejections != limited:
            self._warn_limits(device, limited)
        elif protocol.stats.malformed == malformed:
            self._dirty.add(device)  # dropped frames change nothing: no write, no fsync
        self._process(now)
        answer = protocol.next_frame(device, now)
        self._process(now)  # the answer may complete the session
        self._publish()
        self._persist()  # committed before the answer: nothing acknowledged is ever lost
        if answer is not None:
            try:
                await self.link.send(device, answer)
            except LinkError as exc:
                counters.send_failures += 1
                self._warn_once("send", device, "cannot answer %r: %s", device, exc)

    def _warn_limits(self, device: str, before: dict[str, int]) -> None:
        """Log a resource bound's refusal once per cause and device (all are counted in
        ``protocol.stats.limit_rejections``)."""
        for cause, count in self.protocol.stats.limit_rejections.items():
            if count > before.get(cause, 0):
                self._warn_once(f"limit:{cause}", device, "%r: refused by the server's %s", device, cause)

    # -- events ------------------------------------------------------------------------------

    def _process(self, now: float) -> None:
        """Drain the core's events, decode, build updates and apply the policies."""
        protocol = self.protocol
        dirty: list[_Record] = []
        self._processing = True
        try:
            while True:
                event = protocol.next_event()
                if event is None:
                    if not dirty:
                        break
                    # Updates (and their policies, which may add events) once per batch.
                    batch, dirty = dirty, []
                    for record in batch:
                        if record.active and self._records.get(record.device) is record:
                            self._update(record, now)
                    continue
                record = self._record_for(event)
                device = getattr(event, "device", None)
                if device is not None:
                    self._dirty.add(device)
                if isinstance(event, SessionStarted):
                    self._started(event, now)
                elif isinstance(event, LayerReceived):
                    if record is not None and record.active:
                        self._layer(record, event, now)
                        if record not in dirty:
                            dirty.append(record)
                elif isinstance(event, LayersAnnounced):
                    if record is not None:
                        what = "declined" if not event.layer_sizes else f"{len(event.layer_sizes)} layers"
                        log.info("%s: refine answered (%s, passes from %d over %s)", event.device, what,
                                 event.first_pass, event.region or "the whole image")
                elif isinstance(event, SessionResumed):
                    log.info("%s: session %04x resumed after a device restart", event.device,
                             event.session_id)
                elif isinstance(event, SessionCompleted | Stopped | Aborted):
                    self._ended(record, event, now)
        finally:
            self._processing = False

    def _record_for(self, event: Event) -> _Record | None:
        device = getattr(event, "device", None)
        record = self._records.get(device) if device is not None else None
        if record is None or record.session_id != event.session_id:
            return None
        return record

    def _started(self, event: SessionStarted, now: float) -> None:
        old = self._records.get(event.device)
        if old is not None and old.active:
            self._finish(old, "interrupted: superseded by a new session", now)
        record = _Record(
            device=event.device,
            session_id=event.session_id,
            started_at=now,
            updated_at=now,
            model_id=event.model_id,
            geometry=event.geometry,
            manifest=event.manifest,
            image_id=image_id(event.session_id, event.manifest),
        )
        self._records[event.device] = record
        self.counters.sessions_started += 1
        log.info("%s: session %04x started: %dx%d, model %#06x, %d layers", event.device,
                 event.session_id, *event.geometry, event.model_id, len(event.layer_sizes))
        if not self.decode:
            return
        try:
            header = stream_header(event.model_id, event.geometry, event.manifest)
            codec = self.codec
            if header.model_id != codec.model_id:
                raise CodecError(f"coded by model {header.model_id:#06x}; this server decodes "
                                 f"{codec.name} ({codec.model_id:#06x})")
            record.header = header
            if header.condition is None:
                record.decoder = codec.decoder(header)
                base = None
            else:
                from lpimg.codec.reference import ConditionalDecoder

                frame_id = event.manifest.reference_id
                assert frame_id is not None  # stream_header checked both keys
                base = self.references.resolve(event.device, frame_id, header.condition.reference, codec)
                if base is None:
                    self._refuse_reference(record, frame_id, header.condition.reference, now)
                    return
                record.decoder = ConditionalDecoder(codec, header, base.state)
            record.source = self.references.begin(event.device, event.session_id, header, base)
        except CodecError as exc:
            self.counters.rejected += 1
            record.stop_why = f"rejected: {exc}"
            self._warn_once("rejected", event.device, "%s: rejecting session %04x: %s",
                            event.device, event.session_id, exc)
            self.protocol.abort(event.device, AbortReason.REJECTED, now)

    def _refuse_reference(self, record: _Record, frame_id: int, digest: bytes, now: float) -> None:
        self.counters.rejected += 1
        self.counters.unknown_references += 1
        record.stop_why = (f"rejected: unknown reference (frame {frame_id:04x}, state {digest.hex()}): "
                           "the device sends the picture again without it")
        self._warn_once("reference", record.device, "%s: session %04x %s", record.device,
                        record.session_id, record.stop_why)
        self.protocol.abort(record.device, AbortReason.UNKNOWN_REFERENCE, now)

    def _layer(self, record: _Record, event: LayerReceived, now: float) -> None:
        record.received.append(LayerInfo(event.index, event.pass_index, event.region, len(event.data), now))
        record.bytes += len(event.data)
        record.updated_at = now
        if self.store is not None:
            self.store.add_layer(record.device, record.session_id, StoredLayer(
                event.index, event.pass_index, event.region, self._wall(now), len(event.data), event.data))
        decoder = record.decoder
        if decoder is None:
            return
        spec = layer_spec(event.pass_index, event.region)
        try:
            decoder.apply(spec, event.data)
            if record.source is not None:
                record.source.layers.append((spec, event.data))
        except CodecError as exc:
            self.counters.decode_errors += 1
            record.decoder = None
            record.stop_why = f"aborted: layer {event.index} does not decode ({exc})"
            self._warn_once("decode", record.device, "%s: %s", record.device, record.stop_why)
            self.protocol.abort(record.device, AbortReason.MALFORMED, now)

    def _ended(self, record: _Record | None, event: SessionCompleted | Stopped | Aborted, now: float) -> None:
        if isinstance(event, SessionCompleted):
            reason = "complete"
        elif isinstance(event, Stopped):
            reason = "stopped"
            if record is not None and record.stop_why:
                reason = f"stopped: {record.stop_why}"
        else:
            reason = event.reason if event.reason.startswith("aborted") else f"aborted: {event.reason}"
            if record is not None and record.stop_why and not event.by_peer:
                reason = record.stop_why
        if record is None:
            log.info("%s: session %04x ended before it was described: %s", event.device,
                     event.session_id, reason)
            if isinstance(event, Aborted):
                self.counters.aborted += 1
            return
        if record.active:
            self._finish(record, reason, now)

    def _finish(self, record: _Record, reason: str, now: float) -> None:
        record.reason = reason
        record.updated_at = now
        counters = self.counters
        if reason == "complete":
            counters.completed += 1
        elif reason.startswith("stopped"):
            counters.stopped += 1
        elif reason.startswith("interrupted"):
            counters.interrupted += 1
        elif not reason.startswith("rejected"):
            counters.aborted += 1
        log.info("%s: session %04x ended: %s (%d layers, %d bytes)", record.device, record.session_id,
                 reason, len(record.received), record.bytes)
        update = self._update(record, now, final=True)
        if record.done is not None and not record.done.done():
            record.done.set_result(update)

    def _update(self, record: _Record, now: float, *, final: bool = False) -> ImageUpdate:
        decoder = record.decoder
        snapshot: _Snapshot | _ConditionalSnapshot | None = None
        if decoder is not None:
            from lpimg.codec.reference import ConditionalDecoder

            if isinstance(decoder, ConditionalDecoder):
                snapshot = _ConditionalSnapshot.of(decoder)
            else:
                bits = decoder.bitplanes
                snapshot = _Snapshot(decoder.codec, bits.q.copy(), bits.passes.copy(), bits.top,
                                     record.geometry[0], record.geometry[1])
        header = record.header
        update = ImageUpdate(
            device=record.device,
            session_id=record.session_id,
            image_id=record.image_id,
            layers=len(record.received),
            bytes=record.bytes,
            final=final,
            reason=record.reason if final else None,
            started_at=record.started_at,
            updated_at=now,
            wall_time=time.time(),
            width=record.geometry[0],
            height=record.geometry[1],
            model_id=record.model_id,
            total_passes=header.total_passes if header is not None else 0,
            manifest=record.manifest,
            received=tuple(record.received),
            _snapshot=snapshot,
        )
        record.latest = update
        pending = self._pending.get(record.device)
        if final or pending is None or not pending.final:
            self._pending[record.device] = update
        if not final:
            self._apply_policies(record, update, now)
        return update

    def _apply_policies(self, record: _Record, update: ImageUpdate, now: float) -> None:
        for policy in self.policies:
            if not record.active:
                return
            try:
                outcome = policy(update)
            except Exception:  # one buggy policy must not take every device down
                log.exception("%s: policy %r failed", record.device, policy)
                continue
            actions: Sequence[Action] = (
                () if outcome is None else (outcome,) if isinstance(outcome, Stop | Refine) else outcome
            )
            for action in actions:
                if isinstance(action, Stop):
                    self._stop(record, action.why, now)
                    return
                self._refine(record, action)

    # -- controls ----------------------------------------------------------------------------

    def _stop(self, record: _Record, why: str, now: float | None = None) -> None:
        if not record.active:
            return
        now = self._now() if now is None else now
        record.stop_why = why
        try:
            self.protocol.stop(record.device, now)
        except ProtocolError as exc:
            log.info("%s: cannot stop: %s", record.device, exc)
            return
        if not self._processing:  # called by the application: report the end at once
            self._process(now)
            self._publish()
            self._dirty.add(record.device)
            self._persist()

    def _refine(self, record: _Record, request: Refine) -> None:
        if not record.active:
            raise LpimgError(f"{record.device}: session {record.session_id:04x} has ended ({record.reason})")
        try:
            self.protocol.refine(record.device, request.region, request.pass_index, request.priority)
        except (ProtocolError, WireError) as exc:
            log.warning("%s: refine %s not queued: %s", record.device, request, exc)
            return
        log.info("%s: asked for passes up to %d over %s", record.device, request.pass_index,
                 request.region or "the whole image")
        self._dirty.add(record.device)
        if not self._processing:
            self._persist()

    # -- persistence ---------------------------------------------------------------------------

    def _clock_offset(self) -> float:
        """Unix time minus this server's clock (0 for sim://, whose virtual clock goes on)."""
        if isinstance(self.link, SimServerLink):
            return 0.0
        return time.time() - self._now()

    def _wall(self, now: float) -> float:
        return now + self._clock_offset()

    def _persist(self, *, everything: bool = False) -> None:
        """Write every session changed since the last call, then commit (one transaction)."""
        store = self.store
        if store is None:
            return
        protocol = self.protocol
        if protocol.stats.sessions_evicted != self._evicted:
            self._evicted = protocol.stats.sessions_evicted
            everything = True
        devices, self._dirty = self._dirty, set()
        if everything:
            devices |= store.devices() | set(protocol.devices())
        if not devices:
            return
        offset = self._clock_offset()

        def to_wall(value: float) -> float:
            return value + offset

        wrote = False
        for device in devices:
            snapshot = protocol.export_session(device)
            if snapshot is None:
                if store.holds(device):
                    store.forget(device)
                    wrote = True
                continue
            record = self._records.get(device)
            app = None
            if record is not None and record.session_id == snapshot.session_id:
                app = {
                    "started_at": to_wall(record.started_at),
                    "updated_at": to_wall(record.updated_at),
                    "model_id": record.model_id,
                    "geometry": list(record.geometry),
                    "manifest": encode_manifest(record.manifest).hex(),
                    "image_id": record.image_id,
                    "reason": record.reason,
                    "stop_why": record.stop_why,
                }
            store.save(snapshot, app, to_wall)
            wrote = True
        if wrote:
            store.commit()
            self.counters.state_commits += 1

    def _restore(self) -> None:
        """Take back the sessions of the state file (once, when the server starts)."""
        store = self.store
        if store is None or self._restored:
            return
        self._restored = True
        offset = self._clock_offset()

        def from_wall(value: float) -> float:
            return value - offset

        restored: list[_Record] = []
        for stored in list(store.load(from_wall)):
            device = stored.snapshot.device
            try:
                self.protocol.restore_session(stored.snapshot)
            except ProtocolError as exc:
                log.warning("%s: dropping a stored session that cannot be restored: %s", device, exc)
                store.forget(device)
                continue
            self.counters.sessions_restored += 1
            if stored.app is not None:
                record = self._restore_record(stored, from_wall)
                if record is not None:
                    restored.append(record)
        store.commit()
        if self.counters.sessions_restored:
            log.info("restored %d sessions (%d described) from %s", self.counters.sessions_restored,
                     len(restored), store.path)

    def _restore_record(
        self, stored: StoredServerSession, from_wall: Callable[[float], float]
    ) -> _Record | None:
        snapshot, app = stored.snapshot, stored.app
        assert app is not None
        try:
            manifest = decode_manifest(bytes.fromhex(app["manifest"]))
            record = _Record(
                device=snapshot.device,
                session_id=snapshot.session_id,
                started_at=from_wall(float(app["started_at"])),
                updated_at=from_wall(float(app["updated_at"])),
                model_id=int(app["model_id"]),
                geometry=(int(app["geometry"][0]), int(app["geometry"][1])),
                manifest=manifest,
                image_id=str(app["image_id"]),
                reason=app["reason"],
                stop_why=app["stop_why"],
            )
        except (KeyError, TypeError, ValueError, LpimgError) as exc:
            log.warning("%s: the stored view of session %04x is unreadable (%s); its layers are "
                        "still received but not decoded", snapshot.device, snapshot.session_id, exc)
            return None
        record.received = [
            LayerInfo(layer.index, layer.pass_index, layer.region, layer.size, from_wall(layer.at))
            for layer in stored.layers
        ]
        record.bytes = sum(layer.size for layer in stored.layers)
        self._records[record.device] = record
        if not self.decode or not record.active:
            return record
        try:
            header = stream_header(record.model_id, record.geometry, record.manifest)
            decoder = self.codec.decoder(header)
            for layer in stored.layers:
                if layer.data is None:
                    raise CodecError(f"layer {layer.index} is not stored")
                decoder.apply(layer_spec(layer.pass_index, layer.region), layer.data)
        except CodecError as exc:
            log.warning("%s: cannot decode restored session %04x again: %s", record.device,
                        record.session_id, exc)
            return record
        record.header = header
        record.decoder = decoder
        return record

    def _interrupt_all(self, why: str) -> None:
        now = self._now()
        for record in list(self._records.values()):
            if record.active:
                self._finish(record, f"interrupted: {why}", now)
        self._publish()

    def _publish(self) -> None:
        pending, self._pending = self._pending, {}
        for update in pending.values():
            self.counters.updates += 1
            for queue in self._subscribers:
                if queue.qsize() >= self._queue_size:
                    self._drop_oldest(queue)
                queue.put_nowait(update)
            if self.on_update is not None:
                try:
                    self.on_update(update)
                except Exception:
                    log.exception("on_update callback failed")

    def _drop_oldest(self, queue: asyncio.Queue[Any]) -> None:
        kept = []
        dropped = False
        while not queue.empty():
            item = queue.get_nowait()
            if not dropped and isinstance(item, ImageUpdate) and not item.final:
                dropped = True
                self.counters.updates_dropped += 1
                continue
            kept.append(item)
        for item in kept:
            queue.put_nowait(item)


def image_id(session_id: int, manifest: Manifest) -> str:
    """A file-name-safe id for a session's picture: its capture time (UTC) when the manifest
    has one, and the session id (``20240501T120000Z-1a2b`` or ``s1a2b``)."""
    if manifest.capture_time is not None:
        try:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(manifest.capture_time))
            return f"{stamp}-{session_id:04x}"
        except (OverflowError, OSError, ValueError):
            pass
    return f"s{session_id:04x}"
