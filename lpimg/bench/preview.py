"""``lpimg bench preview``: what a server has after the first few hundred bytes of a photo.

The codec's promise at the low end: the first layers of a 640x480 photo give a recognisable
preview within 500 bytes. For each image (centre crop, or upscale then crop, to ``--size``) this
counts the longest prefix of whole layers whose coded bytes fit in ``--budget`` and reports that
prefix's bytes, PSNR and MS-SSIM, next to the first layer alone (which may not fit). Layer bytes
are the codec's payload; the protocol adds its own few bytes per fragment (``lpimg bench link``).
"""

from __future__ import annotations

import argparse
import json
import statistics

from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError


def run(folder: str, size: tuple[int, int] = (640, 480), budget: int = 500, model: str = DEFAULT_MODEL,
        limit: int | None = None, progress: bool = False, strip: str | None = None,
        strip_images: tuple[str, ...] = ()) -> dict:
    from lpimg.bench.metrics import msssim, psnr
    from lpimg.bench.rd import _images
    from lpimg.bench.speed import _fit
    from lpimg.codec.pipeline import LearnedCodec

    width, height = size
    codec = LearnedCodec.load(model)
    images = _images(folder, limit)  # (name, picture), or a clear error for an empty folder
    items = images
    if progress:
        from tqdm import tqdm

        items = tqdm(images, desc="bench preview")
    rows = []
    pictures = []
    for name, full in items:
        img = _fit(full, width, height)
        enc = codec.encoder(img)
        layers = enc.encode_all()
        dec = codec.decoder(enc.header)
        used, first = 0, None
        kept, quality = 0, None
        for spec, data in layers:
            if used + len(data) > budget and first is not None:
                break
            dec.apply(spec, data)
            used += len(data)
            rec = dec.reconstruct()
            q = {"bytes": used, "psnr": psnr(img, rec), "msssim": msssim(img, rec)}
            if first is None:
                first = q
            if used <= budget:
                kept, quality = kept + 1, q
        rows.append({"image": name, "first_layer": first, "layers_within_budget": kept,
                     "within_budget": quality})
        if strip and name in strip_images and kept:
            pictures.append((img, _decode_within(codec, enc, layers[:kept])))
    if strip:
        _write_strip(pictures, strip)
    fits = [r for r in rows if r["within_budget"] is not None]
    return {
        "model": codec.name, "model_id": f"{codec.model_id:#06x}", "size": f"{width}x{height}",
        "budget_bytes": budget, "images": len(rows),
        "images_with_a_preview_within_budget": len(fits),
        "first_layer_bytes_mean": statistics.mean(r["first_layer"]["bytes"] for r in rows),
        "first_layer_bytes_max": max(r["first_layer"]["bytes"] for r in rows),
        "first_layer_msssim_mean": statistics.mean(r["first_layer"]["msssim"] for r in rows),
        "within_budget_msssim_mean": (statistics.mean(r["within_budget"]["msssim"] for r in fits)
                                      if fits else None),
        "per_image": rows,
    }


def _decode_within(codec, enc, layers: list):  # noqa: ANN001, ANN201
    """The reconstruction from exactly these layers."""
    dec = codec.decoder(enc.header)
    for spec, data in layers:
        dec.apply(spec, data)
    return dec.reconstruct()


def _write_strip(pictures: list, path: str) -> None:
    """Original | preview, one row per image, at half size: what 500 bytes look like."""
    import numpy as np
    from PIL import Image

    if not pictures:
        raise LpimgError("--strip: none of the --strip-images has a preview within the budget")
    rows = [np.concatenate([a, b], axis=1) for a, b in pictures]
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    grid.resize((grid.width // 2, grid.height // 2), Image.Resampling.LANCZOS).save(path)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from lpimg.bench.speed import _size

    p = sub.add_parser("preview", help="the best preview within a byte budget (default 500 B at 640x480)")
    p.add_argument("--images", default="../shared/data/kodak")
    p.add_argument("--size", type=_size, default=(640, 480), help="WxH (default 640x480)")
    p.add_argument("--budget", type=int, default=500, help="bytes (default 500)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or weights file")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--strip", help="write original | preview side by side (PNG) for --strip-images")
    p.add_argument("--strip-images", nargs="+", default=["kodim01.png", "kodim03.png", "kodim12.png"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    if args.budget < 1:
        raise LpimgError("--budget must be at least 1 byte")
    result = run(args.images, args.size, args.budget, args.model, args.limit, progress=not args.json,
                 strip=args.strip, strip_images=tuple(args.strip_images))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']} ({result['model_id']}) at {result['size']}, budget {args.budget} B")
    for r in result["per_image"]:
        f, w = r["first_layer"], r["within_budget"]
        inside = (f"{r['layers_within_budget']} layers, {w['bytes']} B, MS-SSIM {w['msssim']:.3f}"
                  if w else "nothing fits")
        print(f"  {r['image']:14s} first layer {f['bytes']:5d} B MS-SSIM {f['msssim']:.3f} | {inside}")
    wb = result["within_budget_msssim_mean"]
    print(f"{result['images_with_a_preview_within_budget']}/{result['images']} images have a preview within "
          f"budget (mean MS-SSIM {wb:.3f})" if wb is not None else "no image has a preview within budget")
    print(f"first layer: mean {result['first_layer_bytes_mean']:.0f} B, "
          f"max {result['first_layer_bytes_max']} B, mean MS-SSIM {result['first_layer_msssim_mean']:.3f}")
    return 0
