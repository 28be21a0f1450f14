"""Training is resumable with an identical schedule, and refuses the evaluation set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lpimg.codec.model import ModelConfig
from lpimg.codec.release import fit_tables, load_trained_model, write_release
from lpimg.codec.train import TrainConfig, train
from lpimg.errors import CodecError

TINY = ModelConfig(enc_channels=(8, 8, 8, 8, 8), latent_channels=8, dec_channels=12).to_dict()


@pytest.fixture()
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "train"
    d.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (150, 170, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def config(data_dir, out, iterations=4) -> TrainConfig:
    return TrainConfig(data=[str(data_dir)], out=str(out), iterations=iterations, batch=2,
                       patch=128, checkpoint_every=2, threads=1, model=TINY)


def test_resume_reproduces_the_uninterrupted_run(data_dir, tmp_path):
    straight = load_trained_model(train(config(data_dir, tmp_path / "a"), progress=False))
    # the same run, stopped after 2 iterations and resumed
    stopped = train(config(data_dir, tmp_path / "b"), progress=False, stop_at=1)
    assert stopped.name == "checkpoint.pt"
    resumed = load_trained_model(train(config(data_dir, tmp_path / "b"), resume=True, progress=False))
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_colour_options_resume_identically_and_change_the_run(data_dir, tmp_path):
    """--clamp-latents, --noise-mix and --chroma-weight are part of the schedule: a resumed run
    reproduces them, and they do change what is learned."""
    import dataclasses

    def cfg(out):
        return dataclasses.replace(config(data_dir, out), clamp_latents=True, noise_mix=0.5,
                                   chroma_weight=8.0)

    straight = load_trained_model(train(cfg(tmp_path / "a"), progress=False))
    train(cfg(tmp_path / "b"), progress=False, stop_at=1)
    resumed = load_trained_model(train(config(data_dir, tmp_path / "b"), resume=True, progress=False))
    plain = load_trained_model(train(config(data_dir, tmp_path / "c"), progress=False))
    same = [torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                             resumed.state_dict().values(), strict=True)]
    assert all(same)  # the saved schedule wins over today's command line
    assert not all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                                    plain.state_dict().values(), strict=True))


def test_step_floor_reweights_the_fine_prefixes_and_is_part_of_the_run(data_dir, tmp_path):
    """--step-floor lowers the weight of prefixes finer than its step: the run learns something
    else, and a resumed run keeps the floor it started with."""
    import dataclasses

    floored = dataclasses.replace(config(data_dir, tmp_path / "a"), step_floor=64.0)
    a = load_trained_model(train(floored, progress=False))
    plain = load_trained_model(train(config(data_dir, tmp_path / "b"), progress=False))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                    plain.state_dict().values(), strict=True))
    train(dataclasses.replace(floored, out=str(tmp_path / "c")), progress=False, stop_at=1)
    resumed = load_trained_model(train(config(data_dir, tmp_path / "c"), resume=True, progress=False))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                resumed.state_dict().values(), strict=True))


def test_a_step_floor_on_a_jointly_trained_encoder_is_warned_about(data_dir, tmp_path):
    import dataclasses

    from lpimg.codec.train import objective_warnings

    cfg = config(data_dir, tmp_path / "a")
    assert objective_warnings(cfg) == []
    assert objective_warnings(dataclasses.replace(cfg, step_floor=4.0, freeze_encoder=True)) == []
    (line,) = objective_warnings(dataclasses.replace(cfg, step_floor=4.0))
    assert "--freeze-encoder" in line


def test_packed_checkpoint_resumes_identically(data_dir, tmp_path, monkeypatch):
    import lpimg.codec.train as train_module

    straight = load_trained_model(train(config(data_dir, tmp_path / "a"), progress=False))
    train(config(data_dir, tmp_path / "b"), progress=False, stop_at=2)
    monkeypatch.setattr(train_module, "PART_BYTES", 50_000)  # force several parts
    parts = train_module.pack_checkpoint(tmp_path / "b", tmp_path / "packed")
    assert len(parts) > 1 and all(p.stat().st_size <= 50_000 for p in parts)
    resumed = load_trained_model(train(config(data_dir, tmp_path / "packed"), resume=True,
                                       progress=False))
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_release_from_checkpoint(data_dir, tmp_path):
    train(config(data_dir, tmp_path / "r", iterations=2), progress=False)
    model = load_trained_model(tmp_path / "r" / "checkpoint.pt")
    tables = fit_tables(model, [str(data_dir)], progress=False)
    out = write_release(model, tables, tmp_path / "m.pt", {})
    from lpimg.codec.pipeline import LearnedCodec

    codec = LearnedCodec.load(out)
    img = np.asarray(Image.open(data_dir / "0.png"))
    enc = codec.encoder(img)
    dec = codec.decoder(enc.header)
    for spec, data in enc.encode_all():
        dec.apply(spec, data)
    assert np.array_equal(dec.bitplanes.q, enc.latents)


def test_release_averages_runs_of_one_architecture(data_dir, tmp_path):
    """`lpimg release A B`: every float weight is the mean of the runs'; runs of another
    architecture are refused, not silently mixed."""
    import dataclasses

    from lpimg.codec.release import average_trained_models

    train(config(data_dir, tmp_path / "a", iterations=2), progress=False)
    train(dataclasses.replace(config(data_dir, tmp_path / "b", iterations=2), seed=1), progress=False)
    a, b = (load_trained_model(tmp_path / r / "checkpoint.pt").state_dict() for r in "ab")
    mean = average_trained_models([tmp_path / "a", tmp_path / "b"]).state_dict()
    differing = [k for k, v in a.items() if v.is_floating_point() and not torch.equal(v, b[k])]
    assert differing
    for k in differing:
        assert torch.allclose(mean[k], (a[k] + b[k]) / 2, atol=1e-6), k
    same = average_trained_models([tmp_path / "a", tmp_path / "a"]).state_dict()
    assert all(torch.equal(same[k], v) for k, v in a.items())
    wider = dataclasses.replace(config(data_dir, tmp_path / "w", iterations=2),
                                model=dict(TINY, dec_channels=16))
    train(wider, progress=False)
    with pytest.raises(CodecError, match="architecture"):
        average_trained_models([tmp_path / "a", tmp_path / "w"])
    with pytest.raises(CodecError, match="nothing"):
        average_trained_models([])


def test_a_synthesis_alone_trains_against_a_frozen_encoder_and_keeps_the_model_id(data_dir, tmp_path):
    """--freeze-encoder: the analysis and density keep --init-from's weights (the synthesis may
    be wider and starts afresh then), so the released weights have the source's model id: a
    new server-side decoder for streams devices already send."""
    import dataclasses

    from lpimg.codec.pipeline import model_id_of

    train(config(data_dir, tmp_path / "src"), progress=False)
    wider = dict(TINY, dec_channels=16)
    cfg = dataclasses.replace(config(data_dir, tmp_path / "syn", iterations=3), model=wider,
                              init_from=str(tmp_path / "src"), freeze_encoder=True)
    out = train(cfg, progress=False)
    source = load_trained_model(tmp_path / "src" / "checkpoint.pt")
    grown = load_trained_model(out)
    src_state, new_state = source.state_dict(), grown.state_dict()
    for k, v in src_state.items():
        if k.startswith(("analysis.", "density.")):
            assert torch.equal(new_state[k], v), k
    assert grown.cfg.dec_channels == 16
    tables = fit_tables(source, [str(data_dir)], progress=False)
    assert model_id_of(new_state, fit_tables(grown, [str(data_dir)], progress=False)) == \
        model_id_of(src_state, tables)
    with pytest.raises(CodecError, match="init-from"):
        train(dataclasses.replace(cfg, out=str(tmp_path / "x"), init_from=None), progress=False)


def test_release_reuses_the_tables_of_a_model_with_the_same_analysis(data_dir, tmp_path):
    """`lpimg release --tables-from`: a synthesis-only run takes its source's tables as they are,
    so its model id cannot move by a table entry fitted a rounding apart on another machine; a
    run whose analysis moved is refused."""
    import dataclasses

    from lpimg.codec.pipeline import LearnedCodec
    from lpimg.codec.release import tables_of_same_analysis

    train(config(data_dir, tmp_path / "src"), progress=False)
    source = load_trained_model(tmp_path / "src" / "checkpoint.pt")
    shipped = LearnedCodec.load(write_release(source, fit_tables(source, [str(data_dir)], progress=False),
                                              tmp_path / "src.pt", {}))
    cfg = dataclasses.replace(config(data_dir, tmp_path / "syn", iterations=3),
                              init_from=str(tmp_path / "src"), freeze_encoder=True)
    synth = load_trained_model(train(cfg, progress=False))
    tables = tables_of_same_analysis(synth, shipped)
    released = LearnedCodec.load(write_release(synth, tables, tmp_path / "syn.pt", {}))
    assert released.model_id == shipped.model_id
    img = np.asarray(Image.open(data_dir / "0.png"))
    enc = shipped.encoder(img)  # a stream of the source's devices decodes with the new synthesis
    dec = released.decoder(enc.header)
    for spec, data in enc.encode_all():
        dec.apply(spec, data)
    assert np.array_equal(dec.bitplanes.q, enc.latents)
    joint = dataclasses.replace(cfg, out=str(tmp_path / "joint"), freeze_encoder=False)
    moved = load_trained_model(train(joint, progress=False))
    with pytest.raises(CodecError, match="fit them instead"):
        tables_of_same_analysis(moved, shipped)


def test_a_grown_synthesis_starts_as_its_source_and_then_trains(data_dir, tmp_path):
    """--dec-blocks: the added residual blocks start as the identity, so the grown synthesis
    renders exactly as --init-from's did; training then moves them (and only the synthesis,
    with --freeze-encoder)."""
    import dataclasses

    train(config(data_dir, tmp_path / "src"), progress=False)
    deeper = dict(TINY, dec_blocks=(1, 2, 1))
    cfg = dataclasses.replace(config(data_dir, tmp_path / "deep", iterations=3), model=deeper,
                              init_from=str(tmp_path / "src"), freeze_encoder=True)
    start = torch.load(train(cfg, progress=False, stop_at=0), weights_only=False)["model"]
    source = load_trained_model(tmp_path / "src" / "checkpoint.pt")
    grown = load_trained_model(tmp_path / "deep" / "checkpoint.pt")
    assert grown.cfg.dec_blocks == (1, 2, 1)
    assert sum(k.startswith("synthesis.extra.") for k in start) == 4 * 4
    y = torch.randn(1, 8, 3, 4) * 4
    spread = torch.rand(1, 8, 3, 4)
    with torch.no_grad():
        assert torch.equal(grown.synthesis(y, spread), source.synthesis(y, spread))
    with pytest.raises(CodecError, match="dec_blocks"):
        ModelConfig(dec_blocks=(1, -1, 0))
    trained = load_trained_model(train(cfg, resume=True, progress=False))
    moved = [k for k, v in trained.state_dict().items() if k.startswith("synthesis.extra.")
             and not torch.equal(v.float(), start[k].float())]
    assert moved  # the new blocks learn
    for k, v in source.state_dict().items():
        if k.startswith(("analysis.", "density.")):
            assert torch.equal(trained.state_dict()[k], v), k


def test_resume_without_checkpoint_is_an_error(data_dir, tmp_path):
    with pytest.raises(CodecError, match="resume"):
        train(config(data_dir, tmp_path / "none"), resume=True, progress=False)


def test_kodak_is_refused(tmp_path):
    with pytest.raises(CodecError, match="Kodak"):
        train(TrainConfig(data=[str(tmp_path / "kodak")], out=str(tmp_path / "k")), progress=False)


def test_init_from_starts_at_another_runs_weights(data_dir, tmp_path):
    """--init-from carries the weights (not the optimizer, not the iteration) of another run, from a
    checkpoint, a packed run directory or exported weights alike; a missing source is an error."""
    import dataclasses

    first = train(config(data_dir, tmp_path / "a"), progress=False)  # final.pt (fp16 synthesis)
    warm = dataclasses.replace(config(data_dir, tmp_path / "w", iterations=2), init_from=str(tmp_path / "a"))
    stopped = train(warm, progress=False, stop_at=0)  # checkpoint before any step: the initial weights
    start = torch.load(stopped, weights_only=False)
    assert start["iteration"] == 0
    source = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    for k, v in source.items():
        assert torch.equal(start["model"][k], v), k
    # exported weights work too, and differ from a cold start
    cold = torch.load(train(config(data_dir, tmp_path / "c", iterations=2), progress=False, stop_at=0),
                      weights_only=False)["model"]
    from_final = dataclasses.replace(config(data_dir, tmp_path / "f", iterations=2), init_from=str(first))
    warm_f = torch.load(train(from_final, progress=False, stop_at=0), weights_only=False)["model"]
    assert not torch.equal(warm_f["analysis.layers.0.conv.weight"], cold["analysis.layers.0.conv.weight"])
    assert torch.equal(warm_f["analysis.layers.0.conv.weight"], source["analysis.layers.0.conv.weight"])
    with pytest.raises(CodecError, match="init-from"):
        train(dataclasses.replace(config(data_dir, tmp_path / "x"), init_from=str(tmp_path / "nope")),
              progress=False)


def test_phase_prefixes_give_the_checkerboard_half_one_more_pass():
    """--phase-prefixes trains on the states an intra stream's phase A layers leave: on the
    (x + y)-even positions the interval narrows by one significance pass, elsewhere nothing
    changes, and the sample's distortion weight sits half a plane finer."""
    from lpimg.codec.train import progressive_latents

    y = torch.randn(64, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * 20
    pmf = torch.ones(4, 255) / 255
    whole = progressive_latents(y, pmf, np.random.default_rng(0), 11)
    phased = progressive_latents(y, pmf, np.random.default_rng(0), 11, 0.5)
    narrower = (phased.hi - phased.lo) < (whole.hi - whole.lo)
    even = torch.from_numpy(np.indices((6, 6)).sum(0) % 2 == 0)
    assert narrower.any() and not (narrower & ~even).any()
    assert ((phased.hi - phased.lo) <= (whole.hi - whole.lo)).all()
    half = (phased.step != whole.step).flatten()
    assert half.any() and torch.allclose(phased.step.flatten()[half], whole.step.flatten()[half] / 2 ** 0.5)
    assert torch.equal(narrower.flatten(1).any(1), half)  # every half sample, and only they, narrowed


def test_quarter_prefixes_train_the_quarter_states():
    """--quarter-prefixes trains on the states the four-quarter layout adds: one significance pass
    more at the x, y even positions (a quarter plane finer) or everywhere but x even, y odd (three
    quarters finer), nothing else; without it the samples are those of --phase-prefixes alone."""
    from lpimg.codec.train import progressive_latents

    y = torch.randn(96, 4, 6, 6, generator=torch.Generator().manual_seed(1)) * 20
    pmf = torch.ones(4, 255) / 255
    whole = progressive_latents(y, pmf, np.random.default_rng(2), 11)
    same = progressive_latents(y, pmf, np.random.default_rng(2), 11, 0.0, 0.0, 0.0)
    assert torch.equal(same.lo, whole.lo) and torch.equal(same.step, whole.step)
    quartered = progressive_latents(y, pmf, np.random.default_rng(2), 11, 0.0, 0.0, 0.6)
    narrower = (quartered.hi - quartered.lo) < (whole.hi - whole.lo)
    assert ((quartered.hi - quartered.lo) <= (whole.hi - whole.lo)).all()
    yy, xx = np.indices((6, 6))
    first_q = torch.from_numpy((xx % 2 == 0) & (yy % 2 == 0))
    last_q = torch.from_numpy((xx % 2 == 0) & (yy % 2 == 1))
    ratio = (quartered.step / whole.step).flatten()
    one = torch.isclose(ratio, torch.tensor(2 ** -0.25))
    three = torch.isclose(ratio, torch.tensor(2 ** -0.75))
    assert one.any() and three.any() and ((ratio == 1) | one | three).all()
    for n in range(y.shape[0]):
        grew = narrower[n].any(0)
        if one[n]:
            assert not (grew & ~first_q).any()
        elif three[n]:
            assert not (grew & last_q).any()
        else:
            assert not grew.any()
    # beside --phase-prefixes a sample is at most one of the two: half, or a quarter or three
    both = progressive_latents(y, pmf, np.random.default_rng(2), 11, 0.4, 0.0, 0.6)
    levels = torch.log2(whole.step.flatten()) - torch.log2(both.step.flatten())
    assert set(torch.round(levels * 4).int().tolist()) <= {0, 1, 2, 3}
    assert (levels == 0.5).any() and ((levels == 0.25) | (levels == 0.75)).any()


def test_first_prefixes_train_the_first_layers_alone():
    """--first-prefixes trains on what the first layer or two of a stream leave: the top plane's
    significance known at the quarter (x, y even) or the checkerboard half, nothing elsewhere
    (the interval of an unknown position spans every value below 2^(T+1))."""
    from lpimg.codec.train import progressive_latents, top_planes

    y = torch.randn(64, 4, 6, 6, generator=torch.Generator().manual_seed(1)) * 20
    pmf = torch.ones(4, 255) / 255
    plain = progressive_latents(y, pmf, np.random.default_rng(3), 11, 0.4)
    mixed = progressive_latents(y, pmf, np.random.default_rng(3), 11, 0.4, 0.5)
    q = torch.round(y)
    top = top_planes(q)
    unknown = (mixed.lo == 1 - 2 ** (top + 1)) & (mixed.hi == 2 ** (top + 1) - 1)
    yy, xx = np.indices((6, 6))
    quarter = torch.from_numpy((xx % 2 == 0) & (yy % 2 == 0))
    half = torch.from_numpy((xx + yy) % 2 == 0)
    first = unknown.flatten(1).any(1)
    assert 10 < int(first.sum()) < 54 and not unknown[~first].any()
    for i in torch.nonzero(first).flatten().tolist():
        known = ~unknown[i].all(0)  # a position's channels are all known or all unknown
        assert torch.equal(known, quarter) or torch.equal(known, half)
        assert torch.equal(~unknown[i], known.expand(4, 6, 6))
        step = 2 ** (top[i].item() + (0.75 if torch.equal(known, quarter) else 0.5))
        assert abs(mixed.step[i].item() - step) < 1e-3
    # the samples not drawn keep the prefix they would have had without the option
    assert torch.equal(mixed.lo[~first], plain.lo[~first]) and torch.equal(mixed.hi[~first], plain.hi[~first])
    # positions that know nothing get their known neighbours' mean, as the decoder renders them
    from lpimg.codec.model import fill_unknown

    i = int(torch.nonzero(first).flatten()[0])
    y_hat = mixed.y_dec[i].detach()
    assert not torch.allclose(y_hat, y[i])
    refill, _ = fill_unknown(y_hat, mixed.spread[i], unknown[i, :1])
    assert torch.allclose(refill, y_hat)  # already filled: a second fill changes nothing new
    assert torch.equal(mixed.spread[~first], (plain.hi - plain.lo)[~first].to(y.dtype))


def test_decoder_spread_grows_from_weights_without_it(data_dir, tmp_path):
    """--decoder-spread adds an input to the synthesis that starts at zero: a model grown from a
    run without it renders exactly as its source did, then learns to use how precisely each
    latent is known (the rendering changes with the spread once the input is trained)."""
    import dataclasses

    from lpimg.codec.model import Codec

    train(config(data_dir, tmp_path / "a"), progress=False)
    spread_model = dict(TINY, dec_spread=True)
    grown = dataclasses.replace(config(data_dir, tmp_path / "g", iterations=3),
                                init_from=str(tmp_path / "a"), model=spread_model)
    start = torch.load(train(grown, progress=False, stop_at=0), weights_only=False)["model"]
    source = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    old = Codec(ModelConfig.from_dict(TINY))
    old.load_state_dict(source)
    new = Codec(ModelConfig.from_dict(spread_model))
    new.load_state_dict(start)
    y = torch.randn(1, 8, 4, 5, generator=torch.Generator().manual_seed(1)) * 5
    spread = torch.full_like(y, 30.0)
    with torch.no_grad():
        assert torch.equal(new.synthesis(y, spread), old.synthesis(y))
    # the input learns: it gets a gradient, and once non-zero the rendering depends on the spread
    new.synthesis(y, spread).square().mean().backward()
    assert new.synthesis.spread.weight.grad.abs().sum() > 0
    with torch.no_grad():
        new.synthesis.spread.weight.add_(0.01)
        assert not torch.equal(new.synthesis(y, spread), new.synthesis(y))
        assert torch.equal(new.synthesis(y, torch.zeros_like(y)), new.synthesis(y))
    # weights that do not fit are refused, with the source named
    other = dataclasses.replace(config(data_dir, tmp_path / "o"), init_from=str(tmp_path / "a"),
                                model=dict(spread_model, latent_channels=6))
    with pytest.raises(CodecError, match="init-from"):
        train(other, progress=False)


def test_training_device_is_checked_before_any_work(data_dir, tmp_path):
    with pytest.raises(CodecError, match="cpu or cuda"):
        train(config(data_dir, tmp_path / "a"), progress=False, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CodecError, match="no CUDA GPU"):
            train(config(data_dir, tmp_path / "b"), progress=False, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_moves_between_gpu_and_cpu_on_resume(data_dir, tmp_path):
    """A checkpoint written on a GPU resumes on the CPU, and the finished weights load anywhere."""
    train(config(data_dir, tmp_path / "a"), progress=False, stop_at=2, device="cuda")
    final = train(config(data_dir, tmp_path / "a"), resume=True, progress=False, device="cpu")
    straight = load_trained_model(train(config(data_dir, tmp_path / "b"), progress=False))
    moved = load_trained_model(final)
    for (k, a), (_, b) in zip(straight.state_dict().items(), moved.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-3), k


def test_resume_builds_the_runs_architecture_not_the_command_lines(data_dir, tmp_path):
    """`--resume` without `--decoder-spread` continues a run that has it (lpimg-b9 once failed so)."""
    grown = config(data_dir, tmp_path / "a")
    grown.model = ModelConfig(**{**ModelConfig.from_dict(TINY).to_dict(), "dec_spread": True}).to_dict()
    train(grown, progress=False, stop_at=2)
    final = train(config(data_dir, tmp_path / "a"), resume=True, progress=False)
    assert load_trained_model(final).cfg.dec_spread


def test_plan_iterations_sizes_the_schedule_from_the_measured_rate(data_dir, tmp_path):
    from lpimg.codec.train import plan_iterations

    cfg = config(data_dir, tmp_path / "a")
    n_short, rate = plan_iterations(cfg, minutes=0.02, probe_minutes=0.03)
    n_long, _ = plan_iterations(cfg, minutes=2, probe_minutes=0.03)
    assert rate > 0 and n_short % cfg.checkpoint_every == 0 and n_short >= cfg.checkpoint_every
    assert n_long > 20 * n_short
    assert not (tmp_path / "a").exists()  # the probe leaves nothing in the run's directory
