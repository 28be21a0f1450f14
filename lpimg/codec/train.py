"""Training of the codec: resumable, quantization-aware and progressive.

Why it looks like this:
- *Resumable with an identical schedule*: the learning rate, the QAT phases and every random
  crop are functions of the iteration number and the seed, so ``--resume`` continues exactly the
  run that was interrupted, and several 2.5-hour runs add up to one long run.
- *Quantization-aware*: after a float warm-up the analysis transform trains through the same
  int8 fake quantization it is deployed with; activation ranges are calibrated, then frozen.
- *Progressive*: each sample is decoded from a random prefix of its bitplane passes (unknown low
  bits filled with their conditional expectation, as the real decoder does), so every layer
  boundary decodes well, not only the full stream.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_msssim import ms_ssim

from lpimg.codec.model import Codec, ModelConfig, fill_unknown, interval_expectation, known_interval
from lpimg.codec.quant import LATENT_QMAX
from lpimg.errors import CodecError

# 4 scales and a 7-tap window, so 128 px training patches are large enough for MS-SSIM
MSSSIM_WEIGHTS_4 = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363])


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=lambda: ["../shared/data/train"])
    out: str = "runs/default"
    iterations: int = 30_000
    batch: int = 8
    patch: int = 128
    lr: float = 3e-4
    lmbda: float = 60.0  # distortion weight of the full stream; a prefix at step s uses lmbda/s
    mse_weight: float = 8.0
    qat_start: float = 0.05  # fraction of the schedule run in float before fake quantization
    calib_end: float = 0.5  # activation ranges frozen after this fraction
    prefix_span: int = 11  # train on the last ``prefix_span`` pass-prefixes (plus the full stream)
    # a prefix at step s trades at lmbda / max(s, step_floor). With the default 1 the full stream
    # weighs 64 times the top plane, and the synthesis spends its capacity on rates above 0.6
    # bits per pixel, where no LPWAN picture is sent; a floor of 4 weighs every prefix finer than
    # plane 2 like plane 2. Only a synthesis-only run (``freeze_encoder``) should raise it: the
    # rate term does not see it, so a jointly trained encoder would learn a coarser full stream
    step_floor: float = 1.0
    # clamp y to the int8 latent range before rounding, as the device does, so the encoder feels the
    # clip (lpimg-b1 trained without it and grew channels far beyond +-127)
    clamp_latents: bool = False
    # fraction of samples trained the Balle way (full stream, additive uniform noise): with pure
    # straight-through rounding a latent channel that starts below half a step always rounds to
    # zero, so the synthesis never learns to use it and it never grows; the noise keeps it alive
    noise_mix: float = 0.0
    # extra weight on the green-magenta error G - (R+B)/2: the lowest-variance colour axis of
    # natural images, which lpimg-b1 never learned to carry (`lpimg bench colour`: input/output
    # correlation 0.37 on it, 0.97 on red-blue)
    chroma_weight: float = 0.0
    # share of the samples whose prefix ends half way through a significance pass (its phase A:
    # the checkerboard half of the positions knows one plane more), as an intra stream's layers
    # do (spec/PROTOCOL.md 10): a decoder trained on whole passes only renders those states
    # worse than the whole passes around them
    phase_prefixes: float = 0.0
    # share of the samples whose prefix ends a quarter or three quarters through a significance
    # pass: the positions with x and y even (sigq), or all but those with x even and y odd (up to
    # sigh), know one plane more. The four-quarter layout (spec/PROTOCOL.md 10) stops there too,
    # and ``phase_prefixes`` shows the synthesis only the half way state
    quarter_prefixes: float = 0.0
    # share of the samples decoded from a stream's first layer or two alone: the top plane's
    # significance at the quarter positions (x and y even), or at the checkerboard half (the
    # quarter and the x, y odd positions), nothing anywhere else. Those are the 500-byte
    # previews (spec/PROTOCOL.md 10); without it no sample ever shows the synthesis a state with
    # positions that know nothing at all
    first_prefixes: float = 0.0
    # start from the weights of another run (a run directory, checkpoint or final.pt) with a fresh
    # optimizer and schedule: a later run can change the objective without repeating what an earlier
    # run already learned (lpimg-b3 starts from lpimg-b2's colours). Ignored on --resume.
    init_from: str | None = None
    # train the synthesis alone: the analysis (as deployed: int8, ranges frozen) and the density
    # keep ``init_from``'s weights. The model id hashes only those and the tables fitted from
    # them, so the released weights keep the id: a better server-side decoder that devices in
    # the field need not know about. The synthesis may then have another width
    # (``model["dec_channels"]``; it starts from ``init_from``'s where the shapes fit) or more
    # blocks (``model["dec_blocks"]``, starting as the identity: lpimg-g7 grew so from lpimg-g2)
    freeze_encoder: bool = False
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 1000
    model: dict = field(default_factory=lambda: ModelConfig().to_dict())

    def lr_at(self, it: int) -> float:
        """Warm-up, plateau, then cosine decay over the last 30 %."""
        warm = 1000
        if it < warm:
            return self.lr * (it + 1) / warm
        decay_start = int(0.7 * self.iterations)
        if it < decay_start:
            return self.lr
        frac = (it - decay_start) / max(1, self.iterations - decay_start)
        return self.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def load_training_images(roots: list[str], min_side: int = 128) -> list[np.ndarray]:
    """Every image under the roots, as uint8 HxWx3. Kodak is evaluation-only and refused."""
    paths: list[Path] = []
    for root in roots:
        if "kodak" in str(root).lower():
            raise CodecError("refusing to train on Kodak: it is the evaluation set")
        paths += sorted(
            p for p in Path(root).rglob("*")
            if p.suffix.lower() in {".jpg", ".jpeg", ".png"} and "kodak" not in str(p).lower()
        )
    if not paths:
        raise CodecError(f"no training images found under {roots}")
    images = []
    for p in paths:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
        if min(arr.shape[:2]) >= min_side:
            images.append(arr)
    return images


def sample_batch(images: list[np.ndarray], rng: np.random.Generator, batch: int, patch: int) -> torch.Tensor:
    out = np.empty((batch, patch, patch, 3), dtype=np.uint8)
    for i in range(batch):
        img = images[rng.integers(len(images))]
        h, w = img.shape[:2]
        y = rng.integers(0, h - patch + 1)
        x = rng.integers(0, w - patch + 1)
        crop = img[y:y + patch, x:x + patch]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = crop
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


def top_planes(q: torch.Tensor) -> torch.Tensor:
    """Per-sample index of the highest non-empty magnitude bitplane (shape B,1,1,1)."""
    peak = q.abs().flatten(1).amax(1).clamp(min=1)
    return torch.floor(torch.log2(peak)).long()[:, None, None, None]


@dataclass
class Prefix:
    """A random prefix of each sample's passes: what the decoder sees and what it cost."""

    y_dec: torch.Tensor  # decoder input, straight-through to y
    lo: torch.Tensor  # known interval of each latent (integers)
    hi: torch.Tensor
    step: torch.Tensor  # (B,1,1,1) 2^plane of the last pass kept: the effective quantizer step
    spread: torch.Tensor  # what the synthesis is told of each latent's interval width (float)


def progressive_latents(
    y: torch.Tensor, pmf: torch.Tensor, rng: np.random.Generator, span: int, phase_share: float = 0.0,
    first_share: float = 0.0, quarter_share: float = 0.0,
) -> Prefix:
    """Round y, keep a random prefix of passes per sample, fill the rest with expectations.

    With ``phase_share`` > 0, that share of the samples whose next pass is a significance pass
    also gets its phase A: the (x + y)-even latent positions know one coarse pass more. With
    ``first_share`` > 0, that share of the samples is replaced by a stream's first layer (top
    plane significance at x, y even) or first two (at x + y even), half of them each.
    """
    dev = y.device
    q = torch.clamp(torch.round(y.detach()), -LATENT_QMAX, LATENT_QMAX)
    top = top_planes(q)
    full = 2 * top + 1
    drop = torch.from_numpy(rng.integers(0, span + 1, size=(y.shape[0], 1, 1, 1))).to(dev)
    passes = torch.clamp(full - drop, min=1)
    last = passes - 1  # index of the last pass kept -> its plane
    plane = torch.where(last == 0, top, top - torch.div(last + 1, 2, rounding_mode="floor")).to(y.dtype)
    sample_passes = passes  # (B, 1, 1, 1): before any branch below makes it per position
    if phase_share > 0:
        # coarse pass j >= 1 is a significance pass when j is odd; the next one is j = passes
        half = torch.from_numpy(rng.random((y.shape[0], 1, 1, 1)) < phase_share).to(dev)
        half &= (passes < full) & (passes % 2 == 1)
        h, w = y.shape[2:]
        even = torch.from_numpy(np.indices((h, w)).sum(0) % 2 == 0)[None, None].to(dev)
        passes = passes + (half & even).long()
        plane = torch.where(half, plane - 0.5, plane)  # half a plane finer: between the two slopes
    if quarter_share > 0:
        quarter = torch.from_numpy(rng.random((y.shape[0], 1, 1, 1)) < quarter_share).to(dev)
        quarter &= (sample_passes < full) & (sample_passes % 2 == 1)
        if phase_share > 0:
            quarter &= ~half
        three = torch.from_numpy(rng.random((y.shape[0], 1, 1, 1)) < 0.5).to(dev)
        yy, xx = np.indices(y.shape[2:])
        first_q = torch.from_numpy((xx % 2 == 0) & (yy % 2 == 0))[None, None].to(dev)
        up_to_h = torch.from_numpy(~((xx % 2 == 0) & (yy % 2 == 1)))[None, None].to(dev)
        ahead = torch.where(three, up_to_h, first_q)
        passes = passes + (quarter & ahead).long()
        plane = torch.where(quarter, plane - torch.where(three, 0.75, 0.25), plane)
    if first_share > 0:
        first = torch.from_numpy(rng.random((y.shape[0], 1, 1, 1)) < first_share).to(dev)
        quarter = torch.from_numpy(rng.random((y.shape[0], 1, 1, 1)) < 0.5).to(dev)
        yy, xx = np.indices(y.shape[2:])
        quarter_pos = torch.from_numpy((xx % 2 == 0) & (yy % 2 == 0))[None, None].to(dev)
        half_pos = torch.from_numpy((xx + yy) % 2 == 0)[None, None].to(dev)
        known = torch.where(quarter, quarter_pos, half_pos).long()
        passes = torch.where(first, known, passes)
        # coarser than the whole top plane: a quarter at 3/4, a half at 1/2 of a plane above it
        plane = torch.where(first, top.to(y.dtype) + torch.where(quarter, 0.75, 0.5), plane)
    lo, hi = known_interval(q, passes, top)
    channel = torch.arange(y.shape[1], device=dev)[None, :, None, None].expand_as(q)
    y_hat = interval_expectation(pmf, lo, hi, channel).to(y.dtype)
    spread = (hi - lo).to(y.dtype)
    if first_share > 0:  # as the decoder renders positions that know nothing (LearnedCodec.synthesize)
        y_hat, spread = fill_unknown(y_hat, spread, passes == 0)
    return Prefix(y + (y_hat - y).detach(), lo, hi, torch.pow(2.0, plane), spread)


def prefix_rate(density, y: torch.Tensor, prefix: Prefix) -> torch.Tensor:  # noqa: ANN001
    """Bits per sample of a prefix: -log2 of the mass of every latent's known interval.

    The interval moves with ``y - round(y)`` so the encoder still gets a gradient; for the full
    stream this is the usual P(round(y)) with the bin following y.
    """
    shift = y - torch.round(y).detach()
    mass = density.mass(prefix.lo.to(y.dtype) - 0.5 + shift, prefix.hi.to(y.dtype) + 0.5 + shift)
    return -torch.log2(mass).flatten(1).sum(1)


PART_BYTES = 8 * 1024 * 1024  # committed checkpoints are split below the repository's 10 MB limit


def pack_checkpoint(run_dir: str | Path, dest: str | Path) -> list[Path]:
    """Copy a run's resumable state into ``dest`` as ``checkpoint.pt.NNN`` parts (< 10 MB each).

    A session lasts three hours and a training run longer, so the exact optimizer state is
    committed to the repository and ``lpimg train --out DEST --resume`` continues the schedule.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    blob = (run_dir / "checkpoint.pt").read_bytes()
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("checkpoint.pt.*"):
        old.unlink()
    parts = []
    for i in range(0, len(blob), PART_BYTES):
        part = dest / f"checkpoint.pt.{i // PART_BYTES:03d}"
        part.write_bytes(blob[i:i + PART_BYTES])
        parts.append(part)
    for name in ("train_config.json", "log.jsonl"):
        if (run_dir / name).exists() and run_dir != dest:
            (dest / name).write_bytes((run_dir / name).read_bytes())
    return parts


def load_checkpoint(run_dir: Path) -> dict:
    """The run's checkpoint, whole (``checkpoint.pt``) or packed in parts."""
    import io

    whole = run_dir / "checkpoint.pt"
    parts = sorted(run_dir.glob("checkpoint.pt.[0-9][0-9][0-9]"))
    # map to the CPU: a run checkpointed on a GPU resumes anywhere (train moves it back)
    if whole.exists():
        return torch.load(whole, weights_only=False, map_location="cpu")
    if parts:
        blob = io.BytesIO(b"".join(p.read_bytes() for p in parts))
        return torch.load(blob, weights_only=False, map_location="cpu")
    raise CodecError(f"--resume given but {run_dir} holds no checkpoint.pt (nor packed parts)")


def _model_state(source: Path) -> dict:
    """Model weights of a run directory (whole or packed checkpoint), a checkpoint or final.pt."""
    if source.is_dir():
        ck = load_checkpoint(source)
    elif source.exists():
        ck = torch.load(source, weights_only=False, map_location="cpu")
    else:
        raise CodecError(f"--init-from {source}: no such run directory or checkpoint")
    state = ck.get("model", ck.get("state"))
    if state is None:
        raise CodecError(f"--init-from {source}: not a training checkpoint nor exported weights")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _cpu_state(model: Codec) -> dict:
    """Weights as CPU tensors: a checkpoint written on a GPU must load on a machine without one."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def export_weights(model: Codec, path: Path, meta: dict) -> None:
    """The shipped form: float32 analysis (int8 values are derived exactly), fp16 synthesis."""
    state = {}
    for k, v in _cpu_state(model).items():
        state[k] = v.half() if k.startswith("synthesis.") and v.is_floating_point() else v
    _save_atomic({"config": model.cfg.to_dict(), "state": state, "meta": meta}, path)


def _training_device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:  # not a device name PyTorch knows
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise CodecError(f"--device {name}: training runs on cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CodecError("--device cuda: this PyTorch sees no CUDA GPU")
        torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick its kernels once
    return dev


def _uniform(rng: np.random.Generator, like: torch.Tensor) -> torch.Tensor:
    """U(-0.5, 0.5) noise drawn from the run's numpy generator, so every device sees the same."""
    noise = rng.uniform(-0.5, 0.5, size=tuple(like.shape)).astype(np.float32)
    return torch.from_numpy(noise).to(like.device)


def train(
    cfg: TrainConfig, resume: bool = False, progress: bool = True, *,
    stop_at: int | None = None, max_minutes: float | None = None, device: str = "cpu",
) -> Path:
    """Run (or continue) the schedule of ``cfg``; returns the exported weights of the run.

    ``stop_at`` / ``max_minutes`` end this process early with a checkpoint, as a kill would,
    without touching the schedule: ``--resume`` later continues exactly where it stopped.
    Returns the checkpoint path when stopped early, the exported weights when finished.
    ``device`` ("cpu", "cuda") is where the steps run, not part of the run's definition: a run
    may move between machines on --resume (results then differ in float rounding only).
    """
    dev = _training_device(device)
    torch.set_num_threads(cfg.threads)
    # the prefix rate evaluates the density far in its tails, where sigmoids and their gradients
    # underflow into denormal floats that are ~100x slower on x86: flush them to zero
    torch.set_flush_denormal(True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    ck = None
    if resume:
        # the schedule and the architecture belong to the run, not to today's command line
        # (a resume without --decoder-spread must still build the model the run trained)
        ck = load_checkpoint(out)
        cfg = TrainConfig(**ck["train_config"])
    torch.manual_seed(cfg.seed)  # initial weights are part of the run's definition
    model = Codec(ModelConfig.from_dict(cfg.model))
    start = 0
    if cfg.freeze_encoder and not cfg.init_from:
        raise CodecError("--freeze-encoder needs --init-from: the analysis and density to keep")
    if cfg.init_from and ck is None:
        source = _model_state(Path(cfg.init_from))
        if cfg.freeze_encoder:  # a synthesis of another width starts afresh
            own = model.state_dict()
            source = {k: v for k, v in source.items()
                      if not k.startswith("synthesis.") or (k in own and own[k].shape == v.shape)}
        # a model may grow inputs its source lacked (they start at zero); anything else is a mismatch
        try:
            grown = model.load_state_dict(source, strict=False)
        except RuntimeError as exc:  # shapes differ
            raise CodecError(f"--init-from {cfg.init_from}: weights do not fit this "
                             f"architecture: {str(exc).splitlines()[1].strip()}") from exc
        missing = [k for k in grown.missing_keys
                   if not k.startswith(("synthesis.spread.", "synthesis.extra."))
                   and not (cfg.freeze_encoder and k.startswith("synthesis."))]
        if missing or grown.unexpected_keys:
            raise CodecError(
                f"--init-from {cfg.init_from}: weights do not fit this architecture "
                f"(missing {missing[:3]}, unexpected {grown.unexpected_keys[:3]})")
    if ck is not None:
        model.load_state_dict(ck["model"])
    if cfg.freeze_encoder:
        for part in (model.analysis, model.density):
            part.requires_grad_(False)
    model.to(dev)  # before the optimizer exists, so its state follows the parameters
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        start = ck["iteration"]
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    images = load_training_images(cfg.data, cfg.patch)
    log = open(out / "log.jsonl", "a")  # noqa: SIM115 (open for the whole run, closed at the end)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.iterations, initial=start, desc="train", dynamic_ncols=True)
    model.train()
    ema: dict[str, float] = {}
    t0 = time.time()
    for it in range(start, cfg.iterations):
        if (stop_at is not None and it >= stop_at) or (
                max_minutes is not None and time.time() - t0 > 60 * max_minutes):
            _save_atomic({
                "train_config": asdict(cfg), "model": _cpu_state(model),
                "optimizer": opt.state_dict(), "iteration": it,
            }, ckpt_path)
            log.close()
            if bar is not None:
                bar.close()
            return ckpt_path
        rng = np.random.default_rng([cfg.seed, it])
        model.analysis.quantize = cfg.freeze_encoder or it >= int(cfg.qat_start * cfg.iterations)
        model.analysis.set_calibrating(not cfg.freeze_encoder and it < int(cfg.calib_end * cfg.iterations))
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(it)
        x = sample_batch(images, rng, cfg.batch, cfg.patch).to(dev)
        y = model.analysis(x)
        if cfg.clamp_latents:
            y = torch.clamp(y, -LATENT_QMAX, LATENT_QMAX)
        with torch.no_grad():
            pmf = model.density.pmf_table().double()
        prefix = progressive_latents(y, pmf, rng, cfg.prefix_span, cfg.phase_prefixes,
                                     cfg.first_prefixes, cfg.quarter_prefixes)
        pixels = x.shape[2] * x.shape[3]
        bpp_prefix = prefix_rate(model.density, y, prefix) / pixels  # (B,)
        y_dec = prefix.y_dec
        spread = prefix.spread
        lmbda = cfg.lmbda / prefix.step.flatten().clamp(min=cfg.step_floor)
        if cfg.noise_mix > 0:
            relaxed = torch.from_numpy(rng.random(y.shape[0]) < cfg.noise_mix).to(dev)
            y_noisy = y + _uniform(rng, y)
            bpp_noisy = -torch.log2(model.density.likelihood(y_noisy)).flatten(1).sum(1) / pixels
            y_dec = torch.where(relaxed[:, None, None, None], y_noisy, y_dec)
            spread = torch.where(relaxed[:, None, None, None], torch.zeros_like(spread), spread)
            bpp_prefix = torch.where(relaxed, bpp_noisy, bpp_prefix)
            lmbda = torch.where(relaxed, torch.full_like(lmbda, cfg.lmbda), lmbda)
        x_hat = model.synthesis(y_dec, spread)
        mse = torch.mean((x_hat - x) ** 2, dim=(1, 2, 3))
        msssim = ms_ssim(
            x_hat.clamp(0, 1), x, data_range=1.0, size_average=False, win_size=7,
            weights=MSSSIM_WEIGHTS_4,
        )
        # every prefix is an operating point: coarser steps trade at a lower lambda (set above), so
        # each layer boundary lands on its own rate-distortion slope
        distortion = 1 - msssim + cfg.mse_weight * mse
        if cfg.chroma_weight > 0:
            err = x_hat - x
            green_magenta = err[:, 1] - 0.5 * (err[:, 0] + err[:, 2])
            distortion = distortion + cfg.mse_weight * cfg.chroma_weight * torch.mean(
                green_magenta ** 2, dim=(1, 2))
        loss = torch.mean(lmbda * distortion + bpp_prefix)
        with torch.no_grad():
            noise = _uniform(rng, y)
            bpp = -torch.log2(model.density.likelihood(y + noise)).sum() / (x.shape[0] * pixels)
        mse, msssim = mse.mean(), msssim.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        stats = {
            "loss": loss.item(), "bpp": bpp.item(), "bpp_prefix": bpp_prefix.mean().item(),
            "msssim": msssim.item(),
            "psnr": float(-10 * torch.log10(mse.detach().clamp(min=1e-10))),
        }
        for k, v in stats.items():
            ema[k] = v if k not in ema else 0.98 * ema[k] + 0.02 * v
        if bar is not None:
            bar.update(1)
            if it % 20 == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()})
        if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations:
            log.write(json.dumps({"iteration": it + 1, "elapsed_s": time.time() - t0, **ema}) + "\n")
            log.flush()
            _save_atomic({
                "train_config": asdict(cfg), "model": _cpu_state(model),
                "optimizer": opt.state_dict(), "iteration": it + 1,
            }, ckpt_path)
    if bar is not None:
        bar.close()
    log.close()
    final = out / "final.pt"
    export_weights(model, final, {"iterations": cfg.iterations, "train_config": asdict(cfg)})
    return final


def objective_warnings(cfg: TrainConfig) -> list[str]:
    """Settings that are legal but probably not what the caller meant, said before hours of training."""
    out = []
    if cfg.step_floor > 1 and not cfg.freeze_encoder:
        out.append(f"--step-floor {cfg.step_floor:g} without --freeze-encoder: the rate term does not "
                   "see the floor, so the analysis will learn a coarser full stream (and a new model id)")
    return out


def plan_iterations(
    cfg: TrainConfig, minutes: float, *, device: str = "cpu", probe_minutes: float = 0.5,
) -> tuple[int, float]:
    """The length of ``cfg``'s schedule that finishes within ``minutes`` here, and the step rate.

    The schedule (warm-up, decay) is defined in iterations, so a run that must fit a time slot
    (2.5 hours of this machine, a GPU lease of a few minutes) needs its iteration count chosen
    from the rate measured on the machine itself: a run stopped before its decay is worse than
    where it started. The probe runs the real steps (same model, batch, device) and is discarded.
    """
    with tempfile.TemporaryDirectory() as tmp:
        probe = replace(cfg, out=tmp, iterations=10**9, checkpoint_every=10**9)
        ckpt = train(probe, progress=False, max_minutes=probe_minutes, device=device)
        done = torch.load(ckpt, weights_only=False, map_location="cpu")["iteration"]
    rate = done / (60 * probe_minutes)
    # 5 % spare for checkpoints and the machine's moods; whole checkpoint intervals
    n = int(rate * 60 * minutes * 0.95) // cfg.checkpoint_every * cfg.checkpoint_every
    return max(n, cfg.checkpoint_every), rate
