"""What every frame declaration shares: one construct ``Struct`` compiled once, and a mapping
between its parsed container and the frozen dataclass the rest of lpimg uses.

Parsing is strict: a frame must be consumed exactly, and any failure (construct's, a field
check in a dataclass, an unexpected exception on hostile input) surfaces as
:class:`lpimg.WireError` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from construct import Construct

from lpimg.errors import WireError

F = TypeVar("F")


@dataclass(frozen=True)
class FrameSpec(Generic[F]):
    """One frame type: its name in the spec, its declaration, and its dataclass mapping."""

    name: str
    direction: str
    declaration: Construct
    frame_type: type[F]
    decode: Callable[[Any], F]
    """Parsed container -> frame."""
    encode: Callable[[F], dict[str, Any]]
    """Frame -> the dict construct builds from."""
    summary: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", self.declaration.compile())

    def parse(self, data: bytes) -> F:
        """Parse one whole frame of this type; only :class:`WireError` escapes."""
        try:
            return self.decode(self._compiled.parse(data))  # type: ignore[attr-defined]
        except WireError:
            raise
        except Exception as error:  # construct, int(), cbor2...: all mean "bad bytes"
            raise WireError(f"malformed {self.name} frame: {error}") from error

    def build(self, frame: F) -> bytes:
        """Build the bytes of ``frame``; a field out of range raises :class:`WireError`."""
        try:
            return bytes(self._compiled.build(self.encode(frame)))  # type: ignore[attr-defined]
        except WireError:
            raise
        except Exception as error:
            raise WireError(f"cannot build {self.name} frame {frame!r}: {error}") from error
