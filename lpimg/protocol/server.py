"""The server side: many devices, keyed by their link address, no I/O.

A server answers; it never speaks first on LoRaWAN class A. Each uplink opens one downlink
opportunity for its device, and the server fills it only when the device asked (ACK flag, poll,
resume) or when it has something the device must hear (stop, abort, a refine request). Every
session's memory is bounded by :class:`ProtocolConfig`, and so is the number of sessions.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from lpimg.errors import ProtocolError, WireError
from lpimg.protocol.auth import DownlinkSealer, record_check
from lpimg.protocol.config import MIN_FRAGMENT_SIZE, ProtocolConfig
from lpimg.protocol.events import (
    Aborted,
    Event,
    LayerReceived,
    LayersAnnounced,
    SessionCompleted,
    SessionResumed,
    SessionStarted,
    Stopped,
)
from lpimg.protocol.reassembly import (
    Added,
    HeaderVerified,
    LayerVerified,
    Outcome,
    Reassembler,
    ReassemblyState,
    RecordFailed,
    Rejected,
)
from lpimg.protocol.stats import ServerStats
from lpimg.protocol.timers import DeadlineQueue, FinishOrder
from lpimg.wire import (
    PROTOCOL_VERSION,
    AbortReason,
    AuthStartFrame,
    DataFrame,
    Descriptor,
    DeviceAbortFrame,
    DownlinkFrame,
    LayerCompleteFrame,
    PollFrame,
    RefineFrame,
    Region,
    ResumeFrame,
    ServerAbortFrame,
    StartFrame,
    StopFrame,
    build_downlink,
    crc32,
    parse_uplink,
)
from lpimg.wire.auth import TRAILER_SIZE


class SessionState(Enum):
    """Where a server-side session stands."""

    ACTIVE = "active"
    COMPLETE = "complete"
    STOPPED = "stopped"
    ABORTED = "aborted"


@dataclass(frozen=True)
class _Refine:
    region: Region | None
    pass_index: int
    priority: int


@dataclass
class _Session:
    device: str
    session_id: int
    fragment_size: int
    reassembler: Reassembler | None
    last_activity: float
    state: SessionState = SessionState.ACTIVE
    finished_at: float | None = None
    abort_reason: AbortReason = AbortReason.UNSPECIFIED
    layer_count: int = 0
    refines: deque[_Refine] = field(default_factory=deque)
    answered_groups: int = 0
    refine_sent: bool = False
    """A REFINE went out for the head request since the last state answer."""
    refine_ever_sent: bool = False
    left: bool = False
    """The device aborted the session itself, so it needs no notice."""
    window_open: bool = False
    requested: bool = False
    fingerprints: bytearray = field(default_factory=bytearray)
    """16 bits per fragment index the session held (0: none), so a finished session can tell
    its own late fragments from a new session's whose start was lost (7.2)."""
    started_at: float = 0.0
    reserved: int = 0
    """Bytes of ``max_total_buffer`` this session holds in reserve while active."""
    key: bytes | None = None
    """The device's key when the session is authenticated (records tagged, downlinks sealed)."""


@dataclass(frozen=True)
class SessionSnapshot:
    """One server-side session as plain values, for a store to persist and restore.

    :meth:`ServerProtocol.export_session` gives it, :meth:`ServerProtocol.restore_session` takes
    it back; the core never does the I/O itself. Times are on the caller's clock (``now``).
    Per-uplink flags (the open downlink window) are not part of it: a restored session waits
    for the device's next uplink.
    """

    device: str
    session_id: int
    fragment_size: int
    state: SessionState
    started_at: float
    last_activity: float
    finished_at: float | None
    abort_reason: AbortReason
    layer_count: int
    refines: tuple[tuple[Region | None, int, int], ...]
    """Pending refine requests: (region, pass index, priority), the outstanding one first."""
    answered_groups: int
    refine_sent: bool
    refine_ever_sent: bool
    left: bool
    reassembly: ReassemblyState | None
    """The receive state while the session is active (None once it ended)."""
    fingerprints: bytes = b""
    """The per-fragment fingerprints a finished session keeps (7.2)."""


@dataclass(frozen=True)
class SessionInfo:
    """A read-only view of one server-side session, for applications and tests."""

    device: str
    session_id: int
    state: SessionState
    layers_announced: int
    layers_delivered: int
    held_bytes: int
    fragment_size: int


class ServerProtocol:
    """The server core for any number of devices (sans-I/O; see docs/DESIGN-NOTES.md).

    ``keys`` (device id -> 128-bit key, e.g. a :class:`~lpimg.endpoint.keys.KeyStore`) makes
    those devices authenticate (spec section 15): only START_AUTH opens their sessions, their
    records are checked with AES-CMAC tags and every downlink to them is sealed. The downlink
    counter follows ``now + clock_offset`` read as Unix seconds, so give ``clock_offset`` when
    ``now`` is not Unix time (a monotonic clock), or counters restart low after a restart.
    """

    def __init__(
        self,
        config: ProtocolConfig | None = None,
        *,
        keys: Mapping[str, bytes] | None = None,
        clock_offset: float = 0.0,
    ) -> None:
        self.config = config or ProtocolConfig()
        self.stats = ServerStats()
        self.keys: Mapping[str, bytes] = keys if keys is not None else {}
        self.clock_offset = clock_offset
        self._sealer = DownlinkSealer(max(4 * self.config.max_sessions, 1024))
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._replies: OrderedDict[str, tuple[bytes, bool]] = OrderedDict()
        """One-off answers to devices without a session (unknown session, server full)."""
        self._events: deque[Event] = deque()
        self._active_count = 0
        self._reserved_total = 0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """Per-device token buckets of the rate limit: (tokens, time of the last refill)."""
        self._timers = DeadlineQueue(self._deadline_of, lambda: self._sessions)
        self._finish_order = FinishOrder(self._finished_at)

    # -- sans-I/O API ------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def receive_frame(self, device: str, data: bytes, now: float) -> None:
        """Take one uplink from ``device``. Bad frames are counted and dropped, never raised."""
        self.stats.uplinks += 1
        self._timers.touch(device)
        if self.config.rate_limit is not None and not self._take_token(device, now):
            self.stats.limited("rate_limit")
            return
        try:
            frame = parse_uplink(data)
        except WireError:
            self.stats.malformed += 1
            self.stats.reject("malformed")
            return
        session = self._sessions.get(device)
        if isinstance(frame, StartFrame):
            self._on_start(device, session, frame, now)
            return
        asks = isinstance(frame, PollFrame | ResumeFrame) or (
            isinstance(frame, DataFrame) and frame.ack
        )
        if session is None or (
            isinstance(frame, ResumeFrame) and frame.session_id != session.session_id
        ):
            # Answered even unasked: a device whose start was lost learns it at once.
            self.stats.unknown_session += 1
            self.stats.reject("unknown_session")
            if not isinstance(frame, DeviceAbortFrame):
                self._reply(device, ServerAbortFrame(AbortReason.UNKNOWN_SESSION))
            return
        if (
            isinstance(frame, DataFrame)
            and session.state is not SessionState.ACTIVE
            and _contradicts(session, frame.index, frame.payload)
        ):
            # Not a fragment of the finished session, which held other bytes there: the
            # device's next session, whose start was lost. Answered as "unknown session" so the
            # device sends its start again, instead of the old session's end (frames carry no
            # session id), which would make it believe the server had its new picture.
            self.stats.unknown_session += 1
            self._reply(device, ServerAbortFrame(AbortReason.UNKNOWN_SESSION))
            return
        session.last_activity = now
        session.window_open = True
        session.requested = session.requested or asks
        if isinstance(frame, DataFrame):
            self._on_data(session, frame)
        elif isinstance(frame, ResumeFrame):
            # The rebooted device first needs the state; a pending refine follows after.
            session.refine_sent = True
            self._events.append(SessionResumed(device, session.session_id))
        elif isinstance(frame, DeviceAbortFrame) and session.state is SessionState.ACTIVE:
            text = f"aborted by device: {frame.reason.text}"
            self._finish(session, SessionState.ABORTED, now, frame.reason)
            session.left = True
            self._events.append(
                Aborted(device, session.session_id, text, frame.reason, by_peer=True)
            )

    def next_frame(self, device: str, now: float) -> bytes | None:
        """The downlink for ``device`` in the window that just opened, or None.

        At most one per uplink received: a second call for the same uplink returns None.
        """
        queued = self._replies.pop(device, None)
        if queued is not None:
            reply, sealed = queued
            self.stats.downlinks += 1
            key = self.keys.get(device) if sealed else None
            return reply if key is None else self._seal(key, device, reply, now, None)
        session = self._sessions.get(device)
        if session is None or not session.window_open:
            return None
        frame = self._choose(session, now)
        if frame is None:
            return None
        session.window_open = False
        session.requested = False
        self.stats.downlinks += 1
        data = build_downlink(frame)
        if session.key is None:
            return data
        return self._seal(session.key, device, data, now, session.session_id)

    def _seal(
        self, key: bytes, device: str, frame: bytes, now: float, session_id: int | None
    ) -> bytes:
        return self._sealer.seal(key, device, frame, now + self.clock_offset, session_id)

    def get_timer(self) -> float | None:
        """The earliest idle timeout or retention expiry of any session."""
        return self._timers.earliest()

    def handle_timer(self, now: float) -> None:
        """End idle sessions and forget finished ones whose retention has passed."""
        for device in self._timers.due(now):
            session = self._sessions[device]
            self._timers.touch(device)
            if session.state is SessionState.ACTIVE:
                assert session.reassembler is not None
                if session.reassembler.at_rest():
                    self._complete(session, now)
                elif not session.reassembler.layer_sizes and now >= self._start_deadline(session):
                    self.stats.limited("start_timeout")
                    self._abort(session, AbortReason.IDLE_TIMEOUT, now,
                                "idle timeout: no session header within start_timeout")
                else:
                    self.stats.limited("idle_timeout")
                    self._abort(session, AbortReason.IDLE_TIMEOUT, now, "idle timeout")
            else:
                del self._sessions[device]
                self._finish_order.discard(device)

    # -- application controls ----------------------------------------------------------------

    def stop(self, device: str, now: float) -> None:
        """Tell ``device`` it has sent enough; its unverified data is dropped."""
        session = self._active(device)
        self._finish(session, SessionState.STOPPED, now)
        self._events.append(Stopped(device, session.session_id))

    def refine(
        self,
        device: str,
        region: Region | None,
        pass_index: int,
        priority: int = 0,
        now: float | None = None,
    ) -> None:
        """Ask ``device`` for codec passes up to ``pass_index`` over ``region`` (None: all).

        Requests are sent one at a time, in order; each is answered by a group of layers
        (``LayersAnnounced``, then ``LayerReceived`` events) or declined (an empty group). The
        session does not complete while a request is outstanding. ``now`` is accepted for
        symmetry with the other controls; a request takes effect at the next downlink window.
        """
        session = self._active(device)
        if len(session.refines) >= self.config.max_pending_refines:
            raise ProtocolError(
                f"{device}: {len(session.refines)} refine requests already pending"
            )
        request = _Refine(region, pass_index, priority)
        RefineFrame(0, region, pass_index, priority)  # validates the fields (WireError)
        session.refines.append(request)

    def abort(self, device: str, reason: AbortReason, now: float) -> None:
        """End ``device``'s session (for example to reject its model or geometry)."""
        session = self._active(device)
        self._abort(session, reason, now, f"aborted: {reason.text}")

    def session(self, device: str) -> SessionInfo | None:
        """What the server holds for ``device``, or None."""
        session = self._sessions.get(device)
        if session is None:
            return None
        reassembler = session.reassembler
        return SessionInfo(
            device,
            session.session_id,
            session.state,
            len(reassembler.layer_sizes) if reassembler else session.layer_count,
            reassembler.verified if reassembler else session.layer_count,
            reassembler.held_bytes if reassembler else 0,
            session.fragment_size,
        )

    def is_established(self, device: str) -> bool:
        """Whether ``device`` has an active session whose descriptor verified: a transfer under
        way, whose frames a server short of time should handle before anyone else's."""
        session = self._sessions.get(device)
        return (
            session is not None
            and session.reassembler is not None
            and bool(session.reassembler.layer_sizes)
        )

    def devices(self) -> list[str]:
        """Addresses of every device the server holds a session for."""
        return list(self._sessions)

    # -- snapshots (persistence lives outside the core) --------------------------------------

    def export_session(self, device: str) -> SessionSnapshot | None:
        """``device``'s session as values (None if the server holds none)."""
        session = self._sessions.get(device)
        if session is None:
            return None
        reassembler = session.reassembler
        return SessionSnapshot(
            device,
            session.session_id,
            session.fragment_size,
            session.state,
            session.started_at,
            session.last_activity,
            session.finished_at,
            session.abort_reason,
            session.layer_count,
            tuple((r.region, r.pass_index, r.priority) for r in session.refines),
            session.answered_groups,
            session.refine_sent,
            session.refine_ever_sent,
            session.left,
            reassembler.export() if reassembler is not None else None,
            bytes(session.fingerprints),
        )

    def restore_session(self, snapshot: SessionSnapshot) -> None:
        """Take back a session :meth:`export_session` gave (after a restart), replacing any the
        device has here. No event is emitted: the application restores its own view. Restored
        sessions are admitted whatever the limits, which only apply to new starts.
        A damaged snapshot raises :class:`ProtocolError`."""
        active = snapshot.state is SessionState.ACTIVE
        if active != (snapshot.reassembly is not None):
            raise ProtocolError(f"{snapshot.device}: snapshot state and reassembly disagree")
        key = self.keys.get(snapshot.device)
        checks = None
        if key is not None:  # an authenticated session comes back authenticated (spec 15)
            session_key, session_id = key, snapshot.session_id
            checks = lambda number: record_check(session_key, session_id, number)  # noqa: E731
        try:
            reassembler = (
                Reassembler.restore(snapshot.reassembly, self.config, checks)
                if snapshot.reassembly is not None
                else None
            )
        except WireError as exc:
            raise ProtocolError(f"{snapshot.device}: damaged session snapshot: {exc}") from exc
        old = self._sessions.pop(snapshot.device, None)
        if old is not None and old.state is SessionState.ACTIVE:
            self._release(old)
        session = _Session(
            snapshot.device,
            snapshot.session_id,
            snapshot.fragment_size,
            reassembler,
            snapshot.last_activity,
            snapshot.state,
            snapshot.finished_at,
            snapshot.abort_reason,
            snapshot.layer_count,
            deque(_Refine(*refine) for refine in snapshot.refines),
            snapshot.answered_groups,
            snapshot.refine_sent,
            snapshot.refine_ever_sent,
            snapshot.left,
            started_at=snapshot.started_at,
            fingerprints=bytearray(snapshot.fingerprints),
            key=key,
        )
        self._sessions[snapshot.device] = session
        self._timers.touch(snapshot.device)
        if active:
            self._admit(session)
        elif snapshot.finished_at is not None:
            self._finish_order.add(snapshot.device, snapshot.finished_at)

    # -- uplink handling ---------------------------------------------------------------------

    def _on_start(
        self, device: str, session: _Session | None, frame: StartFrame, now: float
    ) -> None:
        key = self.keys.get(device)
        if isinstance(frame, AuthStartFrame) and key is None:
            # Nothing this server sends could be verified by the device: it stays unanswered.
            self.stats.sessions_rejected += 1
            self.stats.reject("no_key")
            return
        if key is not None and not isinstance(frame, AuthStartFrame):
            # A device with a key never runs a plain session: a plain start is a misconfigured
            # device (told in plain words) or a downgrade attempt (which then changes nothing).
            self.stats.sessions_rejected += 1
            self.stats.reject("auth_required")
            self._reply(device, ServerAbortFrame(AbortReason.REJECTED), seal=False)
            return
        if frame.version != PROTOCOL_VERSION:
            self.stats.sessions_rejected += 1
            self.stats.reject("unsupported_version")
            self._reply(device, ServerAbortFrame(AbortReason.UNSUPPORTED_VERSION))
            return
        if session is not None and session.session_id == frame.session_id:
            self.stats.duplicates += 1
            session.last_activity = now
            session.window_open = True
            session.requested = session.requested or frame.ack
            if session.fragment_size != frame.fragment_size:
                self.stats.malformed += 1
            elif session.state is SessionState.ACTIVE:
                self._on_data(session, DataFrame(0, frame.chunk, frame.ack))
            return
        if not MIN_FRAGMENT_SIZE <= frame.fragment_size <= self.config.max_fragment_size:
            self.stats.sessions_rejected += 1
            self.stats.reject("limit")
            self._reply(device, ServerAbortFrame(AbortReason.LIMIT_EXCEEDED))
            return
        config = self.config
        if config.buffer_need(frame.fragment_size, config.max_header_bytes + 8) > config.max_session_buffer:
            self.stats.sessions_rejected += 1
            self.stats.limited("max_session_buffer")
            self._reply(device, ServerAbortFrame(AbortReason.LIMIT_EXCEEDED))
            return
        if session is not None:
            if session.state is SessionState.ACTIVE:
                text = f"superseded by session {frame.session_id}"
                self._finish(session, SessionState.ABORTED, now, AbortReason.CANCELLED)
                self._events.append(
                    Aborted(device, session.session_id, text, AbortReason.CANCELLED)
                )
            del self._sessions[device]
        elif len(self._sessions) >= config.max_sessions and not self._evict():
            self._refuse(device, "max_sessions")
            return
        if self._active_count >= config.max_active_sessions:
            self._refuse(device, "max_active_sessions")
            return
        reservation = config.session_reservation(frame.fragment_size)
        if self._reserved_total + reservation > config.max_total_buffer:
            self._refuse(device, "max_total_buffer")
            return
        checks = None
        if key is not None:
            session_key, session_id = key, frame.session_id
            checks = lambda number: record_check(session_key, session_id, number)  # noqa: E731
        session = _Session(
            device,
            frame.session_id,
            frame.fragment_size,
            Reassembler(frame.fragment_size, config, checks),
            now,
            window_open=True,
            requested=frame.ack,
            started_at=now,
            key=key,
        )
        self._sessions[device] = session
        self._admit(session)
        self.stats.sessions_started += 1
        self._on_data(session, DataFrame(0, frame.chunk, frame.ack))

    def _on_data(self, session: _Session, frame: DataFrame) -> None:
        if session.state is not SessionState.ACTIVE:
            self.stats.after_finish += 1
            self.stats.reject("after_finish")
            return
        reassembler = session.reassembler
        assert reassembler is not None
        if reassembler.held_bytes + len(frame.payload) > self.config.max_session_buffer:
            self.stats.limited("max_session_buffer")  # unreachable while the header checks hold
            return
        added = reassembler.add(frame.index, frame.payload)
        if added is Added.DUPLICATE:
            self.stats.duplicates += 1
        elif added is Added.OUT_OF_WINDOW:
            self.stats.out_of_window += 1
            self.stats.reject("out_of_window")
        elif added is Added.BAD_LENGTH:
            self.stats.bad_length += 1
            self.stats.reject("bad_length")
        else:
            _remember(session, frame.index, frame.payload)
            self._absorb(session, reassembler.advance(), session.last_activity)

    def _absorb(self, session: _Session, outcomes: list[Outcome], now: float) -> None:
        """Turn the reassembler's verified records into events (or end the session)."""
        device, session_id = session.device, session.session_id
        for outcome in outcomes:
            if isinstance(outcome, LayerVerified):
                self._events.append(
                    LayerReceived(
                        device,
                        session_id,
                        outcome.index,
                        outcome.data,
                        outcome.pass_index,
                        outcome.region,
                    )
                )
            elif isinstance(outcome, HeaderVerified):
                header = outcome.header
                if isinstance(header, Descriptor):
                    self._events.append(
                        SessionStarted(
                            device,
                            session_id,
                            header.model_id,
                            (header.width, header.height),
                            header.layer_sizes,
                            header.manifest,
                        )
                    )
                else:
                    session.answered_groups += 1
                    if session.refines:
                        session.refines.popleft()
                    session.refine_sent = session.refine_ever_sent = False
                    self._events.append(
                        LayersAnnounced(
                            device,
                            session_id,
                            outcome.first_layer,
                            header.layer_sizes,
                            header.region,
                            header.first_pass,
                        )
                    )
            elif isinstance(outcome, RecordFailed):
                self.stats.crc_failures += 1
                self.stats.reject("bad_record")
            elif isinstance(outcome, Rejected):
                if outcome.limit is not None:
                    self.stats.limited(outcome.limit)
                self._abort(session, outcome.reason, now, f"aborted: {outcome.text}")
                return

    # -- downlink choice ---------------------------------------------------------------------

    def _choose(self, session: _Session, now: float) -> DownlinkFrame | None:
        asked = session.requested
        if session.state is SessionState.COMPLETE:
            return LayerCompleteFrame(session.layer_count) if asked else None
        if session.state in (SessionState.STOPPED, SessionState.ABORTED):
            # Every uplink of an ended session means the device has not heard yet, and each
            # one it sends costs it airtime: answer them all (unless it left by itself).
            if session.left and not asked:
                return None
            if session.state is SessionState.STOPPED:
                return StopFrame()
            return ServerAbortFrame(session.abort_reason)
        reassembler = session.reassembler
        assert reassembler is not None
        if session.refines and (
            (asked and not session.refine_sent) or not session.refine_ever_sent
        ):
            head = session.refines[0]
            session.refine_sent = session.refine_ever_sent = True
            return RefineFrame(
                session.answered_groups % 16, head.region, head.pass_index, head.priority
            )
        if not asked:
            return None
        session.refine_sent = False
        if reassembler.at_rest() and not session.refines:
            frame = LayerCompleteFrame(len(reassembler.layer_sizes))
            self._complete(session, now)
            return frame
        sealing = TRAILER_SIZE if session.key is not None else 0
        max_bitmap = max(0, self.config.downlink_mtu - 2 - sealing)
        return reassembler.acknowledgement(max_bitmap, final=False)

    # -- session lifecycle -------------------------------------------------------------------

    def _active(self, device: str) -> _Session:
        session = self._sessions.get(device)
        if session is None or session.state is not SessionState.ACTIVE:
            state = "no session" if session is None else f"session {session.state.value}"
            raise ProtocolError(f"{device}: {state}")
        return session

    def _start_deadline(self, session: _Session) -> float:
        return session.started_at + self.config.start_timeout

    def _deadline(self, session: _Session) -> float:
        if session.state is SessionState.ACTIVE:
            idle = session.last_activity + self.config.idle_timeout
            if session.reassembler is not None and not session.reassembler.layer_sizes:
                return min(idle, self._start_deadline(session))
            return idle
        assert session.finished_at is not None
        return session.finished_at + self.config.finished_retention

    def _deadline_of(self, device: str) -> float | None:
        session = self._sessions.get(device)
        return None if session is None else self._deadline(session)

    def _finished_at(self, device: str) -> float | None:
        session = self._sessions.get(device)
        if session is None or session.state is SessionState.ACTIVE:
            return None
        return session.finished_at

    def _complete(self, session: _Session, now: float) -> None:
        assert session.reassembler is not None
        session.layer_count = len(session.reassembler.layer_sizes)
        self._finish(session, SessionState.COMPLETE, now)
        self._events.append(SessionCompleted(session.device, session.session_id, session.layer_count))

    def _abort(self, session: _Session, reason: AbortReason, now: float, text: str) -> None:
        self._finish(session, SessionState.ABORTED, now, reason)
        self._events.append(Aborted(session.device, session.session_id, text, reason))

    def _finish(
        self,
        session: _Session,
        state: SessionState,
        now: float,
        reason: AbortReason = AbortReason.UNSPECIFIED,
    ) -> None:
        if session.reassembler is not None and state is not SessionState.COMPLETE:
            session.layer_count = session.reassembler.verified
        if session.state is SessionState.ACTIVE:
            self._release(session)
        session.state = state
        session.finished_at = now
        self._timers.touch(session.device)
        self._finish_order.add(session.device, now)
        session.abort_reason = reason
        session.reassembler = None
        session.refines.clear()

    def _admit(self, session: _Session) -> None:
        """Count an active session and reserve its share of ``max_total_buffer``."""
        session.reserved = self.config.session_reservation(session.fragment_size)
        self._reserved_total += session.reserved
        self._active_count += 1

    def _release(self, session: _Session) -> None:
        self._reserved_total -= session.reserved
        session.reserved = 0
        self._active_count -= 1

    def _refuse(self, device: str, cause: str) -> None:
        """A new session the bounds do not admit: ABORT(SERVER_FULL), counted by cause."""
        self.stats.sessions_rejected += 1
        self.stats.limited(cause)
        self.stats.reject("server_full")
        self._reply(device, ServerAbortFrame(AbortReason.SERVER_FULL))

    def _take_token(self, device: str, now: float) -> bool:
        """The per-device token bucket of ``rate_limit``; buckets of quiet devices are forgotten
        (least recently used first) beyond 4 x ``max_sessions`` addresses."""
        config = self.config
        assert config.rate_limit is not None
        tokens, last = self._buckets.pop(device, (float(config.rate_burst), now))
        tokens = min(float(config.rate_burst), tokens + max(0.0, now - last) * config.rate_limit)
        allowed = tokens >= 1.0
        self._buckets[device] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > 4 * config.max_sessions:
            self._buckets.popitem(last=False)
        return allowed

    def _evict(self) -> bool:
        """Make room by forgetting the longest-finished session; False if all are active."""
        oldest = self._finish_order.oldest()
        if oldest is None:
            return False
        del self._sessions[oldest]
        self._finish_order.discard(oldest)
        self.stats.sessions_evicted += 1
        return True

    def _reply(self, device: str, frame: ServerAbortFrame, seal: bool = True) -> None:
        """Queue a one-off answer; to a device with a key it goes sealed unless ``seal`` is
        False (the plain refusal of a plain start, meant for a device that has no key)."""
        self._replies[device] = (build_downlink(frame), seal)
        self._replies.move_to_end(device)
        while len(self._replies) > self.config.max_sessions:
            self._replies.popitem(last=False)


def _fingerprint(payload: bytes) -> int:
    """16 bits of a fragment's CRC-32, never 0 (0 marks an index never held)."""
    return (crc32(payload) & 0xFFFF) or 1


def _remember(session: _Session, index: int, payload: bytes) -> None:
    prints = session.fingerprints
    end = 2 * (index + 1)
    if len(prints) < end:
        prints.extend(bytes(end - len(prints)))
    prints[end - 2 : end] = _fingerprint(payload).to_bytes(2, "big")


def _contradicts(session: _Session, index: int, payload: bytes) -> bool:
    """Whether the session held fragment ``index`` with other bytes (a device never changes a
    fragment of its stream, so such a frame belongs to another session)."""
    prints = session.fingerprints
    if 2 * (index + 1) > len(prints):
        return False
    held = int.from_bytes(prints[2 * index : 2 * index + 2], "big")
    return held != 0 and held != _fingerprint(payload)
