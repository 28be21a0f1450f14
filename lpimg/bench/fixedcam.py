"""``lpimg bench fixedcam``: reference-frame coding of a fixed camera, at equal MS-SSIM.

A time-lapse camera is modelled by taking every K-th frame of ``../shared/data/fixedcam``. Each
chain starts with an intra picture; every later frame is coded against the state the server holds
of the previous one, which is the state after the layers that were *sent* for it: a picture is sent
up to the first layer prefix that reaches the target MS-SSIM; the next reference keeps the older
picture's knowledge where the newer one did not get as far and agrees with it (``merge_states``).
``--catch-up``: the server also waits until every position is known as precisely as the reference
knew it (a reference that is entirely the newest picture, but whose precision only grows).

Bytes at equal quality: for every frame the intra stream and the conditional stream are decoded
prefix by prefix until they reach the target; the bytes at the target are interpolated between the
two prefixes around it, linearly in MS-SSIM and logarithmically in bytes (as RD curves are) (with
``--catch-up``, never below the whole prefix a picture needed to catch up); the bytes of the whole
prefix sent are reported too. JPEG (Pillow, optimize=True) is
searched for the lowest quality reaching the target. ``saving`` = 1 - sum(conditional bytes) /
sum(intra bytes) over the conditional frames (the chains' first frames have no reference).

By default the target is the MS-SSIM the intra stream reaches at ``--intra-bpp`` (0.25 bpp: a
1-2 kB picture at 320x240, an LPWAN-sized picture), median over the chains' first frames, so it
follows whatever model is installed; ``--target`` fixes it instead.

The residual tables are fitted on frames 0..449 (``lpimg fit-residual``); this benchmark measures
on frames 450..899 unless told otherwise, so fitting and measuring never share a frame.

Drift (``--drift-frames N``): a chain of N frames at ``--drift-step`` spacing is coded the same
way; for every conditional frame the PSNR at one fixed byte budget (the mean bytes-to-target of its
first 10 frames) is interpolated from its prefixes, and the last 10 frames are compared with the
first 10. The device's mirror of every reference is checked against the server's (hash).
"""

from __future__ import annotations

import argparse
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from lpimg.bench.metrics import msssim, psnr
from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError

SECOND_HALF = (450, 900)
FIRST_HALF = (0, 450)
DEFAULT_INTRA_BPP = 0.25


def parse_range(text: str) -> tuple[int, int]:
    if text == "second":
        return SECOND_HALF
    if text == "first":
        return FIRST_HALF
    try:
        a, b = text.split(":")
        return int(a), int(b)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"range is 'first', 'second' or A:B, not {text!r}") from exc


def interpolate_bytes(target: float, cum_bytes: list[int], quality: list[float]) -> float | None:
    """Bytes at which the prefix curve first reaches ``target`` (log-bytes, linear quality)."""
    for k, m in enumerate(quality):
        if m >= target:
            if k == 0:
                return float(cum_bytes[0])
            b0, b1, m0 = cum_bytes[k - 1], cum_bytes[k], quality[k - 1]
            t = (target - m0) / (m - m0) if m > m0 else 1.0
            if b0 <= 0:
                return b0 + t * (b1 - b0)
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    return None


def interpolate_quality(budget: float, cum_bytes: list[int], quality: list[float]) -> float | None:
    """Quality of the prefix curve at ``budget`` bytes (linear in log-bytes)."""
    if not cum_bytes or budget < cum_bytes[0]:
        return None
    for k in range(1, len(cum_bytes)):
        b0, b1 = cum_bytes[k - 1], cum_bytes[k]
        if budget <= b1:
            if b1 == b0 or b0 <= 0:
                return quality[k]
            t = (math.log(budget) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return quality[k - 1] + t * (quality[k] - quality[k - 1])
    return quality[-1] if budget <= cum_bytes[-1] else None


def sweep(decoder, layers, image: np.ndarray, target: float | None, *,  # noqa: ANN001
          all_psnr: bool = False, settled: Callable[[], bool] | None = None) -> dict:
    """Apply layers one by one, as a server that stops a picture when it is good enough.

    MS-SSIM is measured until the target is first reached (``reached``: that prefix's length),
    PSNR of every prefix with ``all_psnr``. The server stops (``sent``) at the first prefix that
    reaches the target and for which ``settled()`` holds (for a conditional picture: it has
    caught up with its reference), or after all layers; ``settled_at`` is the first prefix for
    which ``settled()`` held. ``state`` is the reference the server keeps after ``sent`` layers.
    """
    from lpimg.codec.reference import ReferenceState

    cum: list[int] = []
    ms: list[float] = []
    ps: list[float] = []
    reached = settled_at = sent = None
    state = None
    for k, (spec, data) in enumerate(layers, 1):
        decoder.apply(spec, data)
        cum.append((cum[-1] if cum else 0) + len(data))
        need_ms = reached is None and target is not None
        if need_ms or all_psnr:
            rec = decoder.reconstruct()
            if all_psnr:
                ps.append(psnr(rec, image))
            if need_ms:
                ms.append(msssim(rec, image))
                if ms[-1] >= target:
                    reached = k
        if settled_at is None and (settled is None or settled()):
            settled_at = k
        if state is None and reached is not None and settled_at is not None:
            sent, state = k, ReferenceState.from_decoder(decoder)
        if state is not None and not all_psnr:
            break
    if state is None:
        sent, state = len(layers), ReferenceState.from_decoder(decoder)
    return {"cum_bytes": cum, "msssim": ms, "psnr": ps, "reached": reached, "state": state,
            "sent": sent, "settled_at": settled_at}


def cost_bytes(curve: dict, target: float) -> float | None:
    """Bytes a picture costs at the target: interpolated to the target, but never less than the
    whole prefix the server needed to settle (for a conditional picture: to catch up with its
    reference). None if the target was never reached."""
    at_target = interpolate_bytes(target, curve["cum_bytes"], curve["msssim"])
    if at_target is None:
        return None
    settled = curve["settled_at"]
    return max(at_target, float(curve["cum_bytes"][settled - 1])) if settled else at_target


def _cost_or_all(curve: dict, target: float) -> float:
    """Bytes at the target, or the whole stream where the target was never reached. A picture
    whose reference already meets the target costs 0 bytes, and 0 must stay 0 (a truthiness
    test once turned it into the whole stream and inflated the drift budget tenfold)."""
    cost = cost_bytes(curve, target)
    return float(curve["cum_bytes"][-1]) if cost is None else cost


def jpeg_at(image: np.ndarray, target: float) -> tuple[int, int] | None:
    """(bytes, quality) of the lowest JPEG quality reaching ``target`` MS-SSIM (binary search)."""
    from lpimg.bench.baselines import decode

    im = Image.fromarray(image)
    best = None
    lo, hi = 1, 100
    while lo <= hi:
        q = (lo + hi) // 2
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q, optimize=True)
        data = buf.getvalue()
        if msssim(decode(data), image) >= target:
            best = (len(data), q)
            hi = q - 1
        else:
            lo = q + 1
    return best


class Runner:
    """Codes pictures intra and conditionally and keeps the server's and the device's references."""

    def __init__(self, model: str, tables: str | None, tolerance: int | None,
                 catch_up: bool = False) -> None:
        from lpimg.codec.pipeline import LearnedCodec
        from lpimg.codec.reference import DEFAULT_TOLERANCE, ResidualTables

        self.catch_up = catch_up
        self.codec = LearnedCodec.load(model)
        self.tables = ResidualTables.for_codec(self.codec, tables)
        self.tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
        self.mirror_mismatches = 0

    def intra(self, image: np.ndarray, target: float | None, all_psnr: bool = False) -> dict:
        enc = self.codec.encoder(image)
        layers = enc.encode_all()
        out = sweep(self.codec.decoder(enc.header), layers, image, target, all_psnr=all_psnr)
        out["specs"] = [s for s, _ in layers]
        return out

    def conditional(self, image: np.ndarray, reference, target: float | None,  # noqa: ANN001
                    all_psnr: bool = False) -> dict:
        from lpimg.codec.reference import SKIP, ConditionalDecoder, ConditionalEncoder, ReferenceState

        enc = ConditionalEncoder(self.codec, image, reference, tables=self.tables,
                                 tolerance=self.tolerance)
        layers = enc.encode_all()
        dec = ConditionalDecoder(self.codec, enc.header, reference, tables=self.tables)
        out = sweep(dec, layers, image, target, all_psnr=all_psnr,
                    settled=dec.caught_up if self.catch_up else None)
        mirror = ReferenceState.from_encoder(enc, [s for s, _ in layers[:out["sent"]]])
        if mirror.hash() != out["state"].hash():
            self.mirror_mismatches += 1
        out["skipped_tiles"] = int((enc.modes == SKIP).sum())
        out["tiles"] = int(enc.modes.size)
        return out


def _frames(folder: str) -> list[Path]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not paths:
        raise LpimgError(f"no frames in {folder}")
    return paths


def _load(path: Path) -> np.ndarray:
    from lpimg.codec.image import load_image

    return load_image(path)


def auto_target(runner: Runner, images: list[np.ndarray], bpp: float) -> float:
    """Median MS-SSIM of the intra stream at ``bpp`` over ``images``."""
    values = []
    for img in images:
        budget = bpp * img.shape[0] * img.shape[1] / 8
        enc = runner.codec.encoder(img)
        dec = runner.codec.decoder(enc.header)
        cum: list[int] = []
        quality: list[float] = []
        for spec, data in enc.encode_all():
            dec.apply(spec, data)
            cum.append((cum[-1] if cum else 0) + len(data))
            quality.append(msssim(dec.reconstruct(), img))
            if cum[-1] >= budget:
                break
        q = interpolate_quality(budget, cum, quality)
        values.append(q if q is not None else quality[0 if budget < cum[0] else -1])
    return float(np.median(values))


def run(frames: str, step: int, *, model: str = DEFAULT_MODEL, tables: str | None = None,
        frame_range: tuple[int, int] = SECOND_HALF, chains: int = 1, limit: int | None = None,
        target: float | None = None, intra_bpp: float = DEFAULT_INTRA_BPP, jpeg: bool = True,
        tolerance: int | None = None, drift_frames: int = 0, drift_step: int = 4,
        catch_up: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda msg: None)
    paths = _frames(frames)
    first, stop = frame_range[0], min(frame_range[1], len(paths))
    if step < 1 or first + step >= stop:
        raise LpimgError(f"step {step} leaves no frame pair in frames {first}..{stop - 1}")
    runner = Runner(model, tables, tolerance, catch_up)
    starts = sorted({first + i * step // max(1, chains) for i in range(max(1, chains))})
    chain_frames = []
    for s in starts:
        idx = list(range(s, stop, step))[:limit]
        if len(idx) >= 2:
            chain_frames.append(idx)
    if not chain_frames:
        raise LpimgError("no chain has two frames; lower --step or widen --range")
    cache: dict[int, np.ndarray] = {}

    def image(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = _load(paths[i])
        return cache[i]

    if target is None:
        target = auto_target(runner, [image(c[0]) for c in chain_frames], intra_bpp)
        target_rule = f"intra MS-SSIM at {intra_bpp} bpp, median over the chains' first frames"
    else:
        target_rule = "given"
    say(f"target MS-SSIM {target:.4f} ({target_rule})")

    rows = []
    for ci, idx in enumerate(chain_frames):
        reference = None
        for n, i in enumerate(idx):
            img = image(i)
            intra = runner.intra(img, target)
            row = {"chain": ci, "frame": i, "position": n,
                   "intra_bytes": cost_bytes(intra, target),
                   "intra_layers": intra["sent"],
                   "intra_bytes_whole_layers": intra["cum_bytes"][intra["sent"] - 1]}
            if reference is None:
                reference = intra["state"]
            else:
                cond = runner.conditional(img, reference, target)
                reference = cond["state"]
                row.update({
                    "ref_bytes": cost_bytes(cond, target),
                    "ref_layers": cond["sent"], "ref_layers_to_target": cond["reached"],
                    "ref_bytes_whole_layers": cond["cum_bytes"][cond["sent"] - 1],
                    "skipped_tiles": cond["skipped_tiles"], "tiles": cond["tiles"],
                })
                if row["ref_bytes"] is not None and row["intra_bytes"]:
                    row["saving"] = 1 - row["ref_bytes"] / row["intra_bytes"]
            if jpeg:
                found = jpeg_at(img, target)
                row["jpeg_bytes"], row["jpeg_quality"] = found if found else (None, None)
            rows.append(row)
            say(_row_line(row))

    cond_rows = [r for r in rows if "ref_bytes" in r]
    both = [r for r in cond_rows if r["ref_bytes"] is not None and r["intra_bytes"] is not None]

    def total(key: str, rs: list[dict]) -> float:
        return float(sum(r[key] for r in rs))

    summary = {
        "frames_coded": len(rows), "conditional_frames": len(cond_rows),
        "unreached": len(cond_rows) - len(both),
        "intra_bytes_mean": total("intra_bytes", both) / max(1, len(both)),
        "ref_bytes_mean": total("ref_bytes", both) / max(1, len(both)),
        "saving": (1 - total("ref_bytes", both) / total("intra_bytes", both)) if both else None,
        "saving_per_frame_mean": float(np.mean([r["saving"] for r in both])) if both else None,
        "saving_whole_layers": (1 - total("ref_bytes_whole_layers", both)
                                / total("intra_bytes_whole_layers", both)) if both else None,
        "skipped_tile_fraction": (total("skipped_tiles", cond_rows) / total("tiles", cond_rows)
                                  if cond_rows else None),
    }
    if jpeg:
        js = [r for r in both if r.get("jpeg_bytes")]
        summary["jpeg_bytes_mean"] = total("jpeg_bytes", js) / max(1, len(js))
        summary["saving_vs_jpeg"] = (1 - total("ref_bytes", js) / total("jpeg_bytes", js)) if js else None
    result = {
        "frames": str(frames), "range": [first, stop], "step": step, "chains": len(chain_frames),
        "model": runner.codec.name, "model_id": f"{runner.codec.model_id:#06x}",
        "residual_id": f"{runner.tables.residual_id:#06x}", "tile": runner.tables.tile,
        "tolerance": runner.tolerance, "target_msssim": target, "target_rule": target_rule,
        "stop_rule": "target reached and caught up with the reference" if catch_up
                     else "target reached",
        "method": "bytes at the target interpolated between the layer prefixes around it "
                  "(log bytes, linear MS-SSIM); *_whole_layers: the whole prefix that reached it",
        "summary": summary, "per_frame": rows,
    }
    if drift_frames:
        result["drift"] = drift(runner, image, first, stop, drift_frames, drift_step, target, say)
    result["mirror_mismatches"] = runner.mirror_mismatches
    return result


def drift(runner: Runner, image: Callable[[int], np.ndarray], first: int, stop: int, count: int,
          step: int, target: float, say: Callable[[str], None]) -> dict:
    """PSNR at equal bytes along one long conditional chain: last 10 frames against first 10."""
    idx = list(range(first, stop, step))[:count]
    if len(idx) < 21:
        raise LpimgError(f"a drift chain needs at least 21 frames; {len(idx)} fit frames "
                         f"{first}..{stop - 1} at step {step}")
    reference = runner.intra(image(idx[0]), target)["state"]
    curves = []
    for n, i in enumerate(idx[1:], 1):
        cond = runner.conditional(image(i), reference, target, all_psnr=True)
        reference = cond["state"]
        curves.append((i, cond))
        if n % 10 == 0:
            say(f"drift: {n}/{len(idx) - 1} frames")
    head, tail = curves[:10], curves[-10:]
    budget = float(np.mean([_cost_or_all(c, target) for _, c in head]))

    def at_budget(c: dict) -> float | None:
        return interpolate_quality(budget, c["cum_bytes"], c["psnr"])

    def at_target(c: dict) -> float:
        return c["psnr"][c["sent"] - 1]

    def mean(values: list[float | None]) -> float | None:
        got = [v for v in values if v is not None]
        return float(np.mean(got)) if got else None

    first10 = mean([at_budget(c) for _, c in head])
    last10 = mean([at_budget(c) for _, c in tail])
    intra_first = mean([at_target(runner.intra(image(i), target, all_psnr=True)) for i, _ in head])
    intra_last = mean([at_target(runner.intra(image(i), target, all_psnr=True)) for i, _ in tail])
    cond_first, cond_last = mean([at_target(c) for _, c in head]), mean([at_target(c) for _, c in tail])
    out = {
        "frames": len(idx), "step": step, "first_frame": idx[0], "last_frame": idx[-1],
        "budget_bytes": budget,
        "psnr_at_budget_first10": first10, "psnr_at_budget_last10": last10,
        "drift_db": None if first10 is None or last10 is None else last10 - first10,
        "psnr_sent_first10": cond_first, "psnr_sent_last10": cond_last,
        "intra_psnr_at_target_first10": intra_first, "intra_psnr_at_target_last10": intra_last,
        "per_frame": [{"frame": i, "psnr_at_budget": at_budget(c),
                       "bytes_sent": c["cum_bytes"][c["sent"] - 1]} for i, c in curves],
    }
    if None not in (cond_first, cond_last, intra_first, intra_last):
        # the content changes along 400 frames; relative to intra it does not
        out["drift_vs_intra_db"] = (cond_last - intra_last) - (cond_first - intra_first)
    return out


def _row_line(r: dict) -> str:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    line = f"frame {r['frame']:>4}: intra {fmt(r['intra_bytes'])} B"
    if "ref_bytes" in r:
        line += (f", with reference {fmt(r['ref_bytes'])} B ({r['skipped_tiles']}/{r['tiles']} "
                 f"tiles skipped)")
        if r.get("saving") is not None:
            line += f", saving {r['saving']:.2f}"
    if r.get("jpeg_bytes"):
        line += f", JPEG q{r['jpeg_quality']} {r['jpeg_bytes']} B"
    return line


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fixedcam", help="reference-frame coding of a fixed camera at equal MS-SSIM")
    p.add_argument("--frames", default="../shared/data/fixedcam")
    p.add_argument("--step", type=int, default=50, help="frame spacing K")
    p.add_argument("--range", type=parse_range, default=SECOND_HALF, dest="frame_range",
                   help="'second' (450:900, default: the residual tables are fitted on the first "
                        "half), 'first', or A:B")
    p.add_argument("--chains", type=int, default=1, help="chains started at spread-out offsets")
    p.add_argument("--limit", type=int, default=None, help="at most N frames per chain")
    p.add_argument("--target", type=float, default=None, help="MS-SSIM target (default: automatic)")
    p.add_argument("--intra-bpp", type=float, default=DEFAULT_INTRA_BPP,
                   help="automatic target: intra MS-SSIM at this many bits per pixel")
    p.add_argument("--tolerance", type=int, default=None, help="skip tolerance in latent units")
    p.add_argument("--drift-frames", type=int, default=0, help="also measure drift over N frames")
    p.add_argument("--drift-step", type=int, default=4)
    p.add_argument("--catch-up", action="store_true",
                   help="the server stops a conditional picture only once it reached the target "
                        "and caught up with its reference (the reference's precision then only grows)")
    p.add_argument("--no-jpeg", action="store_true")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--tables", default=None, help="residual tables file (default: next to the model)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    import sys

    def say(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    result = run(args.frames, args.step, model=args.model, tables=args.tables,
                 frame_range=args.frame_range, chains=args.chains, limit=args.limit,
                 target=args.target, intra_bpp=args.intra_bpp, jpeg=not args.no_jpeg,
                 tolerance=args.tolerance, drift_frames=args.drift_frames,
                 drift_step=args.drift_step, catch_up=args.catch_up, progress=say)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s = result["summary"]

    def f(v: float | None, spec: str = ".0f") -> str:
        return "n/a" if v is None else format(v, spec)

    print(f"{result['frames']} frames {result['range'][0]}..{result['range'][1] - 1}, step "
          f"{result['step']}, {result['chains']} chain(s), target MS-SSIM "
          f"{result['target_msssim']:.4f}")
    print(f"mean bytes at the target: intra {f(s['intra_bytes_mean'])}, with reference "
          f"{f(s['ref_bytes_mean'])}" + (f", JPEG {f(s['jpeg_bytes_mean'])}" if "jpeg_bytes_mean" in s
                                         else ""))
    print(f"saving {f(s['saving'], '.3f')} (per-frame mean {f(s['saving_per_frame_mean'], '.3f')}, "
          f"whole layers {f(s['saving_whole_layers'], '.3f')}), tiles skipped "
          f"{f(s['skipped_tile_fraction'], '.2f')}")
    if "drift" in result:
        d = result["drift"]
        print(f"drift over {d['frames']} frames (step {d['step']}): PSNR at {d['budget_bytes']:.0f} B "
              f"first 10 {f(d['psnr_at_budget_first10'], '.2f')} dB, last 10 "
              f"{f(d['psnr_at_budget_last10'], '.2f')} dB, drift {f(d['drift_db'], '+.2f')} dB")
    print(f"device mirror mismatches: {result['mirror_mismatches']}")
    return 0
