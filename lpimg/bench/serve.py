"""``lpimg bench serve``: one server, many devices, one mosquitto on loopback, lossy links.

The benchmark starts its own ``mosquitto`` on a free port, the server in a process of its own
(so its CPU time and peak RSS are measured alone) and N devices in this process, each with its
own MQTT connection, dropping each uplink and downlink with probability ``--loss``. Every device
sends the same small picture, encoded once. An image counts as **completed** when the device
ended with "complete", the server's final update says "complete", and (unless ``--no-decode``)
the server's reconstruction is bit for bit the one the codec gives for all its layers.

Times are real (this is a real broker): the protocol's ACK timeout is ``--ack-timeout``
seconds instead of LoRaWAN's 20, and devices pace themselves (``--interval``). Frames per
second count the server link's frames in and out, from its first uplink to the last session's
end. The devices share the machine with the server; run it with ``taskset`` to keep both off
busy cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from lpimg.bench.fleet import Broker, ServerProcess, encode_for_fleet, run_fleet, usage_of
from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError


def run(devices: int = 500, loss: float = 0.1, *, width: int = 64, height: int = 48, mtu: int = 51,
        ack_timeout: float = 2.0, ramp: float | None = None, interval: float = 0.02,
        timeout: float = 900.0, decode: bool = True, model: str = DEFAULT_MODEL,
        seed: int = 1) -> dict[str, Any]:
    if devices < 1:
        raise LpimgError(f"--devices must be at least 1, got {devices}")
    if not 0.0 <= loss < 1.0:
        raise LpimgError(f"--loss must be in [0, 1), got {loss}")
    codec, encoded, digest = encode_for_fleet(model, width, height)
    ids = [f"cam-{i:04d}" for i in range(devices)]
    ramp = devices / 100 if ramp is None else ramp
    started = time.perf_counter()
    with Broker() as broker:
        url = broker.url(mtu=mtu)
        with ServerProcess(url, devices, decode=decode, ack_timeout=ack_timeout, legit_prefix="cam-",
                           model=model) as server:
            fleet = asyncio.run(run_fleet(url, ids, encoded, loss=loss, ack_timeout=ack_timeout,
                                          ramp=ramp, interval=interval, timeout=timeout, seed=seed))
            report = server.finish()
        broker_counters = asyncio.run(broker.sys_counters())
    sessions = report["sessions"]
    server_complete = sum(1 for s in sessions.values() if s["reason"] == "complete")
    exact = sum(1 for s in sessions.values() if s["digest"] == digest)
    both = sum(
        1 for device, result in fleet.results.items()
        if not isinstance(result, str) and result.reason == "complete"
        and sessions.get(device, {}).get("reason") == "complete"
        and (not decode or sessions[device]["digest"] == digest)
    )
    link = report["link"]
    wall = report["wall_s_serving"]
    frames = link["frames_in"] + link["frames_out"]
    return {
        "devices": devices,
        "loss": loss,
        "picture": f"{width}x{height}",
        "layers": len(encoded.layers),
        "payload_bytes": encoded.total_bytes,
        "mtu": mtu,
        "decode": decode,
        "ack_timeout_s": ack_timeout,
        "completed": both,
        "all_completed": both == devices,
        "device_completed": fleet.completed(),
        "server_complete": server_complete,
        "server_exact": exact,
        "device_reasons": fleet.reasons(),
        "frames_dropped": {"up": fleet.dropped_up, "down": fleet.dropped_down},
        "broker": broker_counters,
        "server_frames_in": link["frames_in"],
        "server_frames_out": link["frames_out"],
        "server_rejected": link["rejected"],
        "frames_per_s": frames / wall if wall > 0 else None,
        "uplinks_per_s": link["frames_in"] / wall if wall > 0 else None,
        **usage_of(report),
        "server_frames_per_cpu_s": (report["link"]["frames_in"] + report["link"]["frames_out"])
        / report["cpu_s_serving"] if report["cpu_s_serving"] > 0 else None,
        "server_rss_mb_ready": report["rss_mb_ready"],
        "server_cpu_per_image_ms": 1000 * report["cpu_s_serving"] / max(1, devices),
        "server_counters": report["counters"],
        "fleet_wall_s": fleet.ended - fleet.started,
        "wall_s": time.perf_counter() - started,
        "loadavg_1min_at_end": os.getloadavg()[0],
        "cpus_allowed": len(os.sched_getaffinity(0)),
    }


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="N devices through one mosquitto with loss: completions, "
                       "frames/s, server CPU and RSS",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--loss", type=float, default=0.1, help="frame loss each way (default 0.1)")
    p.add_argument("--size", default="64x48", help="every device's picture, WxH (default 64x48)")
    p.add_argument("--mtu", type=int, default=51, help="frame size limit (default 51, EU868 DR0)")
    p.add_argument("--ack-timeout", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument("--interval", type=float, default=0.02,
                   help="least seconds between a device's uplinks (default 0.02)")
    p.add_argument("--ramp", type=float, default=None,
                   help="seconds over which devices start (default devices / 100)")
    p.add_argument("--timeout", type=float, default=900.0, help="give a device up after this long")
    p.add_argument("--no-decode", action="store_true", help="server only reassembles")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise LpimgError(f"--size must look like 64x48, not {text!r}") from None
    return w, h


def _cmd(args: argparse.Namespace) -> int:
    width, height = parse_size(args.size)
    result = run(args.devices, args.loss, width=width, height=height, mtu=args.mtu,
                 ack_timeout=args.ack_timeout, ramp=args.ramp, interval=args.interval,
                 timeout=args.timeout, decode=not args.no_decode, model=args.model, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['devices']} devices, {result['loss']:.0%} loss each way, {result['picture']} picture "
          f"({result['layers']} layers, {result['payload_bytes']} B) at MTU {result['mtu']}")
    print(f"completed: {result['completed']}/{result['devices']} (device said complete, server's "
          f"reconstruction exact); device reasons: {result['device_reasons']}")
    print(f"server: {result['server_frames_in']} frames in, {result['server_frames_out']} out, "
          f"{result['frames_per_s']:.0f} frames/s over {result['wall_s_serving']:.1f} s; "
          f"CPU {result['cpu_s_serving']:.1f} s serving ({result['server_cpu_per_image_ms']:.1f} ms "
          f"per image); peak RSS {result['peak_rss_mb']:.0f} MB")
    return 0 if result["all_completed"] else 1
