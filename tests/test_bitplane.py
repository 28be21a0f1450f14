"""Bitplane coding of latent integers: exact round trips, prefixes, regions, bad streams."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpimg.codec.bitplane import (
    BitplaneDecoder,
    BitplaneEncoder,
    LayerSpec,
    Region,
    pass_kind,
)
from lpimg.codec.model import known_interval
from lpimg.codec.tables import CodecTables, SignificanceCounter, quantize_pmf
from lpimg.errors import CodecError


def laplace_tables(channels: int, scales: np.ndarray, q_fit: np.ndarray) -> CodecTables:
    v = np.arange(-127, 128)
    pmf = np.exp(-np.abs(v)[None] / scales[:, None])
    pmf /= pmf.sum(1, keepdims=True)
    counts = quantize_pmf(pmf)
    counter = SignificanceCounter(channels)
    counter.add(q_fit)
    return CodecTables(counts, counter.table(counts))


def random_latents(seed: int, c: int = 8, h: int = 5, w: int = 7, scale_max: float = 20.0):
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.2, scale_max, c)
    q = np.clip(np.round(rng.laplace(0, scales[:, None, None], (c, h, w))), -127, 127)
    return q.astype(np.int32), scales


@pytest.fixture(scope="module")
def tables() -> CodecTables:
    q, scales = random_latents(0)
    return laplace_tables(8, scales, q)


def test_pass_order():
    assert pass_kind(0, 6) == ("sig", 6)
    assert pass_kind(1, 6) == ("sig", 5)
    assert pass_kind(2, 6) == ("ref", 5)
    assert pass_kind(12, 6) == ("ref", 0)
    with pytest.raises(CodecError):
        pass_kind(13, 6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(0, 13))
def test_every_prefix_decodes_to_an_interval_holding_the_truth(tables, seed, cut):
    q, _ = random_latents(seed)
    enc = BitplaneEncoder(q, tables)
    dec = BitplaneDecoder(q.shape, enc.top, tables)
    specs = enc.default_layers()
    for spec in specs[:cut]:
        dec.apply(spec, enc.encode(spec))
    import torch

    lo, hi = known_interval(torch.from_numpy(dec.q), torch.from_numpy(dec.passes)[None], dec.top)
    truth = torch.from_numpy(q)
    assert bool(((lo <= truth) & (truth <= hi)).all())
    if cut >= len(specs):
        assert np.array_equal(dec.q, q)


def test_full_stream_is_exact_and_near_the_entropy(tables):
    q, scales = random_latents(1, c=8, h=20, w=30)
    enc = BitplaneEncoder(q, tables)
    dec = BitplaneDecoder(q.shape, enc.top, tables)
    total = 0
    for spec in enc.default_layers():
        data = enc.encode(spec)
        total += len(data)
        dec.apply(spec, data)
    assert np.array_equal(dec.q, q)
    pmf = tables.pmf_float()
    ideal = -np.log2(pmf[np.arange(8)[:, None, None], q + 127]).sum() / 8
    assert total < 1.1 * ideal + 4 * len(enc.default_layers())


def test_region_refinement_then_rest_is_exact(tables):
    q, _ = random_latents(2, h=12, w=16)
    enc = BitplaneEncoder(q, tables)
    dec = BitplaneDecoder(q.shape, enc.top, tables)
    first = enc.default_layers()[:3]
    for spec in first:
        dec.apply(spec, enc.encode(spec))
    region = Region(4, 2, 6, 5)
    refine = enc.refine_specs(region, enc.total_passes)
    assert refine and all(s.region == region for s in refine)
    for spec in refine:
        dec.apply(spec, enc.encode(spec))
    inside = q[:, 2:7, 4:10]
    assert np.array_equal(dec.q[:, 2:7, 4:10], inside)
    assert not np.array_equal(dec.q, q) or np.abs(q).max() < 2
    for spec in enc.default_layers()[3:]:
        dec.apply(spec, enc.encode(spec))
    assert np.array_equal(dec.q, q)


def test_layers_out_of_order_are_refused(tables):
    q, _ = random_latents(3)
    enc = BitplaneEncoder(q, tables)
    with pytest.raises(CodecError):
        enc.encode(LayerSpec(2))
    dec = BitplaneDecoder(q.shape, enc.top, tables)
    with pytest.raises(CodecError):
        dec.apply(LayerSpec(1), b"")


def test_region_outside_grid_is_refused(tables):
    q, _ = random_latents(4)
    enc = BitplaneEncoder(q, tables)
    with pytest.raises(CodecError):
        enc.refine_specs(Region(50, 50, 3, 3), 5)


@settings(max_examples=30, deadline=None)
@given(garbage=st.binary(max_size=64))
def test_garbage_layer_never_crashes(tables, garbage):
    q, _ = random_latents(5)
    enc = BitplaneEncoder(q, tables)
    dec = BitplaneDecoder(q.shape, enc.top, tables)
    with contextlib.suppress(CodecError):
        dec.apply(LayerSpec(0), garbage)
    assert np.abs(dec.q).max() <= 127


def test_tables_reject_bad_shapes():
    with pytest.raises(CodecError):
        CodecTables(np.ones((2, 10)), np.ones((2, 7, 16)))
    with pytest.raises(CodecError):
        CodecTables(np.ones((2, 255)), np.zeros((2, 7, 16)))
