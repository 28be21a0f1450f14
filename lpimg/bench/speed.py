"""``lpimg bench speed``: encode and decode time of one picture at a given size, against the targets.

``bench rd`` times whole Kodak images (768x512) while it also runs four classical codecs; this
benchmark answers the product question directly: how long does a 640x480 photo take to encode
(the whole-image integer path a gateway or desktop runs, and the KPU-tiled path a device
emulation runs) and to decode, the full stream and progressively (a reconstruction after every
layer, as the server shows it). Each figure is the median of ``--repeat`` runs per image, so one
scheduler hiccup does not decide it. Pictures are centre crops (or upscales, for smaller inputs)
of the images in ``--images`` to exactly ``--size``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import numpy as np

from lpimg.codec.shipped import DEFAULT_MODEL

ENCODE_TARGET_S = 0.5  # issue 3: encode a 640x480 image in at most 0.5 s on the 2-core CPU
DECODE_TARGET_S = 1.0  # ... and decode it in at most 1 s


def _fit(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre crop to width x height, upscaling first when the image is smaller."""
    from PIL import Image

    h, w = img.shape[:2]
    if w < width or h < height:
        scale = max(width / w, height / h)
        img = np.asarray(Image.fromarray(img).resize((round(w * scale + 0.5), round(h * scale + 0.5)),
                                                     Image.Resampling.LANCZOS))
        h, w = img.shape[:2]
    y0, x0 = (h - height) // 2, (w - width) // 2
    return np.ascontiguousarray(img[y0:y0 + height, x0:x0 + width])


def _median_time(repeat: int, fn, *args) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _encode(codec, img: np.ndarray) -> None:  # noqa: ANN001
    """The encoder's work: integer analysis of the whole picture, then every layer coded."""
    codec.encoder(img).encode_all()


def _decode(codec, header, layers: list, every_layer: bool) -> None:  # noqa: ANN001
    """The server's work: apply the layers, reconstructing after each one or only at the end."""
    dec = codec.decoder(header)
    for spec, data in layers:
        dec.apply(spec, data)
        if every_layer:
            dec.reconstruct()
    if not every_layer:
        dec.reconstruct()


def run(folder: str, size: tuple[int, int] = (640, 480), model: str = DEFAULT_MODEL,
        limit: int | None = 4, repeat: int = 3, progress: bool = False) -> dict:
    import torch

    from lpimg.bench.rd import _images
    from lpimg.codec.pipeline import LearnedCodec

    width, height = size
    codec = LearnedCodec.load(model)
    images = _images(folder, limit)  # (name, picture), or a clear error for an empty folder
    rows = []
    items = images
    if progress:
        from tqdm import tqdm

        items = tqdm(images, desc="bench speed")
    for name, full in items:
        img = _fit(full, width, height)

        enc = codec.encoder(img)
        layers = enc.encode_all()

        rows.append({
            "image": name,
            "bytes": sum(len(d) for _, d in layers),
            "layers": len(layers),
            "encode_s": _median_time(repeat, _encode, codec, img),
            "analysis_tiled_s": _median_time(repeat, functools.partial(codec.analyse, tiled=True), img),
            "decode_s": _median_time(repeat, _decode, codec, enc.header, layers, False),
            "decode_every_layer_s": _median_time(
                max(1, repeat // 2), _decode, codec, enc.header, layers, True),
        })
    encode_max = max(r["encode_s"] for r in rows)
    decode_max = max(r["decode_s"] for r in rows)
    return {
        "model": codec.name, "model_id": f"{codec.model_id:#06x}", "size": f"{width}x{height}",
        "images": len(rows), "repeat": repeat, "torch_threads": torch.get_num_threads(),
        "encode_s_mean": statistics.mean(r["encode_s"] for r in rows), "encode_s_max": encode_max,
        "decode_s_mean": statistics.mean(r["decode_s"] for r in rows), "decode_s_max": decode_max,
        "encode_target_s": ENCODE_TARGET_S, "decode_target_s": DECODE_TARGET_S,
        "pass": encode_max <= ENCODE_TARGET_S and decode_max <= DECODE_TARGET_S,
        "per_image": rows,
    }


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, not {text!r}") from None
    if not (16 <= w <= 4080 and 16 <= h <= 4080):
        raise argparse.ArgumentTypeError(f"size {w}x{h} outside 16..4080 on each side")
    return w, h


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("speed", help="encode/decode time at a given size against the targets")
    p.add_argument("--images", default="../shared/data/kodak")
    p.add_argument("--size", type=_size, default=(640, 480), help="WxH (default 640x480)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or weights file")
    p.add_argument("--limit", type=int, default=4, help="images to time (default 4)")
    p.add_argument("--repeat", type=int, default=3, help="runs per image; the median counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    result = run(args.images, args.size, args.model, args.limit, args.repeat, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']} ({result['model_id']}) at {result['size']}, {result['images']} images, "
          f"median of {result['repeat']}, {result['torch_threads']} torch threads")
    for r in result["per_image"]:
        print(f"  {r['image']:14s} encode {r['encode_s']:.3f} s "
              f"(tiled analysis {r['analysis_tiled_s']:.3f} s)"
              f"  decode {r['decode_s']:.3f} s  every-layer decode {r['decode_every_layer_s']:.3f} s"
              f"  ({r['layers']} layers, {r['bytes']} B)")
    verdict = "PASS" if result["pass"] else "FAIL"
    print(f"{verdict}: encode max {result['encode_s_max']:.3f} s (target {ENCODE_TARGET_S} s), "
          f"decode max {result['decode_s_max']:.3f} s (target {DECODE_TARGET_S} s)")
    return 0
