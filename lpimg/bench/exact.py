"""``lpimg bench exact``: do the three encoders agree on every latent integer?

The PyTorch integer path, the numpy integer reference and onnxruntime on the exported QDQ model
must produce identical latents, tile by tile, or a device port could not be trusted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError


def run(folder: str, model: str = DEFAULT_MODEL, limit: int | None = None) -> dict:
    from lpimg.codec.export import export_onnx, onnx_latents
    from lpimg.codec.image import load_image
    from lpimg.codec.intref import IntegerAnalysis
    from lpimg.codec.pipeline import LearnedCodec
    from lpimg.codec.tiling import encode_tiled, pad_image

    codec = LearnedCodec.load(model)
    ref = IntegerAnalysis.from_model(codec.model.analysis)
    paths = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in {".png", ".jpg"})[:limit]
    if not paths:
        raise LpimgError(f"no images in {folder}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(codec.model.analysis, Path(tmp) / "analysis.onnx")
        import onnxruntime as ort

        # one session for every tile (run_onnx would rebuild it per call)
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

        def onnx_tile(tile: np.ndarray) -> np.ndarray:
            out = sess.run(None, {"image": np.ascontiguousarray(tile.transpose(2, 0, 1))[None]})[0]
            return onnx_latents(out)

        for path in paths:
            img = load_image(path)
            t0 = time.perf_counter()
            torch_q = codec.analyse(img, tiled=True)
            t1 = time.perf_counter()
            numpy_q = ref.forward(img)
            t2 = time.perf_counter()
            onnx_q = encode_tiled(pad_image(img), codec.channels, onnx_tile)
            t3 = time.perf_counter()
            rows.append({
                "image": path.name, "latents": int(torch_q.size),
                "numpy_equal": bool(np.array_equal(torch_q, numpy_q)),
                "onnx_equal": bool(np.array_equal(torch_q, onnx_q)),
                "numpy_mismatches": int((torch_q != numpy_q).sum()),
                "onnx_mismatches": int((torch_q != onnx_q).sum()),
                "torch_s": t1 - t0, "numpy_s": t2 - t1, "onnx_s": t3 - t2,
            })
    return {
        "model": codec.name, "model_id": f"{codec.model_id:#06x}", "images": len(rows),
        "all_numpy_equal": all(r["numpy_equal"] for r in rows),
        "all_onnx_equal": all(r["onnx_equal"] for r in rows),
        "rows": rows,
    }


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exact", help="PyTorch vs numpy reference vs onnxruntime latents")
    p.add_argument("--images", default="../shared/data/kodak")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    result = run(args.images, args.model, args.limit)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for r in result["rows"]:
            print(f"{r['image']:<16} numpy {'==' if r['numpy_equal'] else '!='}  "
                  f"onnx {'==' if r['onnx_equal'] else '!='}  ({r['latents']} latents)")
        print(f"all equal: numpy {result['all_numpy_equal']}, onnx {result['all_onnx_equal']} "
              f"over {result['images']} images")
    return 0 if result["all_numpy_equal"] and result["all_onnx_equal"] else 1
