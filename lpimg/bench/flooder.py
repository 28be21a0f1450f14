"""A garbage flood for ``lpimg bench flood``, in a process of its own (``python -m lpimg.bench.flooder``).

It publishes to ``lpimg/{device}/up`` on a broker at a fixed rate, a mix of:

- **noise**: random bytes of random length (1..MTU);
- **truncated** frames: real session starts and data fragments cut short;
- **bogus session starts**: well-formed START frames, each from a new device id, announcing
  a session that will never send anything else (a hostile neighbour filling the server's
  session table).

Noise and truncated frames come from a pool of made-up device ids, or with probability
``--spoof`` from the legitimate devices' ids (as anyone may publish on a plain MQTT broker).

Speed matters more than elegance here: a Python MQTT client spends more CPU per message than
the server it is trying to flood, and this machine shares cores. So the messages are built
once as MQTT 3.1.1 PUBLISH packets (QoS 0: fixed header, topic, payload) and written to a plain
TCP socket in batches, paced by the clock; what was really sent is counted and reported as one
JSON line on SIGTERM, after ``READY`` once connected.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import sys
import time
from typing import Any

KINDS = ("noise", "truncated", "start")


def _varint(n: int) -> bytes:
    """MQTT's remaining-length encoding."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    body = _string("MQTT") + bytes([4, 0x02]) + keepalive.to_bytes(2, "big") + _string(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes) -> bytes:
    body = _string(topic) + payload
    return b"\x30" + _varint(len(body)) + body


def build_pool(size: int, mtu: int, legit: list[str], spoof: float, seed: int,
               mix: tuple[float, float, float]) -> tuple[list[bytes], dict[str, int]]:
    """``size`` PUBLISH packets of the three kinds in proportions ``mix``."""
    from lpimg.protocol import DeviceSession

    rng = random.Random(f"lpimg-flood/{seed}")
    counts = dict.fromkeys(KINDS, 0)
    packets = []
    real: list[bytes] = []
    for i in range(64):  # real frames to truncate: starts and data fragments of real sessions
        layers = [rng.randbytes(rng.randint(20, 400)) for _ in range(rng.randint(1, 4))]
        session = DeviceSession(rng.randrange(0x10000), layers, mtu=mtu, now=0.0, geometry=(64, 48))
        for _ in range(4):
            frame = session.next_frame(0.0)
            if frame is not None and len(frame) > 1:
                real.append(frame)
        del i
    for n in range(size):
        kind = rng.choices(KINDS, weights=mix)[0]
        counts[kind] += 1
        if kind == "start":
            device = f"bogus-{seed}-{n}"
            layers = [rng.randbytes(rng.randint(1, 2000))]
            payload = DeviceSession(rng.randrange(0x10000), layers, mtu=mtu, now=0.0).next_frame(0.0)
            assert payload is not None
        else:
            device = rng.choice(legit) if legit and rng.random() < spoof else f"noise-{rng.randrange(1000)}"
            if kind == "noise":
                payload = rng.randbytes(rng.randint(1, mtu))
            else:
                frame = rng.choice(real)
                payload = frame[: rng.randint(1, len(frame) - 1)]
        packets.append(publish_packet(f"lpimg/{device}/up", payload))
    return packets, counts


def flood(port: int, rate: float, pool: list[bytes], tick: float = 0.005) -> dict[str, Any]:
    """Send ``pool`` round and round at ``rate`` messages a second until SIGTERM."""
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(f"lpimg-flooder-{port}"))
    ack = sock.recv(4)
    if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
        raise SystemExit(f"the broker refused the flooder: {ack!r}")
    sock.setblocking(True)
    print("READY", flush=True)
    start = time.monotonic()
    sent = 0
    index = 0
    while not stop[0]:
        due = int((time.monotonic() - start) * rate)
        if due > sent:
            count = min(due - sent, len(pool))
            end = index + count
            batch = pool[index:end] if end <= len(pool) else pool[index:] + pool[: end - len(pool)]
            sock.sendall(b"".join(batch))
            sent += count
            index = end % len(pool)
        else:
            time.sleep(tick)
    seconds = time.monotonic() - start
    try:
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    finally:
        sock.close()
    return {"sent": sent, "seconds": seconds, "rate": sent / seconds if seconds > 0 else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lpimg.bench.flooder")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--mtu", type=int, default=51)
    parser.add_argument("--pool", type=int, default=30_000)
    parser.add_argument("--mix", type=float, nargs=3, default=(1.0, 1.0, 1.0),
                        metavar=("NOISE", "TRUNC", "START"))
    parser.add_argument("--legit", default="", help="comma-separated legitimate device ids")
    parser.add_argument("--spoof", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    legit = [d for d in args.legit.split(",") if d]
    pool, counts = build_pool(args.pool, args.mtu, legit, args.spoof, args.seed, tuple(args.mix))
    report = flood(args.port, args.rate, pool)
    report["pool"] = counts
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
