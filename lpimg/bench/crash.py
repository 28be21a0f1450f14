"""``lpimg bench crash``: kill a real ``lpimg serve`` with SIGKILL mid-transfer, start it again on
the same state file, and check that the picture completes without the device ever sending again
a fragment the server had acknowledged. Repeated ``--runs`` times (target: every run passes).

Each run: a fresh ``lpimg serve --state FILE --no-decode`` process on an MQTT broker (a
``mosquitto`` this benchmark starts on a free loopback port, or ``--broker``); a device in this
process sends ``--layers`` random layers through it; after the server has reported a randomly
chosen number of layers (1 to ``--layers`` - 2, so a whole layer is still to come, and a random
0-20 ms more) it is killed, then restarted at once on the same file (``--kills`` times per run).
A run passes when

- the device ends "complete", was never told "unknown session" (it would then start over) and
  sent no fragment again that the server had reported held (``acknowledged_resent`` = 0);
- the JSON sidecar ``serve`` writes says the session is complete with every layer and every
  byte (``serve`` writes it before it commits and answers, so it survives the kill too);
- every kill happened while the transfer was still running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpimg.errors import LpimgError


@dataclass(frozen=True)
class _Header:
    """The stream header of opaque test layers (the server runs without decoding)."""

    model_id: int
    width: int
    height: int
    top_plane: int
    condition: None = None

    @property
    def total_passes(self) -> int:
        return 2 * self.top_plane + 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Broker:
    """A private mosquitto on a free loopback port."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)
        if binary is None:
            raise LpimgError("mosquitto is not installed (apt-get install mosquitto), or give --broker URL")
        self.port = _free_port()
        config = folder / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\npersistence false\nallow_anonymous true\n")
        import subprocess

        self.proc = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LpimgError("mosquitto did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except Exception:  # noqa: BLE001 - a broker that hangs on exit is killed
            self.proc.kill()


class _ServeProcess:
    """``lpimg serve`` as a child process whose output lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, broker: str, out: Path, state: Path, log: Path) -> _ServeProcess:
        with log.open("ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lpimg.cli", "serve", "--link", broker, "--out", str(out),
                "--state", str(state), "--no-decode", "--quiet",
                stdout=asyncio.subprocess.PIPE, stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        server = cls(proc)
        await server.wait_for(lambda line: line.startswith("serving"), 30.0)
        return server

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            await self.lines.put(line.decode(errors="replace").rstrip("\n"))

    async def wait_for(self, accept: Any, timeout: float) -> str:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.lines.get()
                if accept(line):
                    return line

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            await self.kill()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


def _layers_line(device: str, line: str) -> int | None:
    """Layers in a ``serve`` update line of ``device`` ("dev/image: N layers, B bytes (...)")."""
    if not line.startswith(device + "/"):
        return None
    try:
        return int(line.split(": ", 1)[1].split(" ", 1)[0])
    except (IndexError, ValueError):
        return None


async def _final_sidecar(folder: Path, timeout: float) -> dict[str, Any]:
    """The JSON sidecar ``serve`` writes for the device, once it is final (or as it stands)."""
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for path in folder.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(path.read_text())
        if doc.get("final"):
            break
        await asyncio.sleep(0.02)
    return doc


async def _one_run(number: int, args: argparse.Namespace, broker: str, folder: Path,
                   rng: random.Random) -> dict[str, Any]:
    from lpimg.endpoint.device import Device, Pacing, encoded_from_layers
    from lpimg.link import open_device_link
    from lpimg.protocol import ProtocolConfig

    device_id = f"crash-{number}"
    state, out, log = folder / f"state-{number}.db", folder / "out", folder / f"serve-{number}.log"
    layers = [rng.randbytes(args.layer_bytes) for _ in range(args.layers)]
    encoded = encoded_from_layers(_Header(0x7E57, 64, 48, max(5, args.layers // 2)), layers)
    config = ProtocolConfig(ack_timeout=args.ack_timeout, window=16)
    started = time.monotonic()
    server = await _ServeProcess.start(broker, out, state, log)
    killed_mid_transfer = True
    kills = 0
    failure = None
    result = None
    sidecar: dict[str, Any] = {}
    try:
        async with open_device_link(f"{broker}?mtu={args.mtu}", device_id) as link:
            device = Device(link, config=config, pacing=Pacing(min_interval=args.interval))
            sending = asyncio.create_task(device.send_encoded(encoded, timeout=args.timeout))
            reached = 0
            last = args.layers - 1  # kill after at most layers - 2: a whole layer is still to come
            for _ in range(args.kills):
                if reached + 1 >= last:
                    break  # the transfer is too far along for another kill before its end
                target = rng.randrange(reached + 1, last)
                line = await server.wait_for(
                    lambda line, target=target: (_layers_line(device_id, line) or 0) >= target
                    or (line.startswith(device_id + "/") and "(receiving)" not in line),
                    args.timeout)
                if "(receiving)" not in line:
                    break  # the last layers came in one go: the session ended before this kill
                reached = _layers_line(device_id, line) or target
                await asyncio.sleep(rng.uniform(0.0, 0.02))
                killed_mid_transfer = killed_mid_transfer and not sending.done()
                await server.kill()
                kills += 1
                server = await _ServeProcess.start(broker, out, state, log)
            result = await sending
            sidecar = await _final_sidecar(out / device_id, 10.0)
    except (TimeoutError, LpimgError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        await server.stop()
    checks: dict[str, bool] = {}
    if result is not None:
        total = sum(len(layer) for layer in layers)
        checks = {
            "device complete": result.completed and result.reason == "complete",
            "no acknowledged fragment sent again": result.stats.acknowledged_resent == 0,
            "never told unknown session": result.stats.restarts == 0,
            "server wrote it complete": sidecar.get("final") is True and sidecar.get("reason") == "complete"
            and sidecar.get("layers") == args.layers and sidecar.get("bytes") == total,
            "killed mid-transfer": killed_mid_transfer and kills >= 1,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            failure = "failed: " + ", ".join(failed)
    return {
        "run": number,
        "passed": failure is None,
        "failure": failure,
        "seconds": round(time.monotonic() - started, 3),
        "kills": kills,
        "uplinks": None if result is None else result.stats.uplinks,
        "retransmissions": None if result is None else result.stats.retransmissions,
        "acknowledged_resent": None if result is None else result.stats.acknowledged_resent,
        "device_reason": None if result is None else result.reason,
    }


async def run_crash(args: argparse.Namespace) -> dict[str, Any]:
    """Every run's record and the totals (see the module docstring)."""
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="lpimg-crash-") as tmp:
        folder = Path(tmp)
        broker = None if args.broker else _Broker(folder)
        url = args.broker or (broker.url if broker else "")
        try:
            runs = []
            for number in range(args.runs):
                record = await _one_run(number, args, url, folder, rng)
                runs.append(record)
                if not args.json:
                    state = "pass" if record["passed"] else record["failure"]
                    print(f"run {number + 1}/{args.runs}: {state} ({record['seconds']} s, "
                          f"{record['retransmissions']} retransmissions, "
                          f"{record['acknowledged_resent']} of acknowledged fragments)", flush=True)
        finally:
            if broker is not None:
                broker.close()
    passes = sum(1 for r in runs if r["passed"])
    streak = best = 0
    for record in runs:
        streak = streak + 1 if record["passed"] else 0
        best = max(best, streak)
    return {
        "benchmark": "crash",
        "runs": args.runs,
        "passes": passes,
        "longest_pass_streak": best,
        "kills": sum(r["kills"] for r in runs),
        "acknowledged_resent_total": sum(r["acknowledged_resent"] or 0 for r in runs),
        "retransmissions_total": sum(r["retransmissions"] or 0 for r in runs),
        "median_run_s": statistics.median(r["seconds"] for r in runs) if runs else None,
        "settings": {"layers": args.layers, "layer_bytes": args.layer_bytes, "mtu": args.mtu,
                     "interval_s": args.interval, "ack_timeout_s": args.ack_timeout, "seed": args.seed},
        "failures": [r for r in runs if not r["passed"]],
        "per_run": runs if args.per_run else None,
    }


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crash", help="SIGKILL a real server mid-transfer and restart it on its state")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--kills", type=int, default=1,
                   help="SIGKILLs per run (default 1; fewer when the transfer ends first)")
    p.add_argument("--broker", default=None,
                   help="mqtt://host:port of a running broker (default: start mosquitto on a free port)")
    p.add_argument("--layers", type=int, default=8, help="random layers per picture")
    p.add_argument("--layer-bytes", type=int, default=200)
    p.add_argument("--mtu", type=int, default=24)
    p.add_argument("--interval", type=float, default=0.005, help="seconds between two device uplinks")
    p.add_argument("--ack-timeout", type=float, default=1.0, help="device seconds before polling")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds a run may take")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--per-run", action="store_true", help="include every run's record in the JSON")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    if args.runs < 1 or args.layers < 3 or args.kills < 1:
        raise LpimgError("--runs and --kills must be >= 1 and --layers >= 3")
    report = asyncio.run(run_crash(args))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['passes']}/{report['runs']} runs passed (longest streak "
              f"{report['longest_pass_streak']}); {report['acknowledged_resent_total']} acknowledged "
              f"fragments sent again; median run {report['median_run_s']} s")
    return 0 if report["passes"] == report["runs"] else 1
