"""``lpimg bench flood``: legitimate sessions through a broker that is being flooded with garbage.

Like ``lpimg bench serve`` (its own ``mosquitto`` on loopback, the server in its own process,
devices in this one), plus a flooder process (:mod:`lpimg.bench.flooder`) publishing random
bytes, truncated frames and bogus session starts on the uplink topics at ``--garbage-fps``
messages a second. The flood starts ``--lead`` seconds before the legitimate devices and runs
until the last of them has ended. It reports how many legitimate sessions completed (the
device said "complete", and the server's reconstruction is exact), the garbage rate the flooder
really achieved, and the server's CPU time, peak RSS and counters (what it rejected, how many
sessions the bogus starts opened).

The benchmark uses only the server's public API, so it measures whatever resource bounds the
server has.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from lpimg.bench.fleet import (
    Broker,
    ServerProcess,
    child_env,
    encode_for_fleet,
    run_fleet,
    usage_of,
    wait_line,
)
from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError


def run(sessions: int = 100, garbage_fps: float = 10_000.0, *, loss: float = 0.0, width: int = 64,
        height: int = 48, mtu: int = 51, ack_timeout: float = 2.0, lead: float = 1.0,
        ramp: float | None = None, interval: float = 0.02, timeout: float = 600.0, spoof: float = 0.0,
        mix: tuple[float, float, float] = (1.0, 1.0, 1.0), decode: bool = True,
        model: str = DEFAULT_MODEL, seed: int = 1, allowlist: bool = False) -> dict[str, Any]:
    if sessions < 1:
        raise LpimgError(f"--sessions must be at least 1, got {sessions}")
    if garbage_fps < 0:
        raise LpimgError(f"--garbage-fps must be >= 0, got {garbage_fps}")
    codec, encoded, digest = encode_for_fleet(model, width, height)
    ids = [f"cam-{i:04d}" for i in range(sessions)]
    ramp = sessions / 100 if ramp is None else ramp
    started = time.perf_counter()
    with Broker() as broker:
        url = broker.url(mtu=mtu)
        with ServerProcess(url, sessions, decode=decode, ack_timeout=ack_timeout, legit_prefix="cam-",
                           model=model, allowlist=allowlist) as server:
            flooder = subprocess.Popen(
                [sys.executable, "-m", "lpimg.bench.flooder", "--port", str(broker.port), "--rate",
                 str(garbage_fps), "--mtu", str(mtu), "--legit", ",".join(ids), "--spoof", str(spoof),
                 "--seed", str(seed), "--mix", *(str(m) for m in mix)],
                stdout=subprocess.PIPE, text=True, env=child_env())
            try:
                wait_line(flooder, "READY", 120, "the flooder")
                time.sleep(lead)  # the flood is on before the first legitimate frame
                fleet = asyncio.run(run_fleet(url, ids, encoded, loss=loss, ack_timeout=ack_timeout,
                                              ramp=ramp, interval=interval, timeout=timeout, seed=seed))
                flooder.terminate()
                flood = json.loads(wait_line(flooder, "{", 30, "the flooder"))
                flooder.wait(10)
            finally:
                if flooder.poll() is None:
                    flooder.kill()
                    flooder.wait(5)
                if flooder.stdout is not None:
                    flooder.stdout.close()
            report = server.finish()
        broker_counters = asyncio.run(broker.sys_counters())
    states = report["sessions"]
    completed = sum(
        1 for device, result in fleet.results.items()
        if not isinstance(result, str) and result.reason == "complete"
        and states.get(device, {}).get("reason") == "complete"
        and (not decode or states[device]["digest"] == digest)
    )
    counters = report["counters"]
    link = report["link"]
    return {
        "sessions": sessions,
        "completed": completed,
        "all_completed": completed == sessions,
        "device_reasons": fleet.reasons(),
        "server_reasons": _count(s["reason"] for s in states.values()),
        "garbage_fps_target": garbage_fps,
        "garbage_sent": flood["sent"],
        "garbage_fps": flood["rate"],
        "flood_s": flood["seconds"],
        "garbage_mix": flood["pool"],
        "broker": broker_counters,  # mosquitto's own counts; "dropped": a subscriber fell behind
        "spoof": spoof,
        "allowlist": allowlist,
        "loss": loss,
        "picture": f"{width}x{height}",
        "payload_bytes": encoded.total_bytes,
        "mtu": mtu,
        **usage_of(report),
        "server_frames_per_cpu_s": (report["link"]["frames_in"] + report["link"]["frames_out"])
        / report["cpu_s_serving"] if report["cpu_s_serving"] > 0 else None,
        "server_rss_mb_ready": report["rss_mb_ready"],
        "server_frames_in": link["frames_in"],
        "server_frames_out": link["frames_out"],
        "server_link_rejected": link["rejected"],
        # read from the broker but dropped by the server's full inbox (its non-priority lane
        # first), and what the server really handled
        "server_inbox_dropped": link["rejected"].get("inbox_full", 0),
        "server_uplinks_handled": report["protocol"].get("uplinks"),
        "server_malformed": counters.get("malformed"),
        "server_sessions_started": counters.get("sessions_started"),
        "server_active_sessions_at_end": report["active_sessions_at_end"],
        "server_counters": counters,
        "server_protocol": report["protocol"],
        "fleet_wall_s": fleet.ended - fleet.started,
        "wall_s": time.perf_counter() - started,
        "loadavg_1min_at_end": os.getloadavg()[0],
        "cpus_allowed": len(os.sched_getaffinity(0)),
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[str(item)] = out.get(str(item), 0) + 1
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flood", help="legitimate sessions during a garbage flood through mosquitto",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--sessions", type=int, default=100, help="legitimate devices (default 100)")
    p.add_argument("--garbage-fps", type=float, default=10_000.0,
                   help="garbage messages per second (default 10000)")
    p.add_argument("--mix", type=float, nargs=3, default=(1.0, 1.0, 1.0),
                   metavar=("NOISE", "TRUNC", "START"), help="proportions of the garbage kinds")
    p.add_argument("--spoof", type=float, default=0.0,
                   help="share of noise/truncated frames sent as legitimate device ids (default 0)")
    p.add_argument("--lead", type=float, default=1.0, help="seconds of flood before the devices start")
    p.add_argument("--loss", type=float, default=0.0, help="frame loss of the legitimate links")
    p.add_argument("--size", default="64x48", help="the legitimate picture, WxH (default 64x48)")
    p.add_argument("--mtu", type=int, default=51)
    p.add_argument("--ack-timeout", type=float, default=2.0)
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--ramp", type=float, default=None, help="seconds over which devices start")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--no-decode", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--allowlist", action="store_true",
                   help="the server knows its devices (Server(devices=...)): listed ones are handled first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from lpimg.bench.serve import parse_size

    width, height = parse_size(args.size)
    result = run(args.sessions, args.garbage_fps, loss=args.loss, width=width, height=height,
                 mtu=args.mtu, ack_timeout=args.ack_timeout, lead=args.lead, ramp=args.ramp,
                 interval=args.interval, timeout=args.timeout, spoof=args.spoof, mix=tuple(args.mix),
                 decode=not args.no_decode, model=args.model, seed=args.seed, allowlist=args.allowlist)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['completed']}/{result['sessions']} legitimate sessions completed during "
          f"{result['garbage_sent']} garbage messages ({result['garbage_fps']:.0f}/s of "
          f"{result['garbage_fps_target']:.0f}/s asked, {result['flood_s']:.1f} s)")
    print(f"device reasons: {result['device_reasons']}")
    print(f"server: CPU {result['cpu_s_serving']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
          f"{result['server_frames_in']} frames in, {result['server_malformed']} malformed, "
          f"{result['server_sessions_started']} sessions started, link rejected "
          f"{result['server_link_rejected']}, {result['server_uplinks_handled']} uplinks handled")
    return 0 if result["all_completed"] else 1
