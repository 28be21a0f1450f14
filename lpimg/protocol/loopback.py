"""A perfect class A link in a dozen lines, for tests, golden vectors and examples.

It is not a link model (no airtime, no duty cycle, no loss: :mod:`lpimg.link.sim` is that); it
only shows the pull API's contract in its simplest form: after every uplink the server gets
one downlink opportunity, timers fire when nothing else can happen, and virtual time advances
one second per uplink.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lpimg.protocol.device import DeviceSession
from lpimg.protocol.events import Event
from lpimg.protocol.server import ServerProtocol


@dataclass
class Transcript:
    """Every frame that crossed the loopback, in order, and every event, with its side."""

    uplinks: list[bytes] = field(default_factory=list)
    downlinks: list[bytes] = field(default_factory=list)
    frames: list[tuple[str, bytes]] = field(default_factory=list)
    events: list[tuple[str, Event]] = field(default_factory=list)


def run_loopback(
    device: DeviceSession,
    server: ServerProtocol,
    *,
    address: str = "dev",
    now: float = 0.0,
    max_steps: int = 100_000,
    on_event: Callable[[str, Event], None] | None = None,
) -> Transcript:
    """Run ``device`` against ``server`` until the device finishes (or ``max_steps``)."""
    transcript = Transcript()

    def drain() -> None:
        for side, source in (("device", device), ("server", server)):
            while (event := source.next_event()) is not None:
                transcript.events.append((side, event))
                if on_event is not None:
                    on_event(side, event)

    for _ in range(max_steps):
        drain()
        if device.finished:
            break
        frame = device.next_frame(now)
        if frame is None:
            timers = [t for t in (device.get_timer(), server.get_timer()) if t is not None]
            if not timers:
                break
            now = max(now, min(timers))
            device.handle_timer(now)
            server.handle_timer(now)
            continue
        transcript.uplinks.append(frame)
        transcript.frames.append(("up", frame))
        server.receive_frame(address, frame, now)
        drain()
        answer = server.next_frame(address, now + 1.0)
        if answer is not None:
            transcript.downlinks.append(answer)
            transcript.frames.append(("down", answer))
            device.receive_frame(answer, now + 1.0)
        now += 1.0
    drain()
    return transcript
