"""``lpimg bench forge``: forged and replayed downlinks thrown at an authenticated session.

An authenticated session (spec section 15) runs between the real protocol cores on a scripted
class A link (the server answers one second after each uplink it hears; seeded uplink and
downlink loss). Before each genuine downlink reaches the device, a share of ``--count`` attacks
is handed to the device core first, cycling through six kinds:

- ``random_mic``: a well-formed frame (STOP, ABORT, LAYER_COMPLETE of everything, an ACK of
  everything, REFINE) with a fresh counter and a random MIC;
- ``modified``: a genuine sealed downlink the device accepted, with one bit of its frame or of
  its counter flipped, MIC kept;
- ``wrong_key``: a frame correctly sealed with a fresh counter under another random key;
- ``other_session``: a frame sealed with the device's own key and a fresh counter, but for
  another session of the device (what a late answer about its previous picture would be);
- ``replay``: a genuine downlink the device already accepted, sent again verbatim;
- ``unsealed``: a plain, valid frame of a session without authentication.

A forgery counts as rejected when the device's rejection counter rises by one and its state
does not move. The benchmark reports accepted / rejected per kind (target: everything
rejected), the device's rejections by cause, and whether the genuine session still completed
with the server delivering exactly the layers sent.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from typing import Any

from lpimg.bench.link import BenchInputError, split_payload
from lpimg.protocol import DeviceSession, LayerReceived, ProtocolConfig, ServerProtocol
from lpimg.protocol.auth import seal_downlink
from lpimg.wire import (
    AbortReason,
    AckFrame,
    LayerCompleteFrame,
    RefineFrame,
    Region,
    ServerAbortFrame,
    StopFrame,
    build_downlink,
    split_sealed,
)
from lpimg.wire.auth import MAX_COUNTER

KINDS = ("random_mic", "modified", "wrong_key", "other_session", "replay", "unsealed")
DEVICE = "cam-forge"


def _plausible_frame(rng: random.Random, layers: int, fragments: int) -> bytes:
    """A well-formed downlink that would hurt the session if the device took it."""
    choice = rng.randrange(5)
    if choice == 0:
        return build_downlink(StopFrame())
    if choice == 1:
        return build_downlink(ServerAbortFrame(rng.choice(list(AbortReason))))
    if choice == 2:
        return build_downlink(LayerCompleteFrame(layers))
    if choice == 3:
        return build_downlink(AckFrame(min(fragments, 16382)))
    region = Region(rng.randrange(4), rng.randrange(4), 1 + rng.randrange(4), 1 + rng.randrange(4))
    return build_downlink(RefineFrame(0, region, rng.randrange(16)))


def _forgery(
    kind: str, rng: random.Random, device: DeviceSession, accepted: list[bytes], key: bytes
) -> tuple[str, bytes]:
    """One attack of ``kind`` (a replay or modification needs a genuine downlink to work on;
    before the first one the attack falls back to a random MIC)."""
    if kind in ("replay", "modified") and not accepted:
        kind = "random_mic"
    layers, fragments = device.layer_count, device.fragment_count
    fresh = min(MAX_COUNTER, device.downlink_counter + 1 + rng.randrange(1 << 16))
    if kind == "random_mic":
        frame = _plausible_frame(rng, layers, fragments)
        return kind, frame + fresh.to_bytes(4, "big") + rng.randbytes(4)
    session_id = device.session_id
    if kind == "wrong_key":
        frame = _plausible_frame(rng, layers, fragments)
        return kind, seal_downlink(rng.randbytes(16), fresh, frame, session_id)
    if kind == "other_session":
        other = (session_id + 1 + rng.randrange(0xFFFF)) & 0xFFFF
        return kind, seal_downlink(key, fresh, _plausible_frame(rng, layers, fragments), other)
    if kind == "unsealed":
        return kind, _plausible_frame(rng, layers, fragments)
    genuine = rng.choice(accepted)
    if kind == "replay":
        return kind, genuine
    frame, counter, mic = split_sealed(genuine)
    body = bytearray(frame + counter.to_bytes(4, "big"))
    position = rng.randrange(len(body))
    body[position] ^= 1 << rng.randrange(8)
    return kind, bytes(body) + mic


def run_forge(
    count: int,
    *,
    payload_bytes: int = 2001,
    layers: int = 3,
    mtu: int = 51,
    loss: float = 0.1,
    seed: int = 1,
    window: int = 8,
) -> dict[str, Any]:
    """Run one authenticated session under ``count`` attacks; see the module docstring."""
    if count < 0:
        raise BenchInputError(f"--count must be >= 0, got {count}")
    if payload_bytes < layers or layers < 1:
        raise BenchInputError("need at least one byte per layer and one layer")
    if not 0.0 <= loss < 1.0:
        raise BenchInputError(f"--loss must be in [0, 1), got {loss}")
    rng = random.Random(seed)
    payload = rng.randbytes(payload_bytes)
    parts = split_payload(payload, layers)
    key = rng.randbytes(16)
    config = ProtocolConfig(window=window)
    device = DeviceSession(rng.randrange(1 << 16), parts, mtu=mtu, now=0.0, key=key, config=config)
    server = ServerProtocol(config, keys={DEVICE: key})
    links = random.Random(seed + 1)
    attack_rng = random.Random(seed + 2)
    # Spread the attacks over the downlinks the genuine session will see: a first pass with the
    # same seeds counts them (the link and the cores are deterministic).
    expected = _genuine_downlinks(parts, key, mtu, loss, seed, config, device.session_id)
    # From the second genuine downlink on, so that replays have something to replay.
    spread = max(1, expected - 1)
    thrown = {kind: 0 for kind in KINDS}
    rejected = {kind: 0 for kind in KINDS}
    accepted_genuine: list[bytes] = []
    delivered: list[bytes] = []
    counts = {"uplinks": 0, "downlinks": 0, "downlinks_lost": 0, "uplinks_lost": 0}
    started = time.perf_counter()
    now, gap, done = 0.0, 0, 0
    for _ in range(200_000):
        if device.finished:
            break
        frame = device.next_frame(now)
        if frame is None:
            timer = device.get_timer()
            if timer is None:
                break
            now = max(now, timer)
            device.handle_timer(now)
            continue
        counts["uplinks"] += 1
        if links.random() >= loss:
            server.receive_frame(DEVICE, frame, now)
            for event in iter(server.next_event, None):
                if isinstance(event, LayerReceived):
                    delivered.append(event.data)
            answer = server.next_frame(DEVICE, now + 1.0)
            if answer is not None:
                counts["downlinks"] += 1
                # this gap's share of the attacks, thrown before the genuine frame arrives
                gap += 1
                share = count * min(max(gap - 1, 0), spread) // spread - done
                for _ in range(share):
                    kind = KINDS[done % len(KINDS)]
                    kind, forged = _forgery(kind, attack_rng, device, accepted_genuine, key)
                    before, state = device.stats.rejected, _state(device)
                    device.receive_frame(forged, now + 0.5)
                    thrown[kind] += 1
                    if device.stats.rejected == before + 1 and _state(device) == state:
                        rejected[kind] += 1
                    done += 1
                if links.random() >= loss:
                    counter = device.downlink_counter
                    device.receive_frame(answer, now + 1.0)
                    if device.downlink_counter > counter:
                        accepted_genuine.append(answer)
                else:
                    counts["downlinks_lost"] += 1
        else:
            counts["uplinks_lost"] += 1
        now += 10.0
    seconds = time.perf_counter() - started
    total_thrown = sum(thrown.values())
    total_rejected = sum(rejected.values())
    exact = b"".join(delivered) == payload
    return {
        "count": count,
        "thrown": total_thrown,
        "rejected": total_rejected,
        "accepted": total_thrown - total_rejected,
        "by_kind": {
            kind: {"thrown": thrown[kind], "rejected": rejected[kind],
                   "accepted": thrown[kind] - rejected[kind]}
            for kind in KINDS
        },
        "device_rejections": dict(sorted(device.stats.rejections.items())),
        "completed": device.reason == "complete" and exact,
        "reason": device.reason,
        "server_delivered_exactly": exact,
        "genuine_downlinks_accepted": len(accepted_genuine),
        **counts,
        "payload_bytes": payload_bytes,
        "layers": layers,
        "mtu": mtu,
        "loss": loss,
        "seed": seed,
        "window": window,
        "mic_bytes": 4,
        "counter_bytes": 4,
        "wall_s": round(seconds, 3),
        "frames_checked_per_s": round(total_thrown / seconds) if seconds > 0 else None,
        "cpu_count": os.cpu_count(),
    }


def _state(device: DeviceSession) -> tuple[Any, ...]:
    """What a forged downlink must not change."""
    return (
        device.finished,
        device.reason,
        device.acknowledged_layers,
        device.downlink_counter,
        device.refine_pending,
        device.get_timer(),
    )


def _genuine_downlinks(
    parts: list[bytes], key: bytes, mtu: int, loss: float, seed: int, config: ProtocolConfig,
    session_id: int,
) -> int:
    """Downlinks the server sends in the same session without attacks."""
    device = DeviceSession(session_id, parts, mtu=mtu, now=0.0, key=key, config=config)
    server = ServerProtocol(config, keys={DEVICE: key})
    links = random.Random(seed + 1)
    now, downlinks = 0.0, 0
    for _ in range(200_000):
        if device.finished:
            break
        frame = device.next_frame(now)
        if frame is None:
            timer = device.get_timer()
            if timer is None:
                break
            now = max(now, timer)
            device.handle_timer(now)
            continue
        if links.random() >= loss:
            server.receive_frame(DEVICE, frame, now)
            for _event in iter(server.next_event, None):
                pass
            answer = server.next_frame(DEVICE, now + 1.0)
            if answer is not None:
                downlinks += 1
                if links.random() >= loss:
                    device.receive_frame(answer, now + 1.0)
        now += 10.0
    return downlinks


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forge",
        help="throw forged and replayed downlinks at an authenticated session",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--count", type=int, default=10_000, help="attacks to throw (default 10000)")
    p.add_argument("--payload-bytes", type=int, default=2001, metavar="N",
                   help="bytes the genuine session moves (default 2001)")
    p.add_argument("--layers", type=int, default=3, help="layers of the genuine session (default 3)")
    p.add_argument("--mtu", type=int, default=51, help="uplink MTU (default 51, EU868 DR0)")
    p.add_argument("--loss", type=float, default=0.1,
                   help="loss rate of the genuine frames, both directions (default 0.1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--window", type=int, default=8,
                   help="fragments per ACK request: more genuine downlinks to replay (default 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    result = run_forge(
        args.count, payload_bytes=args.payload_bytes, layers=args.layers, mtu=args.mtu,
        loss=args.loss, seed=args.seed, window=args.window,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['thrown']} forged or replayed downlinks: {result['rejected']} rejected, "
          f"{result['accepted']} accepted")
    for kind, row in result["by_kind"].items():
        print(f"  {kind:<13} thrown {row['thrown']:>6}  rejected {row['rejected']:>6}  "
              f"accepted {row['accepted']:>3}")
    print(f"device rejections by cause: {result['device_rejections']}")
    print(f"genuine session: {result['reason']} (server delivered the exact layers: "
          f"{result['server_delivered_exactly']}); {result['uplinks']} uplinks, "
          f"{result['downlinks']} downlinks, {result['genuine_downlinks_accepted']} accepted")
    print(f"{result['wall_s']} s, {result['frames_checked_per_s']} attacks checked per second")
    return 0
