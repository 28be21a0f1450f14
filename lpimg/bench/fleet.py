"""Shared machinery of the fleet benchmarks (``lpimg bench serve`` and ``lpimg bench flood``).

A real broker (``mosquitto`` on a free loopback port, started and stopped here), the server in a
process of its own (:mod:`lpimg.bench.serverproc`, so its CPU time and peak RSS are its own),
and a fleet of :class:`~lpimg.endpoint.Device` endpoints in this process, each with its own MQTT
connection and seeded loss (:class:`~lpimg.endpoint.lossy.LossyDeviceLink`). Every device sends
the same picture, encoded once here: the benchmarks measure the server and the protocol, not the
devices' encoders.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "astronaut.png"


class BenchSetupError(LpimgError):
    """A fleet benchmark could not set up its broker or server process."""


# -- the broker --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/usr/bin"):  # Debian puts it in /usr/sbin
        candidate = os.path.join(folder, "mosquitto")
        if os.access(candidate, os.X_OK):
            return candidate
    raise BenchSetupError("mosquitto is not installed (apt-get install mosquitto)")


class Broker:
    """A private mosquitto on a free loopback port, in a temporary directory; a context
    manager (started on entry, stopped on exit)."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_mosquitto()
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="lpimg-bench-broker-")
        self.log = Path(self._dir.name) / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, **query: Any) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"mqtt://127.0.0.1:{self.port}" + (f"?{params}" if params else "")

    def __enter__(self) -> Broker:
        config = Path(self._dir.name) / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\npersistence false\nlog_dest stderr\n"
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\nlog_type error\nlog_type warning\n"
            "allow_anonymous true\nsys_interval 1\n"
        )
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise BenchSetupError(f"mosquitto did not start: {self.log.read_text()[-1000:]}")
            time.sleep(0.02)

    async def sys_counters(self, timeout: float = 3.0) -> dict[str, int]:
        """The broker's own PUBLISH counters (``$SYS/broker/publish/messages/...``, published every
        second, so up to a second old): received, sent, and dropped (messages a subscriber that
        did not keep up could not be queued)."""
        import aiomqtt

        wanted = {"$SYS/broker/publish/messages/received": "received",
                  "$SYS/broker/publish/messages/sent": "sent",
                  "$SYS/broker/publish/messages/dropped": "dropped"}
        found: dict[str, int] = {}
        try:
            async with aiomqtt.Client("127.0.0.1", self.port) as client:
                for topic in wanted:
                    await client.subscribe(topic)
                async with asyncio.timeout(timeout):
                    async for message in client.messages:
                        name = wanted.get(message.topic.value)
                        if name and isinstance(message.payload, bytes | bytearray):
                            found[name] = int(message.payload)
                        if len(found) == len(wanted):
                            break
        except (TimeoutError, aiomqtt.MqttError, ValueError):
            pass
        return found

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._dir.cleanup()


# -- helper processes --------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment for a helper process that must import this very ``lpimg``."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def wait_line(proc: subprocess.Popen[str], needle: str, timeout: float, what: str,
              log: Any = None) -> str:
    """The first line of ``proc``'s output starting with ``needle`` (its own signal, no sleeps);
    :class:`BenchSetupError` if it exits or stays silent for ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:  # the caller's context manager ends the process
            raise BenchSetupError(f"{what} said no {needle!r} in {timeout} s")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            detail = log() if log is not None else ""
            raise BenchSetupError(f"{what} exited ({proc.wait()}): {detail}")
        if line.startswith(needle):
            return line


class ServerProcess:
    """:mod:`lpimg.bench.serverproc` in a child process: started on entry, ready once it has
    connected; :meth:`finish` stops it and returns its report (JSON)."""

    def __init__(self, url: str, expect: int, *, decode: bool = True, ack_timeout: float = 2.0,
                 legit_prefix: str = "", model: str = DEFAULT_MODEL, log_level: str = "WARNING",
                 allowlist: bool = False) -> None:
        self.args = [sys.executable, "-m", "lpimg.bench.serverproc", url, "--expect", str(expect),
                     "--ack-timeout", str(ack_timeout), "--model", model, "--legit-prefix", legit_prefix,
                     "--log-level", log_level]
        if not decode:
            self.args.append("--no-decode")
        if allowlist:
            self.args.append("--allowlist")
        self.proc: subprocess.Popen[str] | None = None
        # The server's log goes to a file: a pipe nobody reads would block a chatty server.
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, env=child_env())
        self._wait_for("READY", 120)
        return self

    def log_tail(self, chars: int = 2000) -> str:
        self._log.seek(0)
        return self._log.read()[-chars:]

    def _wait_for(self, needle: str, timeout: float) -> str:
        assert self.proc is not None
        return wait_line(self.proc, needle, timeout, "the server process", self.log_tail)

    def finish(self, timeout: float = 120.0) -> dict[str, Any]:
        """Ask the server to stop (SIGTERM) unless it already saw every expected session end,
        and return its report."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            line = self._wait_for("{", timeout)
        except BenchSetupError:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGUSR1)  # faulthandler: where is it stuck?
                time.sleep(1)
            raise BenchSetupError(f"the server did not report in {timeout} s: {self.log_tail(6000)}") \
                from None
        self.proc.wait(timeout)
        return json.loads(line)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


# -- the device fleet --------------------------------------------------------------------------


def small_picture(width: int = 64, height: int = 48) -> np.ndarray:
    """A ``width`` x ``height`` piece of the bundled photo (the face), every device's picture."""
    from lpimg.codec.image import load_image

    image = load_image(SAMPLE)
    x, y = 200, 40
    if width > image.shape[1] - x or height > image.shape[0] - y:
        raise LpimgError(f"a {width}x{height} picture does not fit the bundled sample")
    return image[y : y + height, x : x + width].copy()


def expected_digest(codec: Any, encoded: Any) -> str:
    """SHA-256 of the reconstruction the codec gives for every layer: what a server that got
    the whole picture must show."""
    dec = codec.decoder(encoded.header)
    for index, data in enumerate(encoded.layers):
        from lpimg.endpoint.coding import layer_spec

        dec.apply(layer_spec(index, None), data)
    return hashlib.sha256(np.ascontiguousarray(dec.reconstruct()).tobytes()).hexdigest()


@dataclass
class FleetResult:
    results: dict[str, Any] = field(default_factory=dict)
    """device id -> DeviceResult (or the exception text)"""
    started: float = 0.0
    ended: float = 0.0
    dropped_up: int = 0
    dropped_down: int = 0

    def reasons(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for result in self.results.values():
            counts[result if isinstance(result, str) else result.reason] += 1
        return dict(counts)

    def completed(self) -> int:
        return sum(1 for r in self.results.values() if not isinstance(r, str) and r.completed)


async def run_fleet(url: str, devices: list[str], encoded: Any, *, loss: float, ack_timeout: float,
                    ramp: float, interval: float, timeout: float, seed: int = 1) -> FleetResult:
    """Start ``devices`` (spread over ``ramp`` seconds), each sending ``encoded`` over its own
    MQTT connection with ``loss`` each way; wait until every session has ended."""
    from lpimg.endpoint import Device, Pacing
    from lpimg.endpoint.lossy import LossyDeviceLink
    from lpimg.link import open_device_link
    from lpimg.protocol import ProtocolConfig

    config = ProtocolConfig(ack_timeout=ack_timeout)
    fleet = FleetResult(started=time.monotonic())

    async def one(index: int, device: str) -> None:
        await asyncio.sleep(ramp * index / max(1, len(devices)))
        try:
            async with open_device_link(url, device) as inner:
                link = LossyDeviceLink(inner, uplink=loss, downlink=loss, seed=seed * 100_003 + index)
                sender = Device(link, config=config, pacing=Pacing(min_interval=interval,
                                                                   rx_window=interval))
                fleet.results[device] = await sender.send_encoded(encoded, timeout=timeout)
                fleet.dropped_up += link.dropped["up"]
                fleet.dropped_down += link.dropped["down"]
        except LpimgError as exc:
            fleet.results[device] = f"error: {exc}"

    await asyncio.gather(*(one(i, d) for i, d in enumerate(devices)))
    fleet.ended = time.monotonic()
    return fleet


def encode_for_fleet(model: str, width: int, height: int) -> tuple[Any, Any, str]:
    """Encode the fleet's picture once (no latents: the devices decline refine requests, and
    need no codec of their own). Returns the codec, the encoded image and the digest a complete
    reconstruction must have."""
    from dataclasses import replace

    from lpimg.codec.pipeline import LearnedCodec
    from lpimg.endpoint import encode_image

    codec = LearnedCodec.load(model)
    encoded, _ = encode_image(codec, small_picture(width, height))
    encoded = replace(encoded, latents=None)
    return codec, encoded, expected_digest(codec, encoded)


def usage_of(report: dict[str, Any]) -> dict[str, Any]:
    """The resource figures of a server report, for the benchmarks' JSON."""
    keys = ("cpu_s_serving", "cpu_s_total", "peak_rss_mb", "wall_s_serving")
    return {key: report.get(key) for key in keys}
