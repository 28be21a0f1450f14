"""Would a cross-channel context shrink the first layer enough? (It would not: about 5 %.)

The top plane's phase A (the first layer when this was measured, now the first two: its quarters)
codes the top plane's significance at the (x + y)-even positions. No significance is known before
it, so its contexts (spec/PROTOCOL.md 10.2) reduce to one probability per channel
and plane. If the channels were coded in G groups, each group could see how many channels of
the earlier groups became significant at the same position. This script measures the ideal gain
on training pictures (never Kodak): the empirical entropy of those decisions per channel, and per
channel and context (0..3 significant channels earlier), each with its in-sample probabilities
(an optimistic bound for fitted tables). Signs and the coder's flush come on top, unchanged.

    .venv/bin/python docs/experiments/cross_channel_first_pass.py [TRAIN_DIR] [GROUPS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from lpimg.bench.speed import _fit
from lpimg.codec.pipeline import LearnedCodec

LEVELS = 4


def _bits(n: np.ndarray, k: np.ndarray) -> float:
    p = np.clip(k / np.maximum(n, 1), 1e-6, 1 - 1e-6)
    return float(-(k * np.log2(p) + (n - k) * np.log2(1 - p)).sum())


def main(folder: str = "../shared/data/train", groups: str = "4") -> None:
    g_count = int(groups)
    codec = LearnedCodec.load()
    paths = sorted(p for p in Path(folder).rglob("*.jpg") if "kodak" not in str(p).lower())[::6][:40]
    c = codec.channels
    group = np.arange(c) * g_count // c
    n_c, k_c = np.zeros(c), np.zeros(c)
    n_cx, k_cx = np.zeros((c, LEVELS)), np.zeros((c, LEVELS))
    images = 0
    for path in paths:
        img = np.asarray(Image.open(path).convert("RGB"))
        if min(img.shape[:2]) < 200:
            continue
        q = codec.encoder(_fit(img, 640, 480)).latents
        top = int(np.abs(q).max()).bit_length() - 1
        yy, xx = np.indices(q.shape[1:])
        sig = (np.abs(q) >= (1 << top))[:, (xx + yy) % 2 == 0]  # (C, phase A positions)
        ctx = np.zeros(sig.shape, np.int64)
        for g in range(1, g_count):
            ctx[group == g] = np.minimum(sig[group < g].sum(0), LEVELS - 1)[None]
        n_c += sig.shape[1]
        k_c += sig.sum(1)
        for v in range(LEVELS):
            at = ctx == v
            n_cx[:, v] += at.sum(1)
            k_cx[:, v] += (sig & at).sum(1)
        images += 1
    base, with_ctx = _bits(n_c, k_c), _bits(n_cx, k_cx)
    print(f"{images} pictures at 640x480: first-layer significance {base / images / 8:.0f} B per picture "
          f"with one probability per channel, {with_ctx / images / 8:.0f} B with {g_count} channel "
          f"groups ({(with_ctx - base) / base * 100:+.1f} %); {k_c.sum() / images:.0f} significant elements")


if __name__ == "__main__":
    main(*sys.argv[1:])
