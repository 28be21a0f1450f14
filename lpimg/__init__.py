"""lpimg: progressive learned image transfer over low-power wide-area links."""

from lpimg.errors import (
    CodecError,
    ContainerError,
    ImageInputError,
    LinkError,
    LpimgError,
    ManifestError,
    ProtocolError,
    SessionAborted,
    WireError,
)

__version__ = "0.1.0"

__all__ = [
    "CodecError",
    "ContainerError",
    "ImageInputError",
    "LinkError",
    "LpimgError",
    "ManifestError",
    "ProtocolError",
    "SessionAborted",
    "WireError",
    "__version__",
]
