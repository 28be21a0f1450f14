"""``lpimg bench colour``: does the codec carry every colour axis, or only some?

lpimg-b1 turned greens grey: its reconstructions kept luminance and the red-blue axis but not
green-magenta, the lowest-variance colour axis of photographs. PSNR and MS-SSIM averaged over RGB
hide that; this benchmark names it. For each image it decodes the full stream (every bitplane:
the latent integers themselves) and correlates input and output along three opponent axes:
luminance (R+G+B)/3, red-blue R-B and green-magenta G-(R+B)/2. A codec that carries an axis
scores near 1 on it; one that drops it scores near 0. It accepts training runs and checkpoints
as well as shipped weights, so a run can be checked while it trains.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError

AXES = {
    "luminance": np.array([1 / 3, 1 / 3, 1 / 3]),
    "red_blue": np.array([1.0, 0.0, -1.0]),
    "green_magenta": np.array([-0.5, 1.0, -0.5]),
}


def _model(name_or_path: str):  # noqa: ANN202
    """A float :class:`lpimg.codec.model.Codec` from shipped weights, a weights file, a checkpoint
    or a (packed) run directory."""
    from lpimg.codec.pipeline import WEIGHTS_DIR
    from lpimg.codec.release import load_trained_model

    path = Path(name_or_path)
    if not path.exists() and not path.suffix:
        path = WEIGHTS_DIR / f"{name_or_path}.pt"
    if not path.exists():
        raise LpimgError(f"no model, checkpoint or run directory at {name_or_path!r}")
    return load_trained_model(path)


def run(folder: str, model: str = DEFAULT_MODEL, limit: int | None = None, crop: int = 256) -> dict:
    import torch

    from lpimg.codec.image import load_image
    from lpimg.codec.quant import LATENT_QMAX

    codec = _model(model)
    codec.analysis.quantize = True  # the deployed int8 encoder
    paths = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    paths = paths[:limit]
    if not paths:
        raise LpimgError(f"no images in {folder}")
    inputs, outputs = [], []
    with torch.no_grad():
        for p in paths:
            img = load_image(p)
            h, w = img.shape[:2]
            y0, x0 = (h - min(h, crop)) // 2, (w - min(w, crop)) // 2
            img = img[y0:y0 + crop, x0:x0 + crop]
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
            y = torch.clamp(torch.round(codec.analysis(x)), -LATENT_QMAX, LATENT_QMAX)
            rec = codec.synthesis(y).clamp(0, 1)
            inputs.append(x[0].reshape(3, -1).numpy().T)
            outputs.append(rec[0].reshape(3, -1).numpy().T)
    a, b = np.concatenate(inputs), np.concatenate(outputs)
    result: dict = {"model": str(model), "images": len(paths), "crop": crop, "axes": {}}
    for name, axis in AXES.items():
        u, v = a @ axis, b @ axis
        result["axes"][name] = {
            "correlation": float(np.corrcoef(u, v)[0, 1]),
            "std_in": float(u.std()),
            "std_out": float(v.std()),
            "rmse": float(np.sqrt(np.mean((u - v) ** 2))),
        }
    return result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("colour", help="input/output correlation per colour axis (full stream)")
    p.add_argument("--images", default="../shared/data/kodak")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="shipped model name, weights file, checkpoint.pt or (packed) run directory")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--crop", type=int, default=256, help="centre crop side (keeps it fast)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    result = run(args.images, args.model, args.limit, args.crop)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']}: {result['images']} images, full stream, {result['crop']} px centre crops")
    for name, row in result["axes"].items():
        print(f"  {name:14s} correlation {row['correlation']:6.3f}   std in {row['std_in']:.3f} "
              f"out {row['std_out']:.3f}   rmse {row['rmse']:.3f}")
    return 0
