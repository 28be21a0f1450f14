"""``lpimg bench rd``: rate-distortion of lpimg's layer prefixes against Pillow's codecs.

lpimg points are grouped by *absolute* pass (plane and kind), not by layer number, because an
image whose top plane is lower simply has fewer layers: "everything down to the significance pass
of plane 2" means the same quantizer for every image.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from lpimg.bench.baselines import BASELINES, decode
from lpimg.bench.metrics import bd_rate, bpp, msssim, msssim_db, psnr
from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError

BD_RANGE = (0.03, 0.6)


def _images(folder: str, limit: int | None) -> list[tuple[str, np.ndarray]]:
    from lpimg.codec.image import load_image

    paths = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not paths:
        raise LpimgError(f"no images in {folder}")
    return [(p.name, load_image(p)) for p in paths[:limit]]


_KIND_ORDER = ("sigq", "sigo", "sigh", "sigv", "ref")


def measure_lpimg(codec, images, progress) -> tuple[dict, dict, dict]:  # noqa: ANN001
    """Per absolute pass label: list of (bytes, psnr, msssim); plus timings and strips."""
    from lpimg.codec.bitplane import pass_kind

    points: dict[tuple[int, int], list[tuple[str, int, float, float]]] = defaultdict(list)
    times = {"encode_s": [], "decode_s": []}
    strips: dict[str, list[tuple[int, np.ndarray]]] = {}
    for name, img in progress(images, "lpimg"):
        t0 = time.perf_counter()
        enc = codec.encoder(img)
        layers = enc.encode_all()
        times["encode_s"].append(time.perf_counter() - t0)
        dec = codec.decoder(enc.header)
        total = 0
        strip = []
        for spec, data in layers:
            dec.apply(spec, data)
            total += len(data)
            t1 = time.perf_counter()
            rec = dec.reconstruct()
            last = time.perf_counter() - t1
            kind, plane = pass_kind(spec.index, enc.header.top_plane)
            # label: (plane, its kind's place in _KIND_ORDER) sorts coarse to fine as
            # (-plane, kind)
            points[(plane, _KIND_ORDER.index(kind))].append(
                (name, total, psnr(rec, img), msssim(rec, img)))
            strip.append((total, rec))
        times["decode_s"].append(last)  # the full decode: one reconstruction of all layers
        strips[name] = strip
    return points, times, strips


def measure_baselines(images, progress) -> dict[str, list[dict]]:  # noqa: ANN001
    results: dict[str, list[dict]] = {}
    for base in BASELINES:
        rows = []
        for setting in progress(base.settings, base.name):
            sizes, ps, ms = [], [], []
            for _, img in images:
                data = base.encode(Image.fromarray(img), setting)
                rec = decode(data)
                sizes.append(bpp(len(data), img))
                ps.append(psnr(rec, img))
                ms.append(msssim(rec, img))
            rows.append({"setting": base.label(setting), "bpp": float(np.mean(sizes)),
                         "psnr": float(np.mean(ps)), "msssim": float(np.mean(ms))})
        results[base.name] = rows
    return results


def baseline_cache_key(images: list[tuple[str, np.ndarray]]) -> str:
    """What the baseline points depend on: the pictures, Pillow, the codecs' settings and the
    metrics (the source of the two modules that define them). Any change is a new key."""
    import hashlib

    import PIL

    from lpimg.bench import baselines as baselines_module
    from lpimg.bench import metrics as metrics_module

    h = hashlib.sha256(b"lpimg-rd-baselines-v1")
    h.update(PIL.__version__.encode())
    for module in (baselines_module, metrics_module):
        h.update(Path(module.__file__).read_bytes())
    for name, img in images:
        h.update(name.encode())
        h.update(np.asarray(img.shape, np.int64).tobytes())
        h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    import os

    root = os.environ.get("LPIMG_CACHE_DIR") or Path.home() / ".cache" / "lpimg"
    return Path(root) / "rd-baselines"


def cached_baselines(images, progress, use_cache: bool = True) -> tuple[dict, str]:  # noqa: ANN001
    """The baselines' points, and "hit", "miss" or "off". They do not depend on lpimg's model,
    so comparing models need not re-encode the 24 pictures 40 times (most of the run's time)."""
    if not use_cache:
        return measure_baselines(images, progress), "off"
    path = cache_dir() / f"{baseline_cache_key(images)}.json"
    try:
        return json.loads(path.read_text()), "hit"
    except (OSError, ValueError):
        pass
    result = measure_baselines(images, progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: measured, just not kept
    return result, "miss"


def _in_range(rows: list[dict]) -> list[dict]:
    return [r for r in rows if BD_RANGE[0] <= r["bpp"] <= BD_RANGE[1]]


def _bd(rows_a: list[dict], rows_b: list[dict]) -> dict[str, float | None]:
    """BD-rates (MS-SSIM in dB, PSNR) of curve A against curve B over BD_RANGE."""
    a, b = _in_range(rows_a), _in_range(rows_b)
    return {
        "msssim": bd_rate([r["bpp"] for r in a], [msssim_db(r["msssim"]) for r in a],
                          [r["bpp"] for r in b], [msssim_db(r["msssim"]) for r in b]),
        "psnr": bd_rate([r["bpp"] for r in a], [r["psnr"] for r in a],
                        [r["bpp"] for r in b], [r["psnr"] for r in b]),
    }


def whole_plane_rows(rows: list[dict]) -> list[dict]:
    """The points where every position knows the same planes: after a significance pass's last
    quarter (``sig5v``) or a refinement pass (``ref5``). The quarter points in between are states
    of mixed precision; BD-rates over these alone show whether they help or hurt."""
    return [r for r in rows if r["pass"].endswith("v") or r["pass"].startswith("ref")]


def lpimg_rows(points: dict, images: list[tuple[str, np.ndarray]]) -> list[dict]:
    """Mean bpp, PSNR and MS-SSIM per absolute pass, coarse to fine."""
    from lpimg.codec.bitplane import kind_name

    n = len(images)
    pixels = {name: img.shape[0] * img.shape[1] for name, img in images}
    rows = []
    for (plane, kind), vals in sorted(points.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        # images whose top plane is below this pass contribute their empty prefix: skip the
        # label unless every image has it, so means are over the same set of images
        if len(vals) != n:
            continue
        rows.append({
            "pass": kind_name(_KIND_ORDER[kind], plane),
            "bpp": float(np.mean([8 * v[1] / pixels[v[0]] for v in vals])),
            "psnr": float(np.mean([v[2] for v in vals])),
            "msssim": float(np.mean([v[3] for v in vals])),
        })
    return rows


def run(folder: str, model: str = DEFAULT_MODEL, limit: int | None = None,
        show_progress: bool = True, baselines: bool = True, use_cache: bool = True,
        versus: list[str] | None = None) -> dict:
    """``versus``: other lpimg models (names or weights files) to measure on the same pictures
    and give BD-rates against (is a new model better than the shipped one?)."""
    from lpimg.codec.pipeline import LearnedCodec

    def progress(items, desc):  # noqa: ANN001, ANN202
        if not show_progress:
            return items
        from tqdm import tqdm

        return tqdm(items, desc=desc, leave=False)

    codec = LearnedCodec.load(model)
    others = [LearnedCodec.load(m) for m in versus or []]  # a bad name fails before any work
    images = _images(folder, limit)
    n = len(images)
    points, times, strips = measure_lpimg(codec, images, progress)
    lp_rows = lpimg_rows(points, images)
    result: dict = {
        "images": n, "folder": str(folder), "model": codec.name,
        "model_id": f"{codec.model_id:#06x}",
        "lpimg": lp_rows,
        "lpimg_timing": {"encode_s_mean": float(np.mean(times["encode_s"])),
                         "decode_s_mean": float(np.mean(times["decode_s"])),
                         "image_size": f"{images[0][1].shape[1]}x{images[0][1].shape[0]}"},
        "layer_boundaries_in_0.05_0.5_bpp": sum(1 for r in lp_rows if 0.05 <= r["bpp"] <= 0.5),
    }
    if baselines:
        base, cache = cached_baselines(images, progress, use_cache)
        result["baselines"] = base
        result["baselines_cache"] = cache
        result["bd_rate_percent"] = {name: _bd(lp_rows, rows) for name, rows in base.items()}
        result["bd_rate_percent_whole_planes"] = {
            name: _bd(whole_plane_rows(lp_rows), rows) for name, rows in base.items()}
    if others:
        result["versus"] = {}
        for other in others:
            rows = lpimg_rows(measure_lpimg(other, images, progress)[0], images)
            result["versus"][f"{other.name} {other.model_id:#06x}"] = {
                "lpimg": rows, "bd_rate_percent": _bd(lp_rows, rows)}
    result["_strips"] = strips
    return result


def plot(result: dict, path: str, strip_image: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strips = result["_strips"]
    name = strip_image if strip_image in strips else sorted(strips)[0]
    strip = strips[name]
    picks = strip[:: max(1, len(strip) // 6)][:6]
    fig = plt.figure(figsize=(15, 8.5))
    grid = fig.add_gridspec(2, max(2, len(picks)), height_ratios=[1.4, 1])
    half = max(2, len(picks)) // 2
    ax1 = fig.add_subplot(grid[0, :half])
    ax2 = fig.add_subplot(grid[0, half:])
    curves = {"lpimg": result["lpimg"], **result.get("baselines", {})}
    for label, rows in curves.items():
        xs = [r["bpp"] for r in rows]
        style = "o-" if label == "lpimg" else ".--"
        ax1.plot(xs, [r["psnr"] for r in rows], style, label=label, lw=2 if label == "lpimg" else 1)
        ax2.plot(xs, [r["msssim"] for r in rows], style, label=label, lw=2 if label == "lpimg" else 1)
    for ax, ylab in ((ax1, "PSNR (dB, RGB)"), (ax2, "MS-SSIM")):
        ax.set_xlim(0, 0.7)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3)
        ax.legend()
    ax2.set_ylim(0.6, 1.0)
    ax1.set_title(f"{result['folder']} ({result['images']} images)")
    ax2.set_title("every lpimg point is a layer prefix of one stream")
    for i, (nbytes, rec) in enumerate(picks):
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(rec)
        ax.set_title(f"{nbytes} B", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{result['model']} ({result['model_id']}): {name} after successive layers (bottom)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rd", help="rate-distortion against JPEG, WebP, JPEG 2000, AVIF")
    p.add_argument("--images", default="../shared/data/kodak")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--no-cache", action="store_true",
                   help="measure the baselines again even if this machine has them for these pictures "
                        "(cache: $LPIMG_CACHE_DIR or ~/.cache/lpimg)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", help="write the RD plot and a reconstruction strip here (PNG)")
    p.add_argument("--strip-image", default="kodim23.png")
    p.add_argument("--versus", nargs="+", metavar="MODEL",
                   help="other lpimg models (names or weights files): BD-rates of --model against them")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    import sys

    result = run(args.images, args.model, args.limit, show_progress=sys.stderr.isatty(),
                 baselines=not args.no_baselines, use_cache=not args.no_cache, versus=args.versus)
    if args.plot:
        plot(result, args.plot, args.strip_image)
    result.pop("_strips")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"lpimg {result['model']} on {result['folder']} ({result['images']} images)")
    print(f"{'codec':<10} {'point':<9} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8}")
    for r in result["lpimg"]:
        print(f"{'lpimg':<10} {r['pass']:<9} {r['bpp']:>7.3f} {r['psnr']:>7.2f} {r['msssim']:>8.4f}")
    for name, rows in result.get("baselines", {}).items():
        for r in rows:
            print(f"{name:<10} {r['setting']:<9} {r['bpp']:>7.3f} {r['psnr']:>7.2f} {r['msssim']:>8.4f}")
    fmt = lambda v: "n/a" if v is None else f"{v:+.1f} %"  # noqa: E731
    for name, bd in result.get("bd_rate_percent", {}).items():
        print(f"BD-rate vs {name:<9} MS-SSIM {fmt(bd['msssim'])}  PSNR {fmt(bd['psnr'])}")
    for name, bd in result.get("bd_rate_percent_whole_planes", {}).items():
        print(f"  whole planes only, vs {name:<9} MS-SSIM {fmt(bd['msssim'])}  PSNR {fmt(bd['psnr'])}")
    for name, other in result.get("versus", {}).items():
        bd = other["bd_rate_percent"]
        print(f"BD-rate vs lpimg {name}: MS-SSIM {fmt(bd['msssim'])}  PSNR {fmt(bd['psnr'])}")
    t = result["lpimg_timing"]
    print(f"encode {t['encode_s_mean']:.3f} s, decode {t['decode_s_mean']:.3f} s per "
          f"{t['image_size']} image")
    return 0
