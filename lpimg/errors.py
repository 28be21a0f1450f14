"""The one exception hierarchy of lpimg.

Every error the library raises on bad input derives from :class:`LpimgError`, so a gateway can
wrap a whole receive loop in one ``except LpimgError`` and count what it dropped.
"""

from __future__ import annotations


class LpimgError(Exception):
    """Root of every error lpimg raises deliberately."""


class WireError(LpimgError):
    """A frame could not be parsed or built (truncated, unknown type, bad field)."""


class ManifestError(WireError):
    """The CBOR manifest of a session start is malformed."""


class ProtocolError(LpimgError):
    """A frame was well formed but not acceptable in the session's current state."""


class SessionAborted(ProtocolError):
    """A session ended without delivering its image; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkError(LpimgError):
    """A transport failed or was configured wrongly (bad URL, closed port, broker gone)."""


class CodecError(LpimgError):
    """An image or a coded stream is unusable (bad geometry, wrong model, corrupted layer)."""


class ImageInputError(CodecError):
    """The input picture cannot be coded as given (too small, too large, unsupported mode)."""


class ContainerError(CodecError):
    """An ``.lpi`` file is truncated, corrupted or from another model."""
