"""lpimg.protocol: sans-I/O state machines for the device and the server.

Frames and ``now`` go in; frames to send, events and the next timer deadline come out. Nothing
here does I/O, sleeps, reads a clock or draws random numbers, so a transfer can be tested
exhaustively and simulated over days of airtime in milliseconds.
"""

from lpimg.protocol.auth import AuthError
from lpimg.protocol.config import RECEIVE_SPAN, ProtocolConfig
from lpimg.protocol.device import REQUESTED, AddedGroup, DeviceSession
from lpimg.protocol.events import (
    Aborted,
    Event,
    LayerReceived,
    LayersAcknowledged,
    LayersAnnounced,
    RefineRequested,
    SessionCompleted,
    SessionResumed,
    SessionStarted,
    Stopped,
)
from lpimg.protocol.loopback import Transcript, run_loopback
from lpimg.protocol.server import ServerProtocol, SessionInfo, SessionState
from lpimg.protocol.stats import DeviceStats, ServerStats
from lpimg.wire import AbortReason, Manifest, Region

__all__ = [
    "RECEIVE_SPAN",
    "REQUESTED",
    "AbortReason",
    "Aborted",
    "AddedGroup",
    "AuthError",
    "DeviceSession",
    "DeviceStats",
    "Event",
    "LayerReceived",
    "LayersAcknowledged",
    "LayersAnnounced",
    "Manifest",
    "ProtocolConfig",
    "RefineRequested",
    "Region",
    "ServerProtocol",
    "ServerStats",
    "SessionCompleted",
    "SessionInfo",
    "SessionResumed",
    "SessionStarted",
    "SessionState",
    "Stopped",
    "Transcript",
    "run_loopback",
]
