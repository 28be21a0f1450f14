"""Shared fixtures: a real mosquitto broker and real socat pty pairs.

The link tests run against real components, never mocks: a broker that can be killed and
restarted on the same port, and pseudo-terminal pairs that behave like a serial cable. Both are
Debian packages (``apt-get install mosquitto socat``, done by .ci/run); tests that need a missing
one are skipped with a message saying which.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def _find_binary(name: str) -> str | None:
    # Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/usr/bin"):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """A mosquitto process on a fixed loopback port that tests may stop, kill and restart."""

    def __init__(self, binary: str, workdir: Path, extra_config: str = "") -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "persistence false\n"
            "log_dest stderr\n"
            # Run as root, mosquitto drops to user "mosquitto", which cannot read the test's
            # private temp dir (password file, certificates); stay the current user instead.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + (extra_config or "allow_anonymous true\n")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, scheme: str = "mqtt", **query: Any) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{scheme}://127.0.0.1:{self.port}" + (f"?{params}" if params else "")

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout} s")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without saying goodbye to its clients."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture(scope="session")
def mosquitto_binary() -> str:
    binary = _find_binary("mosquitto")
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); MQTT tests skipped")
    return binary


@pytest.fixture(scope="module")
def mosquitto(mosquitto_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker shared by a test module (tests use distinct device ids and apps)."""
    broker = Mosquitto(mosquitto_binary, tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker_factory(mosquitto_binary: str, tmp_path: Path) -> Iterator[Callable[[str], Mosquitto]]:
    """Start private brokers (for restarts, or a config with passwords or TLS)."""
    brokers: list[Mosquitto] = []

    def make(extra_config: str = "") -> Mosquitto:
        workdir = tmp_path / f"broker{len(brokers)}"
        workdir.mkdir()
        broker = Mosquitto(mosquitto_binary, workdir, extra_config)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


_PTY_LINE = re.compile(rb"PTY is (\S+)")


@dataclass
class PtyPair:
    """Two pty paths joined by a socat process (``proc``, for tests that pull the cable)."""

    a: str
    b: str
    proc: subprocess.Popen[bytes]

    def __iter__(self) -> Iterator[str]:
        return iter((self.a, self.b))


@pytest.fixture
def pty_pair() -> Iterator[PtyPair]:
    """Two pseudo-terminals joined by socat like a null-modem cable: what one writes, the other
    reads."""
    binary = _find_binary("socat")
    if binary is None:
        pytest.skip("socat is not installed (apt-get install socat); serial tests skipped")
    proc = subprocess.Popen(
        [binary, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 10
    try:
        while b"starting data transfer loop" not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise RuntimeError(f"socat did not start: {seen.decode(errors='replace')}")
            # Raw os.read, not readline: a buffered reader would hide lines from select().
            ready, _, _ = select.select([proc.stderr], [], [], remaining)
            if ready:
                seen += os.read(proc.stderr.fileno(), 4096)
        paths = [m.decode() for m in _PTY_LINE.findall(seen)]
        assert len(paths) == 2, seen
        yield PtyPair(paths[0], paths[1], proc)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stderr.close()


@pytest.fixture
def arun() -> Callable[..., Any]:
    """Run a coroutine to completion in a fresh event loop, with a hard deadline, so an async
    test body can live in a plain sync test (no pytest-asyncio needed)."""

    def run(coro: Awaitable[T], timeout: float = 20.0) -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(coro, timeout)

        return asyncio.run(bounded())

    return run
