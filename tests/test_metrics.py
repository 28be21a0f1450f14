"""Benchmark metrics: BD-rate and quality measures behave as their definitions say."""

from __future__ import annotations

import numpy as np
import pytest

from lpimg.bench.metrics import bd_rate, msssim, msssim_db, psnr


def test_bd_rate_of_identical_curves_is_zero():
    r, q = [0.1, 0.2, 0.4, 0.8], [25.0, 28.0, 31.0, 34.0]
    assert bd_rate(r, q, r, q) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_of_half_the_rate_is_minus_fifty_percent():
    r, q = [0.1, 0.2, 0.4, 0.8], [25.0, 28.0, 31.0, 34.0]
    half = [x / 2 for x in r]
    assert bd_rate(half, q, r, q) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(r, q, half, q) == pytest.approx(100.0, abs=1e-6)


def test_bd_rate_without_overlap_is_none():
    assert bd_rate([0.1, 0.2], [20.0, 21.0], [0.1, 0.2], [30.0, 31.0]) is None
    assert bd_rate([0.1], [20.0], [0.1, 0.2], [19.0, 21.0]) is None


@pytest.mark.parametrize("side", [20, 48, 80, 120, 200])
def test_quality_measures_on_every_size(side):
    rng = np.random.default_rng(side)
    img = rng.integers(0, 256, (side, side + 7, 3), dtype=np.uint8)
    noisy = np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    assert msssim(img, img) == pytest.approx(1.0, abs=1e-9)
    assert psnr(img, img) == 99.0
    assert 0 < msssim(img, noisy) < 1
    assert 20 < psnr(img, noisy) < 30
    assert msssim_db(0.9) == pytest.approx(10.0)
