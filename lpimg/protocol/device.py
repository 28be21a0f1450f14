"""The device side of a session: layers in, uplink frames out, no I/O.

The device knows everything (every byte it must deliver); the server only reports what it
holds. So the device keeps one state per fragment and applies each ACK to the fragments it had
sent before the request that ACK answers, and every decision (what to send next, when to ask
for an ACK, when to poll, when to give up) is made here from ``now`` values the caller passes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lpimg.errors import ProtocolError, WireError
from lpimg.protocol import layout
from lpimg.protocol.auth import DownlinkRejected, check_key, open_downlink, record_check
from lpimg.protocol.config import RECEIVE_SPAN, ProtocolConfig
from lpimg.protocol.events import (
    Aborted,
    Event,
    LayersAcknowledged,
    RefineRequested,
    SessionCompleted,
    Stopped,
)
from lpimg.protocol.stats import DeviceStats
from lpimg.wire import (
    CRC_SIZE,
    DATA_HEADER_SIZE,
    MAX_FRAGMENTS,
    MAX_LAYER_COUNT,
    MAX_MTU,
    MIN_MTU,
    AbortReason,
    AckFrame,
    AuthStartFrame,
    DataFrame,
    Descriptor,
    DeviceAbortFrame,
    GroupHeader,
    LayerCompleteFrame,
    Manifest,
    PollFrame,
    RefineFrame,
    Region,
    ResumeFrame,
    ServerAbortFrame,
    StartFrame,
    StopFrame,
    build_descriptor,
    build_group_header,
    build_layer_record,
    build_uplink,
    parse_downlink,
)
from lpimg.wire.fields import varuint_length
from lpimg.wire.records import RecordCheck

_UNSENT, _SENT, _ACKED, _MISSING = range(4)
"""Per-fragment state: never sent; sent, fate unknown; held by the server; reported missing."""

REQUESTED: Literal["requested"] = "requested"
"""``add_layers(region=REQUESTED)``: the layers cover the region the server asked for."""


@dataclass(frozen=True)
class AddedGroup:
    """The shape of one group of layers appended after a refine request.

    A device persists these (``DeviceSession.added_groups``) with its layers, so that after a
    reboot :meth:`DeviceSession.resume` rebuilds exactly the same stream.
    """

    region: Region | None
    first_pass: int
    layer_count: int


@dataclass
class _Group:
    first_fragment: int
    first_layer: int
    layer_count: int
    region: Region | None
    first_pass: int


class DeviceSession:
    """One image transfer seen from the device (sans-I/O; see docs/DESIGN-NOTES.md).

    Create it with the codec's layers; then, whenever the radio may transmit, call
    :meth:`next_frame`; hand every downlink to :meth:`receive_frame`; call
    :meth:`handle_timer` once :meth:`get_timer` is due; drain :meth:`next_event`. The session
    is over when :attr:`finished` is True, and :attr:`reason` says why ("complete", "stopped",
    "aborted: ...", "gave up ...").
    """

    def __init__(
        self,
        session_id: int,
        layers: Sequence[bytes],
        *,
        mtu: int,
        now: float,
        model_id: int = 0,
        geometry: tuple[int, int] = (0, 0),
        manifest: Manifest | Mapping[str, Any] | None = None,
        config: ProtocolConfig | None = None,
        key: bytes | None = None,
        downlink_counter: int = 0,
    ) -> None:
        self._auth(key, downlink_counter)
        self._setup(session_id, layers, mtu, now, model_id, geometry, manifest, config, ())
        self._need_start = True

    @classmethod
    def resume(
        cls,
        session_id: int,
        layers: Sequence[bytes],
        *,
        mtu: int,
        now: float,
        model_id: int = 0,
        geometry: tuple[int, int] = (0, 0),
        manifest: Manifest | Mapping[str, Any] | None = None,
        config: ProtocolConfig | None = None,
        added_groups: Sequence[AddedGroup] = (),
        key: bytes | None = None,
        downlink_counter: int = 0,
    ) -> DeviceSession:
        """Re-create a session after a reboot from what the device stored.

        Pass the same arguments the session was created with (the same ``mtu``: it fixes the
        fragment size), ``layers`` being every layer including those added later, and the
        session's :attr:`added_groups`. The device first sends a resume request; the server
        answers with what it holds, so only missing fragments are sent again. If the server no
        longer knows the session, the device starts it afresh.
        """
        session = cls.__new__(cls)
        session._auth(key, downlink_counter)
        session._setup(
            session_id, layers, mtu, now, model_id, geometry, manifest, config, added_groups
        )
        session._need_resume = True
        return session

    # -- construction ------------------------------------------------------------------------

    def _auth(self, key: bytes | None, downlink_counter: int) -> None:
        """With a key the session is authenticated (spec section 15): START_AUTH, records
        closed by AES-CMAC tags, and only sealed downlinks with a counter above
        ``downlink_counter`` (the last one this device accepted, kept across sessions and
        reboots) are accepted."""
        self._key = None if key is None else check_key(key)
        if not 0 <= downlink_counter < 1 << 32:
            raise ProtocolError(f"downlink counter {downlink_counter} does not fit 32 bits")
        self._downlink_counter = downlink_counter
        self._records = 0

    def _check(self, record: int) -> RecordCheck | None:
        if self._key is None:
            return None
        return record_check(self._key, self.session_id, record)

    def _setup(
        self,
        session_id: int,
        layers: Sequence[bytes],
        mtu: int,
        now: float,
        model_id: int,
        geometry: tuple[int, int],
        manifest: Manifest | Mapping[str, Any] | None,
        config: ProtocolConfig | None,
        added_groups: Sequence[AddedGroup],
    ) -> None:
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ProtocolError(f"MTU {mtu} is outside {MIN_MTU}..{MAX_MTU}")
        if not 0 <= session_id <= 0xFFFF:
            raise ProtocolError(f"session id {session_id} does not fit 16 bits")
        self.session_id = session_id
        self.config = config or ProtocolConfig()
        self.stats = DeviceStats()
        self.finished_at: float | None = None
        self.reason: str | None = None
        self._fragment_size = mtu - DATA_HEADER_SIZE
        self._events: deque[Event] = deque()
        self._layers: list[bytes] = []
        self._groups: list[_Group] = []
        self._added: list[AddedGroup] = []
        self._payloads: list[bytes] = []
        self._state: list[int] = []
        self._attempts: list[int] = []
        self._ever_acked: list[bool] = []
        """Fragments the server has reported held at least once (kept across restarts)."""
        self._sent_seq: list[int] = []
        self._layer_end: list[int] = []
        self._ends_layer: set[int] = set()
        self._stream_bytes = 0
        self._missing: set[int] = set()
        self._cursor = 0
        self._low = 0
        self._high = -1
        self._acked_count = 0
        self._acked_high = 0
        self._verified = 0
        self._acked_next = 0
        self._seq = 0
        self._request_seq = -1
        self._window_count = 0
        self._answer_deadline: float | None = None
        self._polls_unanswered = 0
        self._polls_stalled = 0
        self._poll_due = False
        self._need_start = False
        self._need_resume = False
        self._resume_waiting = False
        self._restarts = 0
        self._heard_state = False
        """The server has acknowledged something since the last (re)start."""
        self._refine: RefineFrame | None = None
        self._refine_deadline: float | None = None
        self._answered_refines = 0
        self._ended = False
        self._abort_frame: bytes | None = None

        width, height = geometry
        layer_list = [bytes(layer) for layer in layers]
        added_total = sum(group.layer_count for group in added_groups)
        initial = layer_list[: len(layer_list) - added_total]
        if not initial:
            raise ProtocolError("a session needs at least one layer")
        self._check_new_layers(initial)
        try:
            descriptor = Descriptor(
                model_id,
                width,
                height,
                tuple(len(layer) for layer in initial),
                manifest if isinstance(manifest, Manifest) else Manifest.from_dict(manifest or {}),
            )
            header = build_descriptor(descriptor, self._check(0))
        except WireError as error:
            raise ProtocolError(f"cannot describe the session: {error}") from error
        self._check_header(header)
        self._names_reference = descriptor.manifest.reference_hash is not None
        first_size = layout.first_fragment_size(
            self._fragment_size, len(header) + _records_size(initial)
        )
        self._append_group(header, initial, None, 0, first_size)
        position = len(initial)
        for group in added_groups:
            chunk = layer_list[position : position + group.layer_count]
            position += group.layer_count
            self._extend(chunk, group.region, group.first_pass)
            self._answered_refines += 1
        self._last_now = now

    def _check_new_layers(self, layers: Sequence[bytes]) -> None:
        config = self.config
        total = len(self._layers) + len(layers)
        if total > min(config.max_layers, MAX_LAYER_COUNT):
            raise ProtocolError(f"{total} layers exceed the limit of {config.max_layers}")
        for layer in layers:
            if len(layer) > config.max_layer_bytes:
                raise ProtocolError(
                    f"a {len(layer)}-byte layer exceeds max_layer_bytes={config.max_layer_bytes}"
                )

    def _check_header(self, header: bytes) -> None:
        body = len(header) - varuint_length(header[0]) - CRC_SIZE
        if body > self.config.max_header_bytes:
            raise ProtocolError(
                f"a {body}-byte header body exceeds max_header_bytes="
                f"{self.config.max_header_bytes} (is the manifest too large?)"
            )

    def _extend(self, layers: Sequence[bytes], region: Region | None, first_pass: int) -> None:
        """Append one group answering a refine request (also used when resuming)."""
        self._check_new_layers(layers)
        try:
            header = build_group_header(
                GroupHeader(region, first_pass, tuple(len(layer) for layer in layers)),
                self._check(self._records),
            )
        except WireError as error:
            raise ProtocolError(f"cannot announce these layers: {error}") from error
        self._check_header(header)
        self._append_group(header, layers, region, first_pass, None)
        self._added.append(AddedGroup(region, first_pass, len(layers)))

    def _append_group(
        self,
        header: bytes,
        layers: Sequence[bytes],
        region: Region | None,
        first_pass: int,
        first_size: int | None,
    ) -> None:
        base = self._records + 1  # the header is record number self._records
        records = [
            build_layer_record(layer, self._check(base + number))
            for number, layer in enumerate(layers)
        ]
        data = header + b"".join(records)
        pieces = layout.split(data, self._fragment_size, first_size)
        if len(self._payloads) + len(pieces) > MAX_FRAGMENTS:
            raise ProtocolError(
                f"the stream would need {len(self._payloads) + len(pieces)} fragments; "
                f"a session carries at most {MAX_FRAGMENTS} (use a larger MTU or fewer layers)"
            )
        if self._stream_bytes + len(data) > self.config.max_session_bytes:
            raise ProtocolError(
                f"the stream would be {self._stream_bytes + len(data)} bytes; "
                f"max_session_bytes={self.config.max_session_bytes}"
            )
        start = len(self._payloads)
        self._groups.append(_Group(start, len(self._layers), len(layers), region, first_pass))
        offset = len(header)
        for layer, record in zip(layers, records, strict=True):
            offset += len(record)
            number, _ = layout.position(offset - 1, self._fragment_size, first_size)
            self._layer_end.append(start + number)
            self._ends_layer.add(start + number)
            self._layers.append(layer)
        self._payloads.extend(pieces)
        self._state.extend([_UNSENT] * len(pieces))
        self._attempts.extend([0] * len(pieces))
        self._ever_acked.extend([False] * len(pieces))
        self._sent_seq.extend([-1] * len(pieces))
        self._stream_bytes += len(data)
        self._records += 1 + len(layers)

    # -- public state ------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the session has ended and any final abort frame has been handed out."""
        return self._ended and self._abort_frame is None

    @property
    def authenticated(self) -> bool:
        """True when the session runs with a device key (spec section 15)."""
        return self._key is not None

    @property
    def downlink_counter(self) -> int:
        """The counter of the last sealed downlink accepted (what a device persists)."""
        return self._downlink_counter

    @property
    def layer_count(self) -> int:
        """Layers announced so far, refinements included."""
        return len(self._layers)

    @property
    def layers(self) -> tuple[bytes, ...]:
        """Every layer of the session, in index order (what a device stores to resume)."""
        return tuple(self._layers)

    @property
    def added_groups(self) -> tuple[AddedGroup, ...]:
        """The groups appended after refine requests (what a device stores to resume)."""
        return tuple(self._added)

    @property
    def fragment_count(self) -> int:
        """Fragments of the whole stream as announced so far."""
        return len(self._payloads)

    @property
    def acknowledged_layers(self) -> int:
        """Layers the server has reported verified: by LAYER_COMPLETE, or by an ACK whose
        ``next`` lies past their records (spec 6.3)."""
        return self._verified

    @property
    def refine_pending(self) -> RefineRequested | None:
        """The refine request waiting for :meth:`add_layers`, if any."""
        if self._refine is None:
            return None
        frame = self._refine
        return RefineRequested(self.session_id, frame.region, frame.pass_index, frame.priority)

    # -- sans-I/O API ------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next run (None: no timer armed)."""
        if self._ended:
            return None
        deadlines = []
        if self._answer_deadline is not None:
            deadlines.append(self._answer_deadline)
        if self._refine_deadline is not None:
            deadlines.append(self._refine_deadline)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Act on expired timers: poll, re-send a resume request, decline a refine, give up."""
        self._last_now = now
        if self._ended:
            return
        if self._refine_deadline is not None and now >= self._refine_deadline:
            self._answer_refine([], None, 0)
        if self._answer_deadline is None or now < self._answer_deadline:
            return
        self._answer_deadline = None
        if not (self._resume_waiting or self._waiting_for_server()):
            return
        config = self.config
        if self._polls_unanswered >= config.max_polls:
            self._give_up(f"gave up after {self._polls_unanswered} polls without an answer", now)
        elif self._polls_stalled >= config.max_stalled_polls:
            self._give_up(f"gave up after {self._polls_stalled} polls without progress", now)
        elif self._resume_waiting:
            self._need_resume = True
        else:
            self._poll_due = True
        self._keep_waiting(now)

    def next_frame(self, now: float) -> bytes | None:
        """The most useful uplink at this moment, or None if there is nothing to send.

        Call it whenever the radio may transmit (duty cycle permitting); the frame returned is
        assumed sent at ``now``.
        """
        self._last_now = now
        if self._abort_frame is not None:
            frame, self._abort_frame = self._abort_frame, None
            self.stats.uplinks += 1
            return frame
        if self._ended:
            return None
        if self._need_start:
            return self._send_start(now)
        if self._need_resume:
            return self._send_resume(now)
        if self._resume_waiting:
            return None
        index = self._candidate()
        if index is not None:
            return self._send_fragment(index, now)
        if self._poll_due:
            return self._send_poll(now)
        self._keep_waiting(now)
        return None

    def receive_frame(self, data: bytes, now: float) -> None:
        """Take one downlink. Malformed or unexpected frames are counted and dropped."""
        self._last_now = now
        stats = self.stats
        stats.downlinks += 1
        if self._ended:
            stats.after_finish += 1
            stats.reject("after_finish")
            return
        counter = None
        if self._key is not None:
            try:
                data, counter = open_downlink(
                    self._key, data, self._downlink_counter, self.session_id
                )
            except DownlinkRejected as rejected:
                if rejected.cause == "malformed":
                    stats.malformed += 1
                stats.reject(rejected.cause)
                return
        try:
            frame = parse_downlink(data)
        except WireError:
            stats.malformed += 1
            stats.reject("malformed")
            return
        if counter is not None:
            self._downlink_counter = counter
        self._polls_unanswered = 0
        if isinstance(frame, AckFrame):
            self._resume_waiting = False
            self._apply_ack(frame.next, frame.received())
        elif isinstance(frame, LayerCompleteFrame):
            self._on_layer_complete(frame.count, now)
        elif isinstance(frame, RefineFrame):
            self._on_refine(frame, now)
        elif isinstance(frame, StopFrame):
            self._end("stopped", now)
            self._events.append(Stopped(None, self.session_id))
        elif isinstance(frame, ServerAbortFrame):
            self._on_server_abort(frame.reason, now)
        self._keep_waiting(now)

    def add_layers(
        self,
        layers: Sequence[bytes],
        *,
        region: Region | None | Literal["requested"] = REQUESTED,
        first_pass: int = 0,
    ) -> None:
        """Answer the pending refine request with new layers (an empty list declines it).

        ``region`` is the rectangle the layers refine (default: the one requested; None: the
        whole image) and ``first_pass`` the codec pass index of the first of them. Layers
        cannot be added unasked: the server matches each group of layers to its request.
        """
        if self._ended:
            raise ProtocolError(f"the session has ended ({self.reason})")
        if self._refine is None:
            raise ProtocolError("add_layers answers a refine request, and none is pending")
        chosen = self._refine.region if region == REQUESTED else region
        assert chosen is None or isinstance(chosen, Region)
        self._answer_refine([bytes(layer) for layer in layers], chosen, first_pass)

    def decline_refine(self) -> None:
        """Answer the pending refine request with no layers."""
        self.add_layers([])

    def abort(self, reason: AbortReason = AbortReason.CANCELLED) -> None:
        """Give the session up; an abort frame is sent (once, unacknowledged) on the next
        :meth:`next_frame`."""
        if self._ended:
            return
        text = f"aborted: {reason.text}"
        self._end(text, self._last_now, abort=reason)
        self._events.append(Aborted(None, self.session_id, text, reason))

    # -- sending -----------------------------------------------------------------------------

    def _uplink(self, frame: StartFrame | DataFrame | PollFrame | ResumeFrame) -> bytes:
        self._seq += 1
        self.stats.uplinks += 1
        return build_uplink(frame)

    def _request(self, now: float) -> None:
        """Bookkeeping for a frame that asks the server for a downlink."""
        self._request_seq = self._seq
        self._window_count = 0
        self._answer_deadline = now + self.config.ack_timeout
        self.stats.ack_requests += 1

    def _send_start(self, now: float) -> bytes | None:
        self._need_start = False
        if self.stats.restarts:
            self._restart_sent_at = now  # answers to frames older than this start are stale
        if self._attempts[0] >= self.config.max_attempts:
            self._give_up(f"gave up: session start sent {self._attempts[0]} times", now)
            return self.next_frame(now)
        ack = len(self._payloads) == 1
        start = StartFrame if self._key is None else AuthStartFrame
        frame = self._uplink(start(self.session_id, self._fragment_size, self._payloads[0], ack))
        self._mark_sent(0)
        if ack:
            self._request(now)
        return frame

    def _send_resume(self, now: float) -> bytes:
        self._need_resume = False
        self._resume_waiting = True
        self._polls_unanswered += 1
        self._polls_stalled += 1
        frame = self._uplink(ResumeFrame(self.session_id))
        self._request(now)
        return frame

    def _send_poll(self, now: float) -> bytes:
        self._poll_due = False
        self._polls_unanswered += 1
        self._polls_stalled += 1
        self.stats.polls += 1
        frame = self._uplink(PollFrame())
        self._request(now)
        return frame

    def _send_fragment(self, index: int, now: float) -> bytes | None:
        if self._attempts[index] >= self.config.max_attempts:
            self._give_up(
                f"gave up: fragment {index} sent {self._attempts[index]} times "
                "without being acknowledged",
                now,
            )
            return self.next_frame(now)
        ack = (
            self._window_count + 1 >= self.config.window
            or self._candidate(after=index) is None
            or (self.config.ack_each_layer and index in self._ends_layer)
        )
        frame = self._uplink(DataFrame(index, self._payloads[index], ack))
        self._mark_sent(index)
        if ack:
            self._request(now)
        return frame

    def _mark_sent(self, index: int) -> None:
        stats = self.stats
        stats.fragments_sent += 1
        if self._attempts[index]:
            stats.retransmissions += 1
        if self._ever_acked[index]:
            stats.acknowledged_resent += 1
        self._attempts[index] += 1
        self._sent_seq[index] = self._seq
        self._high = max(self._high, index)
        self._window_count += 1
        if self._state[index] == _ACKED:  # only after a restart or a bogus ACK
            self._acked_count -= 1
        self._state[index] = _SENT
        self._missing.discard(index)

    def _candidate(self, after: int | None = None) -> int | None:
        """The fragment to send next: the lowest reported missing, else the lowest unsent,
        within the receive span. With ``after``, whether anything besides it remains."""
        limit = min(len(self._payloads), self._acked_next + RECEIVE_SPAN)
        missing = [index for index in self._missing if index != after and index < limit]
        if missing:
            return min(missing)
        state = self._state
        cursor = self._cursor
        while cursor < len(state) and state[cursor] != _UNSENT:
            cursor += 1
        self._cursor = cursor
        if after is not None and cursor == after:
            cursor += 1
            while cursor < len(state) and state[cursor] != _UNSENT:
                cursor += 1
        return cursor if cursor < limit else None

    def _keep_waiting(self, now: float) -> None:
        """Liveness: a device that can only wait for the server always has a timer armed.

        The answer timer normally runs from the last request; but a downlink can leave the
        device with nothing to send after that timer was spent (a corrupted or late ACK that
        reports everything held), and then only a poll can move the session on.
        """
        if self._answer_deadline is not None or self._poll_due or self._need_resume:
            return
        if self._resume_waiting or self._waiting_for_server():
            self._answer_deadline = now + self.config.ack_timeout

    def _waiting_for_server(self) -> bool:
        """Nothing to send, yet the session is not over: only a downlink can move it on."""
        if self._ended or self._candidate() is not None:
            return False
        all_acked = self._acked_count == len(self._payloads)
        return not (all_acked and self._refine is not None)

    # -- receiving ---------------------------------------------------------------------------

    def _apply_ack(self, next_index: int, received: Sequence[int]) -> None:
        """Apply what the server holds to the fragments sent before the last request."""
        self._heard_state = True
        total = len(self._payloads)
        next_index = min(next_index, total)
        state = self._state
        for index in range(self._low, next_index):
            if state[index] != _ACKED:
                self._set_acked(index)
        for index in received:
            if index < total and state[index] != _ACKED:
                self._set_acked(index)
        held = set(received)
        request = self._request_seq
        for index in range(next_index, min(total, self._high + 1)):
            if (
                index not in held
                and state[index] in (_SENT, _ACKED)
                and self._sent_seq[index] <= request
            ):
                if state[index] == _ACKED:
                    self._acked_count -= 1
                state[index] = _MISSING
                self._missing.add(index)
                self._low = min(self._low, index)
        while self._low < total and state[self._low] == _ACKED:
            self._low += 1
        self._acked_next = next_index
        if self._acked_count > self._acked_high:
            self._acked_high = self._acked_count
            self._polls_stalled = 0
        self._note_delivered(next_index)

    def _note_delivered(self, next_index: int) -> None:
        """Every layer whose record ends below an ACK's ``next`` was verified and delivered.

        A server processes a record as soon as all its bytes are held, and discards the
        fragments of one that fails its CRC before it answers (spec 7.3), so holding them all
        means the layer verified. A device knowing this needs no LAYER_COMPLETE per layer to
        tell which prefix of a picture the server has: what a fixed camera's next reference is
        made of (a session stopped before its end gets no LAYER_COMPLETE at all).
        """
        count = self._verified
        ends = self._layer_end
        while count < len(ends) and ends[count] < next_index:
            count += 1
        if count > self._verified:
            self._verified = count
            self._polls_stalled = 0
            self._events.append(LayersAcknowledged(self.session_id, count))

    def _set_acked(self, index: int) -> None:
        self._high = max(self._high, index)
        self._state[index] = _ACKED
        self._ever_acked[index] = True
        self._missing.discard(index)
        self._acked_count += 1

    def _on_layer_complete(self, count: int, now: float) -> None:
        if count > len(self._layers):
            self.stats.unexpected += 1
            self.stats.reject("unexpected")
            return
        self._resume_waiting = False
        self._apply_ack(self._layer_end[count - 1] + 1, ())
        if count > self._verified:
            self._verified = count
            self._polls_stalled = 0
            self._events.append(LayersAcknowledged(self.session_id, count))
        if count == len(self._layers) and self._refine is None:
            self._end("complete", now)
            self._events.append(SessionCompleted(None, self.session_id, count))

    def _on_refine(self, frame: RefineFrame, now: float) -> None:
        if self._refine is not None or frame.seq != self._answered_refines % 16:
            self.stats.unexpected += 1  # a repeat of the pending request, or a stale one
            self.stats.reject("unexpected")
            return
        self._refine = frame
        self._refine_deadline = now + self.config.refine_timeout
        self._polls_stalled = 0
        self._events.append(
            RefineRequested(self.session_id, frame.region, frame.pass_index, frame.priority)
        )

    def _answer_refine(
        self, layers: Sequence[bytes], region: Region | None, first_pass: int
    ) -> None:
        self._extend(layers, region, first_pass)
        self._answered_refines += 1
        self._refine = None
        self._refine_deadline = None

    def _on_server_abort(self, reason: AbortReason, now: float) -> None:
        if reason == AbortReason.UNKNOWN_REFERENCE and not self._names_reference:
            # Meant for an earlier session that named one (frames carry no session id): the
            # server does not know this session, whose start it missed (spec 10.1).
            reason = AbortReason.UNKNOWN_SESSION
        if reason == AbortReason.UNKNOWN_SESSION:
            if not self._heard_state and (
                self._need_start
                or now - getattr(self, "_restart_sent_at", float("-inf")) < self.config.ack_timeout
            ):
                # On a fast link the fragments sent after a lost start each draw an "unknown
                # session" answer; the first one already queued a new start, and answers that
                # arrive while that start can still be answered are about older frames.
                self.stats.unexpected += 1
                self.stats.reject("unexpected")
                return
            if not self._heard_state:
                # The start frame never arrived: send it again. Attempts are kept, so a link
                # that loses every start still ends (fragment 0 runs out of attempts).
                self._restart(keep_attempts=True)
                return
            if self._restarts < self.config.max_restarts:
                # The server knew the session and forgot it (restart, eviction).
                self._restarts += 1
                self._restart(keep_attempts=False)
                return
        text = f"aborted: {reason.text}"
        self._end(text, now)
        self._events.append(Aborted(None, self.session_id, text, reason, by_peer=True))

    def _restart(self, keep_attempts: bool) -> None:
        """The server does not know the session: send it again from the start frame on."""
        self.stats.restarts += 1
        self._heard_state = False
        count = len(self._payloads)
        self._state = [_UNSENT] * count
        if not keep_attempts:
            self._attempts = [0] * count
        self._sent_seq = [-1] * count
        self._missing.clear()
        self._cursor = self._low = self._acked_count = self._acked_next = 0
        self._high = -1
        self._window_count = 0
        self._resume_waiting = self._need_resume = self._poll_due = False
        self._answer_deadline = None
        self._need_start = True

    # -- ending ------------------------------------------------------------------------------

    def _give_up(self, text: str, now: float) -> None:
        self._end(text, now, abort=AbortReason.TOO_MANY_RETRIES)
        self._events.append(Aborted(None, self.session_id, text, AbortReason.TOO_MANY_RETRIES))

    def _end(self, text: str, now: float, abort: AbortReason | None = None) -> None:
        self._ended = True
        self.reason = text
        self.finished_at = now
        self._answer_deadline = self._refine_deadline = None
        self._refine = None
        if abort is not None:
            self._abort_frame = build_uplink(DeviceAbortFrame(abort))


def _records_size(layers: Sequence[bytes]) -> int:
    return sum(len(layer) + 4 for layer in layers)
