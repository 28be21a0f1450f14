"""How a group of the session stream is cut into fragments: the arithmetic both ends share.

Group 0 begins with fragment 0, which rides in the session start frame: that frame has 3 more
header bytes than a data fragment, so fragment 0 holds F0 = min(F - 3, size of group 0) bytes,
derived by both ends and never sent. Every other fragment holds F bytes except the last of each
group, which holds the rest. Later groups start on a fresh fragment and use F throughout. With
``first_size=None`` a function describes a later group.
"""

from __future__ import annotations

from lpimg.wire import DATA_HEADER_SIZE, START_HEADER_SIZE

START_EXTRA = START_HEADER_SIZE - DATA_HEADER_SIZE


def first_fragment_size(fragment_size: int, group_size: int) -> int:
    """F0 for a session whose group 0 is ``group_size`` bytes."""
    return min(fragment_size - START_EXTRA, group_size)


def fragment_count(size: int, fragment_size: int, first_size: int | None) -> int:
    """Fragments a group of ``size`` bytes occupies (a group is never empty)."""
    if first_size is None:
        return -(-size // fragment_size)
    if size <= first_size:
        return 1
    return 1 + -(-(size - first_size) // fragment_size)


def position(offset: int, fragment_size: int, first_size: int | None) -> tuple[int, int]:
    """(fragment number within the group, byte within that fragment) of a group offset."""
    if first_size is None:
        return divmod(offset, fragment_size)
    if offset < first_size:
        return 0, offset
    number, inner = divmod(offset - first_size, fragment_size)
    return number + 1, inner


def span(number: int, size: int, fragment_size: int, first_size: int | None) -> tuple[int, int]:
    """(start offset, length) of fragment ``number`` of a group of ``size`` bytes."""
    if first_size is None:
        start = number * fragment_size
        length = fragment_size
    elif number == 0:
        start, length = 0, first_size
    else:
        start = first_size + (number - 1) * fragment_size
        length = fragment_size
    return start, max(0, min(length, size - start))


def split(data: bytes, fragment_size: int, first_size: int | None) -> list[bytes]:
    """Cut one group into its fragments."""
    count = fragment_count(len(data), fragment_size, first_size)
    pieces = []
    for number in range(count):
        start, length = span(number, len(data), fragment_size, first_size)
        pieces.append(data[start : start + length])
    return pieces
