"""Server-side reassembly of one session stream: fragments in, verified records out.

The reassembler stores fragments by index, keeps the ACK state (``next`` and the set received
above it) and walks the stream record by record: a header (descriptor or group header), then
the layers that header announced, then the next group's header, and so on. A record is only
acted on once its CRC verifies; a record that fails has every fragment it touches discarded,
so the ACK re-requests them. Memory stays bounded: fragments wholly before the record being
read are freed, and nothing at or beyond ``next + RECEIVE_SPAN`` is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from lpimg.errors import WireError
from lpimg.protocol import layout
from lpimg.protocol.config import RECEIVE_SPAN, ProtocolConfig
from lpimg.wire import (
    CRC_SIZE,
    MAX_FRAGMENTS,
    AbortReason,
    AckFrame,
    Descriptor,
    GroupHeader,
    LayerCompleteFrame,
    check_layer_record,
    header_record_length,
    layer_record_size,
    parse_descriptor,
    parse_group_header,
)
from lpimg.wire.fields import varuint_length
from lpimg.wire.records import RecordCheck
from lpimg.wire.region import Region


class Added(Enum):
    """What became of one fragment handed to :meth:`Reassembler.add`."""

    NEW = "new"
    DUPLICATE = "duplicate"
    OUT_OF_WINDOW = "out of window"
    BAD_LENGTH = "bad length"


@dataclass(frozen=True)
class HeaderVerified:
    """Group ``group``'s header verified: a :class:`Descriptor` for group 0."""

    group: int
    header: Descriptor | GroupHeader
    first_layer: int


@dataclass(frozen=True)
class LayerVerified:
    """Layer ``index`` (global) verified; ``data`` excludes the CRC."""

    index: int
    data: bytes
    pass_index: int
    region: Region | None = None


@dataclass(frozen=True)
class RecordFailed:
    """A record failed its checks; its fragments were discarded and will be re-requested."""

    what: str


@dataclass(frozen=True)
class Rejected:
    """The stream cannot go on (a limit, or too many failures): the session must end."""

    reason: AbortReason
    text: str
    limit: str | None = None
    """The configured bound that was hit (``max_layers``, ``max_session_buffer``...), if any."""


Outcome = HeaderVerified | LayerVerified | RecordFailed | Rejected


@dataclass
class _Group:
    header: Descriptor | GroupHeader | None = None
    header_size: int = 0
    layer_sizes: tuple[int, ...] = ()
    first_layer: int = 0
    size: int | None = None
    layer_offsets: list[int] = field(default_factory=list)
    record: bytes = b""
    """The verified header record, kept (at most ``max_header_bytes`` + 8) for snapshots."""


@dataclass(frozen=True)
class ReassemblyState:
    """Everything a :class:`Reassembler` knows, as plain values, to persist and restore it.

    Headers are kept as their verified records (re-parsed on restore) and fragments as the
    payloads held, so a store needs no knowledge of the stream's layout.
    """

    fragment_size: int
    next: int
    verified: int
    failures: int
    received: tuple[int, ...]
    fragments: dict[int, bytes]
    headers: tuple[bytes, ...]
    """The verified header record of every group read so far, in group order."""
    group: int
    layer: int
    offset: int


class Reassembler:
    """The receive state of one session (see the module docstring)."""

    def __init__(
        self,
        fragment_size: int,
        config: ProtocolConfig,
        record_check: Callable[[int], RecordCheck] | None = None,
    ) -> None:
        self.fragment_size = fragment_size
        self.config = config
        self._record_check = record_check
        """Record number -> its check (authenticated sessions); None: the CRC-32."""
        self.records = 0
        """Records verified so far: the number of the next record (0 = the descriptor)."""
        self.first_capacity = fragment_size - layout.START_EXTRA
        """Most stream bytes a session start carries (F - 3): it is 3 header bytes longer."""
        self.next = 0
        self.verified = 0
        self.failures = 0
        self.held_bytes = 0
        self.layer_sizes: list[int] = []
        self.stream_bytes = 0
        self._fragments: dict[int, bytes] = {}
        self._received: set[int] = set()
        self._groups: list[_Group] = [_Group()]
        self._group = 0
        self._layer = 0
        """Index, within the current group, of the next layer to verify."""
        self._offset = 0
        """Offset, within the current group, of the next record to read."""

    # -- snapshots -------------------------------------------------------------------------

    def export(self) -> ReassemblyState:
        """The receive state as values (fragments are shared, not copied: bytes are immutable)."""
        headers = tuple(group.record for group in self._groups if group.header is not None)
        return ReassemblyState(
            self.fragment_size,
            self.next,
            self.verified,
            self.failures,
            tuple(sorted(self._received)),
            dict(self._fragments),
            headers,
            self._group,
            self._layer,
            self._offset,
        )

    @classmethod
    def restore(
        cls, state: ReassemblyState, config: ProtocolConfig,
        record_check: Callable[[int], RecordCheck] | None = None,
    ) -> Reassembler:
        """The reassembler :meth:`export` described. Headers are parsed again (they verified
        once, so a failure here means the store is damaged: :class:`WireError`). An
        authenticated session passes its ``record_check`` again: the record numbering it keys
        the tags with resumes after the headers and layers already verified."""
        self = cls(state.fragment_size, config, record_check)
        first_layer = 0
        groups: list[_Group] = []
        record_number = 0  # headers are checked under the numbers they verified with
        for number, record in enumerate(state.headers):
            check = None if record_check is None else record_check(record_number)
            header = (parse_descriptor(record, check) if number == 0
                      else parse_group_header(record, check))
            record_number += 1 + len(header.layer_sizes)
            group = _Group(header, len(record), header.layer_sizes, first_layer, record=record)
            offset = len(record)
            for size in header.layer_sizes:
                group.layer_offsets.append(offset)
                offset += layer_record_size(size)
            group.size = offset
            groups.append(group)
            self.layer_sizes.extend(header.layer_sizes)
            self.stream_bytes += offset
            first_layer += len(header.layer_sizes)
        if len(groups) == state.group:
            groups.append(_Group(first_layer=first_layer))
        if len(groups) != state.group + 1 or state.verified > len(self.layer_sizes):
            raise WireError("inconsistent reassembly state (groups, verified layers)")
        self._groups = groups
        self._group, self._layer, self._offset = state.group, state.layer, state.offset
        self.next, self.verified, self.failures = state.next, state.verified, state.failures
        self._received = set(state.received)
        self._fragments = dict(state.fragments)
        self.held_bytes = sum(len(payload) for payload in self._fragments.values())
        self.records = len(state.headers) + state.verified
        return self

    # -- layout ------------------------------------------------------------------------------

    @property
    def first_size(self) -> int:
        """F0, the length of fragment 0: min(F - 3, size of group 0), derived, never sent.

        Until group 0's size is known it is taken as F - 3, which is right whenever anything
        beyond fragment 0 is read (a group 0 that fits fragment 0 is read from it alone).
        """
        size = self._groups[0].size
        return self.first_capacity if size is None else min(self.first_capacity, size)

    def _first(self, group: int) -> int | None:
        return self.first_size if group == 0 else None

    def _start(self, group: int) -> int | None:
        """Fragment index of a group's first byte, or None while an earlier size is unknown."""
        start = 0
        for number in range(group):
            size = self._groups[number].size
            if size is None:
                return None
            start += layout.fragment_count(size, self.fragment_size, self._first(number))
        return start

    def _locate(self, group: int, offset: int) -> int | None:
        start = self._start(group)
        if start is None:
            return None
        number, _ = layout.position(offset, self.fragment_size, self._first(group))
        return start + number

    def _read(self, group: int, offset: int, length: int) -> bytes | None:
        """Bytes [offset, offset+length) of a group, or None while a fragment is missing.

        A held fragment too short for its place is dropped (it was truncated on the way), so
        the ACK asks for it again.
        """
        start = self._start(group)
        if start is None:
            return None
        first = self._first(group)
        pieces = []
        end = offset + length
        position = offset
        while position < end:
            number, inner = layout.position(position, self.fragment_size, first)
            index = start + number
            payload = self._fragments.get(index)
            if payload is None:
                return None
            capacity = first if (first is not None and number == 0) else self.fragment_size
            take = min(end - position, capacity - inner)
            if len(payload) < inner + take:
                self._forget(index)
                return None
            pieces.append(payload[inner : inner + take])
            position += take
        return b"".join(pieces)

    def _expected_length(self, index: int) -> int | None:
        """The exact payload length fragment ``index`` must have, if its group is known."""
        for number, group in enumerate(self._groups):
            start = self._start(number)
            if start is None or index < start:
                return None
            if group.size is None:
                return None
            first = self._first(number)
            count = layout.fragment_count(group.size, self.fragment_size, first)
            if index < start + count:
                return layout.span(index - start, group.size, self.fragment_size, first)[1]
        return None

    def layer_end_fragment(self, layer: int) -> int | None:
        """Fragment index holding the last byte (of the CRC) of a verified layer."""
        first_layer = 0
        for number, group in enumerate(self._groups):
            if layer < first_layer + len(group.layer_sizes):
                local = layer - first_layer
                end = group.layer_offsets[local] + layer_record_size(group.layer_sizes[local])
                return self._locate(number, end - 1)
            first_layer += len(group.layer_sizes)
        return None

    # -- fragments ---------------------------------------------------------------------------

    def add(self, index: int, payload: bytes) -> Added:
        """Store one fragment (from a DATA frame, or fragment 0 from a session start)."""
        if index >= self.next + RECEIVE_SPAN or index >= MAX_FRAGMENTS:
            return Added.OUT_OF_WINDOW
        if index < self.next or index in self._received:
            return Added.DUPLICATE
        expected = self._expected_length(index)
        capacity = self.first_capacity if index == 0 else self.fragment_size
        if len(payload) > capacity or (expected is not None and len(payload) != expected):
            return Added.BAD_LENGTH
        self._fragments[index] = payload
        self.held_bytes += len(payload)
        self._received.add(index)
        while self.next in self._received:
            self._received.remove(self.next)
            self.next += 1
        return Added.NEW

    def _forget(self, index: int) -> None:
        """Drop a fragment as if it had never arrived."""
        payload = self._fragments.pop(index, None)
        if payload is not None:
            self.held_bytes -= len(payload)
        if index < self.next:
            self._received.update(range(index + 1, self.next))
            self.next = index
        self._received.discard(index)

    def _discard(self, group: int, offset: int, length: int) -> None:
        """Forget every fragment touching bytes [offset, offset+length) of a group."""
        first = self._locate(group, offset)
        last = self._locate(group, offset + max(length, 1) - 1)
        if first is None or last is None:
            return
        for index in range(first, last + 1):
            self._forget(index)

    def _free_before(self, group: int, offset: int) -> None:
        """Release fragments that hold nothing at or after (group, offset)."""
        keep = self._locate(group, offset)
        if keep is None:
            return
        for index in [index for index in self._fragments if index < keep]:
            self.held_bytes -= len(self._fragments.pop(index))

    # -- records -----------------------------------------------------------------------------

    def advance(self) -> list[Outcome]:
        """Verify every record that has become complete, in stream order."""
        outcomes: list[Outcome] = []
        while True:
            group = self._groups[self._group]
            if group.header is None:
                outcome = self._read_header()
            elif self._layer < len(group.layer_sizes):
                outcome = self._read_layer()
            else:
                self._groups.append(_Group(first_layer=group.first_layer + len(group.layer_sizes)))
                self._group += 1
                self._layer = 0
                self._offset = 0
                continue
            if outcome is None:
                return outcomes
            outcomes.append(outcome)
            if isinstance(outcome, RecordFailed):
                self.failures += 1
                if self.failures > self.config.max_crc_failures:
                    outcomes.append(
                        Rejected(
                            AbortReason.CORRUPTED,
                            f"{self.failures} records failed their CRC",
                        )
                    )
                    return outcomes
                return outcomes
            if isinstance(outcome, Rejected):
                return outcomes

    def _read_header(self) -> Outcome | None:
        number = self._group
        head = self._read(number, 0, 1)
        if head is None:
            return None
        prefix = varuint_length(head[0])
        head = self._read(number, 0, prefix) if prefix else None
        if prefix and head is None:
            return None
        try:
            total = header_record_length(head) if head else None
        except WireError:
            total = None
        if total is None or total - prefix - CRC_SIZE > self.config.max_header_bytes:
            self._discard(number, 0, max(prefix, 1))
            return RecordFailed("header length")
        record = self._read(number, 0, total)
        if record is None:
            return None
        try:
            check = self._check()
            header: Descriptor | GroupHeader = (
                parse_descriptor(record, check)
                if number == 0
                else parse_group_header(record, check)
            )
        except WireError:
            self._discard(number, 0, total)
            return RecordFailed("descriptor" if number == 0 else "group header")
        rejected = self._check_limits(header, total)
        if rejected is not None:
            return rejected
        group = self._groups[number]
        self.records += 1
        group.header = header
        group.header_size = total
        group.layer_sizes = header.layer_sizes
        offset = total
        for size in header.layer_sizes:
            group.layer_offsets.append(offset)
            offset += layer_record_size(size)
        group.size = offset
        group.record = record
        self.layer_sizes.extend(header.layer_sizes)
        self.stream_bytes += offset
        self._offset = total
        self._drop_misfits(number)
        self._free_before(number, self._offset)
        return HeaderVerified(number, header, group.first_layer)

    def _check_limits(self, header: Descriptor | GroupHeader, header_size: int) -> Rejected | None:
        config = self.config
        sizes = header.layer_sizes
        if isinstance(header, Descriptor) and not sizes:
            return Rejected(AbortReason.MALFORMED, "the session announces no layer")
        if len(self.layer_sizes) + len(sizes) > config.max_layers:
            return Rejected(
                AbortReason.LIMIT_EXCEEDED,
                f"{len(self.layer_sizes) + len(sizes)} layers; max_layers={config.max_layers}",
                "max_layers",
            )
        if sizes and max(sizes) > config.max_layer_bytes:
            return Rejected(
                AbortReason.LIMIT_EXCEEDED,
                f"a {max(sizes)}-byte layer; max_layer_bytes={config.max_layer_bytes}",
                "max_layer_bytes",
            )
        largest = max((layer_record_size(size) for size in sizes), default=0)
        if largest and config.buffer_need(self.fragment_size, largest) > config.max_session_buffer:
            return Rejected(
                AbortReason.LIMIT_EXCEEDED,
                f"a {largest}-byte layer record at F={self.fragment_size} needs more than "
                f"max_session_buffer={config.max_session_buffer} bytes of buffer",
                "max_session_buffer",
            )
        group_bytes = header_size + sum(layer_record_size(size) for size in sizes)
        if self.stream_bytes + group_bytes > config.max_session_bytes:
            return Rejected(
                AbortReason.LIMIT_EXCEEDED,
                f"a {self.stream_bytes + group_bytes}-byte stream; "
                f"max_session_bytes={config.max_session_bytes}",
                "max_session_bytes",
            )
        start = self._start(self._group)
        if start is not None:
            first = min(self.first_capacity, group_bytes) if self._group == 0 else None
            count = layout.fragment_count(group_bytes, self.fragment_size, first)
            if start + count > MAX_FRAGMENTS:
                return Rejected(
                    AbortReason.LIMIT_EXCEEDED,
                    f"the stream needs {start + count} fragments",
                    "max_fragments",
                )
        return None

    def _drop_misfits(self, number: int) -> None:
        """Now that a group's size is known, drop held fragments whose length cannot fit."""
        for index in sorted(self._fragments):
            expected = self._expected_length(index)
            if expected is not None and len(self._fragments[index]) != expected:
                self._forget(index)

    def _check(self) -> RecordCheck | None:
        return None if self._record_check is None else self._record_check(self.records)

    def _read_layer(self) -> Outcome | None:
        number = self._group
        group = self._groups[number]
        local = self._layer
        offset = group.layer_offsets[local]
        size = layer_record_size(group.layer_sizes[local])
        end = self._locate(number, offset + size - 1)
        if end is None or end >= self.next:
            return None
        record = self._read(number, offset, size)
        if record is None:
            return None
        index = group.first_layer + local
        try:
            data = check_layer_record(record, self._check())
        except WireError:
            self._discard(number, offset, size)
            return RecordFailed(f"layer {index}")
        self._layer += 1
        self.records += 1
        self._offset = offset + size
        self.verified += 1
        self._free_before(number, self._offset)
        header = group.header
        if isinstance(header, GroupHeader):
            return LayerVerified(index, data, header.first_pass + local, header.region)
        return LayerVerified(index, data, local)

    # -- acknowledgement ---------------------------------------------------------------------

    def at_rest(self) -> bool:
        """Every announced layer verified and nothing of a further group received."""
        group = self._groups[self._group]
        if group.header is not None and self._layer < len(group.layer_sizes):
            return False
        if self.verified != len(self.layer_sizes) or not self.layer_sizes:
            return False
        start = self._start(self._group)
        return start is not None and self.next <= start

    def acknowledgement(self, max_bitmap: int, final: bool) -> AckFrame | LayerCompleteFrame:
        """The frame that tells the device what is held.

        ``LayerCompleteFrame`` when the held fragments end exactly with the last verified layer
        (``final`` False forbids it when every layer is verified: a layer-complete frame for
        all of them ends the session on the device).
        """
        if self.verified and not self._received:
            everything = self.verified == len(self.layer_sizes)
            end = self.layer_end_fragment(self.verified - 1)
            if end is not None and self.next == end + 1 and (final or not everything):
                return LayerCompleteFrame(self.verified)
        return AckFrame.from_received(self.next, self._received, max_bitmap)
