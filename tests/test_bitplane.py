"""Bitplane coding of latent integers: exact round trips, prefixes, regions, bad streams."""

from __future__ import annotations

import contextlib

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpimg.codec.bitplane import (
    BitplaneDecoder,
    BitplaneEncoder,
    LayerSpec,
    Region,
    coarse_passes,
    fit_codec_tables,
    num_passes,
    pass_kind,
    pass_name,
    passes_covering,
    phase_positions,
    replay_passes,
)
from lpimg.codec.model import known_interval
from lpimg.codec.tables import (
    PHASE_A_CONTEXTS,
    REF_CONTEXTS,
    SIG2_CONTEXTS,
    SIGN_CONTEXTS,
    CodecTables,
    first_phase,
    phase_a_context,
    phase_b_context,
    quantize_pmf,
    refinement_context,
    sign_context,
    sign_context_at,
)
from lpimg.errors import CodecError


def laplace_tables(channels: int, scales: np.ndarray, q_fit: np.ndarray) -> CodecTables:
    v = np.arange(-127, 128)
    pmf = np.exp(-np.abs(v)[None] / scales[:, None])
    pmf /= pmf.sum(1, keepdims=True)
    counts = quantize_pmf(pmf)
    return fit_codec_tables(counts, [q_fit])


def random_latents(seed: int, c: int = 8, h: int = 5, w: int = 7, scale_max: float = 20.0):
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.2, scale_max, c)
    q = np.clip(np.round(rng.laplace(0, scales[:, None, None], (c, h, w))), -127, 127)
    return q.astype(np.int32), scales


@pytest.fixture(scope="module")
def tables() -> CodecTables:
    q, scales = random_latents(0)
    return laplace_tables(8, scales, q)


def test_pass_order_splits_every_significance_pass_into_four_quarters():
    names = [pass_name(i, 2) for i in range(num_passes(2))]
    assert names == ["sig2q", "sig2o", "sig2h", "sig2v",
                     "sig1q", "sig1o", "sig1h", "sig1v", "ref1",
                     "sig0q", "sig0o", "sig0h", "sig0v", "ref0"]
    assert pass_kind(33, 6) == ("ref", 0) and num_passes(6) == 34
    for bad in (-1, 34):
        with pytest.raises(CodecError):
            pass_kind(bad, 6)
    with pytest.raises(CodecError):
        phase_positions("ref", 2, 2)


def test_position_classes_are_the_quarters_of_the_checkerboard():
    h, w = 5, 6
    yy, xx = np.indices((h, w))
    expected = {"sigq": (xx % 2 == 0) & (yy % 2 == 0), "sigo": (xx % 2 == 1) & (yy % 2 == 1),
                "sigh": (xx % 2 == 1) & (yy % 2 == 0), "sigv": (xx % 2 == 0) & (yy % 2 == 1)}
    for kind, where in expected.items():
        assert np.array_equal(phase_positions(kind, h, w), where), kind
    assert np.array_equal(phase_positions("siga", h, w), first_phase(h, w))
    assert np.array_equal(phase_positions("sigb", h, w), ~first_phase(h, w))


def test_coarse_passes_follow_the_quarters():
    # a plane's significance completes at x, y even one pass after it starts, then at x, y odd,
    # then at x odd / y even, then at x even / y odd; its refinement everywhere at once
    counters = np.full((2, 2), 0)
    steps = [(0, 0, 0, 0), (1, 0, 0, 0), (1, 1, 0, 0), (1, 1, 1, 0), (1, 1, 1, 1),
             (2, 1, 1, 1), (2, 2, 1, 1), (2, 2, 2, 1), (2, 2, 2, 2), (3, 3, 3, 3),
             (4, 3, 3, 3), (4, 4, 3, 3), (4, 4, 4, 3), (4, 4, 4, 4), (5, 5, 5, 5)]
    assert len(steps) == num_passes(2) + 1
    for n, (q, o, hq, vq) in enumerate(steps):
        counters[:] = n
        got = coarse_passes(counters, 2)
        assert (got[0, 0], got[1, 1], got[0, 1], got[1, 0]) == (q, o, hq, vq), n
    assert [passes_covering(c, 2) for c in range(6)] == [0, 4, 8, 9, 13, 14]


def test_first_layers_code_the_quarters_then_the_rest_of_phase_a(tables):
    q, _ = random_latents(4, h=6, w=6)
    enc = BitplaneEncoder(q, tables)
    dec = BitplaneDecoder(q.shape, enc.top, tables)
    first, second = enc.default_layers()[:2]
    top_bits = np.abs(q) >= 1 << enc.top
    yy, xx = np.indices((6, 6))
    quarter = (xx % 2 == 0) & (yy % 2 == 0)
    dec.apply(first, enc.encode(first))
    assert not dec.q[:, ~quarter].any()
    assert np.array_equal(dec.q[:, quarter] != 0, top_bits[:, quarter])
    dec.apply(second, enc.encode(second))
    half = first_phase(6, 6)
    assert not dec.q[:, ~half].any()
    assert np.array_equal(dec.q[:, half] != 0, top_bits[:, half])


@pytest.mark.parametrize("plane_offset", [0, 1])
def test_the_quarters_cost_what_whole_phases_would(tables, plane_offset):
    """The quarters only cut a phase's decisions into layers, with the whole phase's contexts:
    their information is that of one layer per phase (only the extra range coders' flushes are
    added), so a server gets four places to stop per plane without the stream costing more."""
    from lpimg.codec.bitplane import _Encoding, _PassCoder, _significance_phase

    q, _ = random_latents(9, h=16, w=16)
    enc = BitplaneEncoder(q, tables)
    first = 0 if plane_offset == 0 else 4 + 5 * (plane_offset - 1)
    for spec in enc.default_layers()[:first]:
        enc.encode(spec)
    known = enc.known.copy()
    plane = enc.top - plane_offset
    quarters = [len(enc.encode(spec)) for spec in enc.default_layers()[first:first + 4]]
    everywhere = np.ones((16, 16), bool)
    whole = []
    for kind in ("siga", "sigb"):
        words = constriction.stream.queue.RangeEncoder()
        _significance_phase(known, everywhere, plane, kind, _PassCoder(tables, enc.top),
                            _Encoding(enc.q, enc.mag, words))
        whole.append(len(words.get_compressed()) * 4)
    assert np.array_equal(known, enc.known)  # the same decisions, the same state
    assert sum(whole) - 16 <= sum(quarters) <= sum(whole) + 16


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(0, 34))
def test_every_prefix_decodes_to_an_interval_holding_the_truth(tables, seed, cut):
    q, _ = random_latents(seed)
    enc = BitplaneEncoder(q, tables)
    dec = BitplaneDecoder(q.shape, enc.top, tables)
    specs = enc.default_layers()
    for spec in specs[:cut]:
        dec.apply(spec, enc.encode(spec))
    import torch

    lo, hi = known_interval(torch.from_numpy(dec.q), torch.from_numpy(dec.coarse_passes)[None], dec.top)
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
    sig2, sign = np.full((2, 7, SIG2_CONTEXTS), 9), np.full((2, SIGN_CONTEXTS), 9)
    ref = np.full((2, 7, REF_CONTEXTS), 9)
    CodecTables(np.ones((2, 255)), np.ones((2, 7, 16)), sig2, sign, ref)
    with pytest.raises(CodecError):
        CodecTables(np.ones((2, 10)), np.ones((2, 7, 16)), sig2, sign, ref)
    with pytest.raises(CodecError):
        CodecTables(np.ones((2, 255)), np.zeros((2, 7, 16)), sig2, sign, ref)
    with pytest.raises(CodecError, match="lpimg release"):
        CodecTables(np.ones((2, 255)), np.ones((2, 7, 16)), np.full((2, 7, 16), 9), sign, ref)
    with pytest.raises(CodecError):
        CodecTables(np.ones((2, 255)), np.ones((2, 7, 16)), sig2, np.zeros((2, SIGN_CONTEXTS)), ref)
    with pytest.raises(CodecError, match="lpimg release"):
        CodecTables(np.ones((2, 255)), np.ones((2, 7, 16)), sig2, sign, np.full((2, 7, 16), 9))


def test_tables_of_the_one_phase_codec_are_refused(tables):
    old = {"pmf": tables.pmf.astype(np.int32), "sig": tables.sig.astype(np.int32)}
    with pytest.raises(CodecError, match="lpimg release"):
        CodecTables.from_dict(old)
    again = CodecTables.from_dict(tables.to_dict())
    for name in ("pmf", "sig", "sig2", "sign", "ref"):
        assert np.array_equal(getattr(again, name), getattr(tables, name))


def test_phase_contexts():
    assert first_phase(2, 3).tolist() == [[True, False, True], [False, True, False]]
    known = np.zeros((2, 3, 3), bool)
    known[0, 0, 0] = known[0, 0, 1] = known[1, 1, 1] = True
    a = phase_a_context(known)
    # channel 0 at (1, 1): 2 significant neighbours; 1 channel significant at (1, 1)
    assert a[0, 1, 1] == 2 * 7 + 1
    assert a[1, 0, 0] == 1 * 7 + 1  # neighbour (1, 1) in channel 1; channel 0 significant here
    new_a = np.zeros_like(known)
    new_a[0, 0, 2] = new_a[0, 2, 0] = True  # not direct neighbours of (1, 1)...
    new_a[0, 1, 0] = True  # ...this one is
    b = phase_b_context(known, new_a)
    assert b[0, 1, 1] == PHASE_A_CONTEXTS + a[0, 1, 1] * 5 + 1
    assert b[0, 1, 1] < SIG2_CONTEXTS
    q = np.zeros((1, 3, 3), np.int32)
    q[0, 1, 0], q[0, 1, 2], q[0, 0, 1] = -3, -1, 5
    assert sign_context(q)[0, 1, 1] == 0 * 3 + 2  # left + right negative, up + down positive
    q[0, 1, 1] = 9
    # plane 1: own level 9 >> 2 = 2 (bin 1); neighbour levels 0 + 0 + 5 >> 2 = 1, 1 // 2 = 0
    assert refinement_context(q, 1)[0, 1, 1] == 1 * 5 + 0
    q[0, 0, 0] = q[0, 2, 2] = 20  # + 5 + 5: 11 // 2 = 5, bin 3
    assert refinement_context(q, 1)[0, 1, 1] == 1 * 5 + 3


def _sync(enc: BitplaneEncoder, dec: BitplaneDecoder, spec: LayerSpec) -> int:
    data = enc.encode(spec)
    dec.apply(spec, data)
    assert np.array_equal(dec.q, enc.known)  # the decoder's state is what the contexts assumed
    assert np.array_equal(dec.passes, enc.passes)
    return len(data)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.lists(
    st.tuples(st.integers(0, 15), st.integers(0, 11), st.integers(1, 16), st.integers(1, 12),
              st.integers(1, 4)), max_size=6),
    prefix=st.integers(0, 6))
def test_two_phase_passes_decode_under_regions_and_prefixes(tables, seed, steps, prefix):
    """Regions of any parity and size, mixed with whole-grid prefixes, then the rest."""
    q, _ = random_latents(seed, h=12, w=16)
    enc = BitplaneEncoder(q, tables)
    dec = BitplaneDecoder(q.shape, enc.top, tables)
    for spec in enc.default_layers()[:prefix]:
        _sync(enc, dec, spec)
    for x, y, w, h, more in steps:
        region = Region(x, y, w, h)
        target = int(enc.passes[y:y + h, x:x + w].min()) + more
        for spec in enc.refine_specs(region, target):
            _sync(enc, dec, spec)
    for spec in enc.default_layers():
        if (enc.passes <= spec.index).any():
            _sync(enc, dec, spec)
    assert np.array_equal(dec.q, q)


def test_encoder_rebuilt_from_its_pass_counters_stays_in_step(tables):
    """After a reboot a device only has its latents and the counters replayed from the layers
    it sent: the contexts must be the same as if it had never stopped."""
    q, _ = random_latents(7, h=12, w=16)
    enc = BitplaneEncoder(q, tables)
    dec = BitplaneDecoder(q.shape, enc.top, tables)
    sent = enc.default_layers()[:4] + enc.refine_specs(Region(3, 2, 5, 7), 9)
    for spec in sent:
        _sync(enc, dec, spec)
    rebuilt = BitplaneEncoder(q, tables)
    rebuilt.passes = replay_passes(sent, q.shape[1:], rebuilt.total_passes)
    for spec in rebuilt.refine_specs(Region(0, 0, 16, 12), rebuilt.total_passes):
        _sync(rebuilt, dec, spec)
    assert np.array_equal(dec.q, q)


def test_contexts_pay_on_structured_latents():
    """Clustered significance with one sign per cluster: what phase B and the sign contexts see.

    Against the same tables with phase B blind to phase A (its entries replaced by the phase A
    entry of the same context) and signs at even odds, the stream must be clearly shorter.
    """
    def blobs(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        q = np.zeros((4, 24, 32), np.int32)
        for _ in range(60):
            c, y, x = rng.integers(4), rng.integers(23), rng.integers(31)
            q[c, y:y + 2, x:x + 2] = rng.choice([-1, 1]) * rng.integers(4, 16)
        return q

    scales = np.full(4, 2.0)
    v = np.arange(-127, 128)
    counts = quantize_pmf(np.exp(-np.abs(v)[None] / scales[:, None]) / 20)
    fitted = fit_codec_tables(counts, [blobs(s) for s in range(1, 6)])
    blind_sig2 = fitted.sig2.copy()
    base = np.arange(PHASE_A_CONTEXTS)
    for m in range(5):
        blind_sig2[:, :, PHASE_A_CONTEXTS + base * 5 + m] = fitted.sig2[:, :, base]
    blind = CodecTables(fitted.pmf, fitted.sig, blind_sig2, np.full_like(fitted.sign, 1 << 15), fitted.ref)

    def size(t: CodecTables) -> int:
        q = blobs(0)
        enc = BitplaneEncoder(q, t)
        dec = BitplaneDecoder(q.shape, enc.top, t)
        n = sum(_sync(enc, dec, spec) for spec in enc.default_layers())
        assert np.array_equal(dec.q, q)
        return n

    assert size(fitted) < 0.85 * size(blind)


def test_sign_contexts_at_a_mask_are_those_of_the_whole_grid():
    rng = np.random.default_rng(5)
    known = rng.integers(-3, 4, size=(4, 7, 9)) * (rng.random((4, 7, 9)) < 0.5)
    where = rng.random((4, 7, 9)) < 0.3
    assert np.array_equal(sign_context_at(known, where), sign_context(known)[where])


def test_the_encoder_reuses_nothing_once_its_counters_are_rebuilt(tables):
    """The cached state and contexts are reused only while they are exactly what the counters
    and the significance say: an encoder whose counters were rebuilt codes what a fresh one
    with those counters would."""
    q, _ = random_latents(11, h=8, w=8)
    enc = BitplaneEncoder(q, tables)
    specs = enc.default_layers()
    for spec in specs[:6]:
        enc.encode(spec)
    enc.passes = replay_passes(specs[:3], (8, 8), enc.total_passes)  # back to an earlier state
    fresh = BitplaneEncoder(q, tables)
    for spec in specs[:3]:
        fresh.encode(spec)
    for spec in specs[3:9]:
        assert enc.encode(spec) == fresh.encode(spec)
