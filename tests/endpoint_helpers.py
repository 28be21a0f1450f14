"""Shared helpers of the endpoint tests: one codec per test process, small pictures, and the
reference decode every transfer is compared with.

Nothing here is derived from the shipped weights (no model ids, no byte counts): the weights are
interim and will be replaced, so tests compare the transfer with the codec run directly.
"""

from __future__ import annotations

import select
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from lpimg.codec.image import load_image
from lpimg.codec.pipeline import LearnedCodec
from lpimg.endpoint import ImageUpdate
from lpimg.endpoint.coding import layer_spec

SAMPLE = Path(__file__).resolve().parent.parent / "lpimg" / "data" / "astronaut.png"


@lru_cache(maxsize=1)
def codec() -> LearnedCodec:
    """The shipped codec, loaded once per test process."""
    return LearnedCodec.load()


@lru_cache(maxsize=8)
def _sample() -> np.ndarray:
    return load_image(SAMPLE)


def crop(x: int = 200, y: int = 40, width: int = 64, height: int = 48) -> np.ndarray:
    """A small piece of the bundled photo (64x48 by default: 4x3 latent positions)."""
    return _sample()[y : y + height, x : x + width].copy()


def reference_reconstruction(image: np.ndarray, update: ImageUpdate) -> np.ndarray:
    """What the codec itself gives for exactly the layers ``update`` says were received
    (their passes and regions, in order), encoded and decoded here, independently of the
    transfer. Also checks every layer's size against the transfer's."""
    c = codec()
    encoder = c.encoder(image)
    decoder = c.decoder(encoder.header)
    for layer in update.received:
        spec = layer_spec(layer.pass_index, layer.region)
        data = encoder.encode(spec)
        assert len(data) == layer.size, (layer, len(data))
        decoder.apply(spec, data)
    return decoder.reconstruct()


def assert_exact(image: np.ndarray, update: ImageUpdate) -> None:
    """The server's reconstruction is bit for bit the codec's for the same layers."""
    expected = reference_reconstruction(image, update)
    got = update.reconstruction
    assert got.shape == image.shape and got.dtype == np.uint8
    assert np.array_equal(got, expected)


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 30.0) -> list[str]:
    """Read the process's output until a line contains ``needle`` (the process's own signal
    that it is ready), without sleeping."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            raise AssertionError(f"no {needle!r} from {proc.args}: {lines}")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"{proc.args} exited ({proc.wait()}) before {needle!r}: {lines}")
        lines.append(line)
        if needle in line:
            return lines


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish: {out}") from None
    assert proc.returncode == 0, out
    return out
