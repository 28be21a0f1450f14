"""The server of the fleet benchmarks, in a process of its own (``python -m lpimg.bench.serverproc``).

It serves one link URL with an ordinary :class:`~lpimg.endpoint.Server`, prints ``READY`` once
connected, and serves until SIGTERM (a device whose last answer was lost still polls after the
server has seen its session end, so only the fleet knows when it is over). Then it prints one
JSON line: its own CPU time (while serving and in all), peak RSS, the wall time from the first
uplink to the end of the ``--expect``-th session of devices whose id starts with
``--legit-prefix`` (or to SIGTERM, if fewer ended), the server's and the link's counters, and
per legitimate device how its session ended with a digest of the final reconstruction
(computed after the CPU figures are taken).
Its log goes to stderr (``--log-level``, default WARNING).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import hashlib
import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from typing import Any

from lpimg.codec.shipped import DEFAULT_MODEL

CLOSE_S = 15.0
"""Seconds the server gets to close after reporting."""

log = logging.getLogger("lpimg.bench.serverproc")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float | None:
    """Current resident set size from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    from lpimg.endpoint import Server
    from lpimg.link import open_server_link
    from lpimg.protocol import ProtocolConfig

    codec = None
    if args.decode:
        from lpimg.codec.pipeline import LearnedCodec

        codec = LearnedCodec.load(args.model)
    finals: dict[str, Any] = {}
    done = asyncio.Event()
    first_uplink: list[float] = []
    last_final = [0.0]

    def on_update(update: Any) -> None:
        if not update.final or not update.device.startswith(args.legit_prefix):
            return
        finals[update.device] = update
        if len(finals) <= args.expect:
            last_final[0] = time.monotonic()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    config = ProtocolConfig(ack_timeout=args.ack_timeout)
    link = await open_server_link(args.url)
    prefix = args.legit_prefix
    devices = (lambda device: device.startswith(prefix)) if args.allowlist else None
    server = Server(link, codec=codec, model=args.model, decode=args.decode, config=config,
                    on_update=on_update, devices=devices)
    server.start()
    rss_ready = _rss_mb()
    cpu_ready = _cpu()
    print("READY", flush=True)

    async def watch_first() -> None:
        while server.counters.uplinks == 0:
            await asyncio.sleep(0.01)
        first_uplink.append(time.monotonic())

    watcher = asyncio.create_task(watch_first())
    await done.wait()
    ended = time.monotonic()
    cpu_end = _cpu()
    watcher.cancel()
    stats = link.stats
    start = first_uplink[0] if first_uplink else ended
    end = last_final[0] if len(finals) >= args.expect and last_final[0] else ended
    sessions = {}
    for device, update in sorted(finals.items()):
        digest = None
        if update.completed and update.decodable:
            digest = hashlib.sha256(update.reconstruction.tobytes()).hexdigest()
        sessions[device] = {"reason": update.reason, "layers": update.layers, "bytes": update.bytes,
                            "digest": digest}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "cpu_s_serving": cpu_end - cpu_ready,
        "cpu_s_total": cpu_end,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
        "rss_mb_ready": rss_ready,
        "wall_s_serving": max(0.0, end - start),
        "wall_s_until_stopped": ended - start,
        "counters": dataclasses.asdict(server.counters),
        "protocol": _plain(server.protocol.stats),
        "link": {"frames_in": stats.frames_in, "bytes_in": stats.bytes_in,
                 "frames_out": stats.frames_out, "bytes_out": stats.bytes_out,
                 "dropped_out": stats.dropped_out, "rejected": dict(stats.rejected)},
        "active_sessions_at_end": sum(1 for s in server.sessions() if s.active),
        "sessions": sessions,
    }
    # Report first: a server drowning in a flood may take long to wind down, and the figures
    # are taken already. Then close as a gateway would, within a bound kept by a thread (a
    # close that swallows its own cancellation cannot be bounded from inside the loop).
    print(json.dumps(report), flush=True)

    def give_up() -> None:
        task = server._task
        log.error("the server did not close within %s s%s", CLOSE_S,
                  "" if task is None else "; its task is at:")
        if task is not None:
            task.print_stack(file=sys.stderr)
        sys.stderr.flush()
        os._exit(3)

    watchdog = threading.Timer(CLOSE_S, give_up)
    watchdog.daemon = True
    watchdog.start()
    await server.close()
    await link.close()
    watchdog.cancel()
    return report


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value if isinstance(value, int | float | str | bool | None) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lpimg.bench.serverproc")
    parser.add_argument("url")
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--legit-prefix", default="")
    parser.add_argument("--allowlist", action="store_true",
                        help="serve only devices whose id starts with --legit-prefix")
    parser.add_argument("--ack-timeout", type=float, default=2.0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--no-decode", dest="decode", action="store_false")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # a stuck server shows where it is stuck
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(relativeCreated)d %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
