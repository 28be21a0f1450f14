"""What every frame declaration shares: one construct ``Struct`` compiled once, and a mapping
between its parsed container and the frozen dataclass the rest of lpimg uses.

Parsing is strict: a frame must be consumed exactly, and any failure (construct's, a field
check in a dataclass, an unexpected exception on hostile input) surfaces as
:class:`lpimg.WireError` and nothing else.

The construct declaration is normative: the spec's byte tables are generated from it and
:meth:`FrameSpec.parse_declared` / :meth:`FrameSpec.build_declared` run it. A frame type may
also carry a hand-written *fast path* (``fast_parse``, ``fast_build``) for the hot loop: even a
compiled construct parser spends most of its time building ``Container`` objects and walking
streams, which caps a small frame at ~60-100k parse+build per second, while ``int.from_bytes``
and a slice do the same job several times faster. A fast path must accept and reject exactly
the bytes the declaration does and build exactly the same bytes; tests/test_wire_fast.py proves
that on generated frames, mutated frames and arbitrary bytes.
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
    fast_parse: Callable[[bytes], F] | None = None
    """Optional hand-written equivalent of ``decode(declaration.parse(data))``."""
    fast_build: Callable[[F], bytes | None] | None = None
    """Optional hand-written equivalent of ``declaration.build(encode(frame))``; it may return
    None for a frame it does not handle (an oddly typed field), which then takes the declared
    path so that the error, if any, is the declaration's."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", self.declaration.compile())

    def parse(self, data: bytes) -> F:
        """Parse one whole frame of this type; only :class:`WireError` escapes."""
        fast = self.fast_parse
        if fast is None:
            return self.parse_declared(data)
        try:
            return fast(data)
        except WireError:
            raise
        except Exception as error:  # int(), a bad type...: all mean "bad bytes"
            raise WireError(f"malformed {self.name} frame: {error}") from error

    def build(self, frame: F) -> bytes:
        """Build the bytes of ``frame``; a field out of range raises :class:`WireError`."""
        fast = self.fast_build
        if fast is not None:
            try:
                data = fast(frame)
            except WireError:
                raise
            except Exception:
                data = None  # let the declaration build it, or say why it cannot
            if data is not None:
                return data
        return self.build_declared(frame)

    def parse_declared(self, data: bytes) -> F:
        """Parse through the construct declaration (the reference the fast path must match)."""
        try:
            return self.decode(self._compiled.parse(data))  # type: ignore[attr-defined]
        except WireError:
            raise
        except Exception as error:  # construct, int(), cbor2...: all mean "bad bytes"
            raise WireError(f"malformed {self.name} frame: {error}") from error

    def build_declared(self, frame: F) -> bytes:
        """Build through the construct declaration (the reference the fast path must match)."""
        try:
            return bytes(self._compiled.build(self.encode(frame)))  # type: ignore[attr-defined]
        except WireError:
            raise
        except Exception as error:
            raise WireError(f"cannot build {self.name} frame {frame!r}: {error}") from error
