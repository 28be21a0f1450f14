"""Would a first layer of a quarter of the positions give every 640x480 photo a 500-byte preview?

An experiment for the next change of the intra layer layout, not a benchmark of what ships.
Today a stream's first layer is phase A of the top plane's significance pass (the (x + y)-even
latent positions); 4 of the 24 Kodak crops have a first layer over 500 bytes (`lpimg bench
preview`). Splitting that phase in two (x and y both even, then x and y both odd) would put about
half of its significant elements, and so about half of its bytes, in a layer of its own. This
script estimates that layer's bytes (the first layer's bytes times the share of its significant
elements at the quarter positions) and decodes the quarter state with the shipped synthesis,
which was never trained on it (`lpimg train --phase-prefixes` gives it checkerboard halves only).

    .venv/bin/python docs/experiments/quarter_first_layer.py [KODAK_DIR]
"""

from __future__ import annotations

import sys

import numpy as np

from lpimg.bench.metrics import msssim
from lpimg.bench.rd import _images
from lpimg.bench.speed import _fit
from lpimg.codec.pipeline import LearnedCodec


def main(folder: str = "../shared/data/kodak") -> None:
    codec = LearnedCodec.load()
    rows = []
    for name, full in _images(folder, None):
        img = _fit(full, 640, 480)
        enc = codec.encoder(img)
        first_bytes = len(enc.encode_all(limit=1)[0][1])
        q, top = enc.latents, enc.header.top_plane
        yy, xx = np.indices(q.shape[1:])
        half = (xx + yy) % 2 == 0
        quarter = (xx % 2 == 0) & (yy % 2 == 0)
        significant = np.abs(q) >= (1 << top)
        share = significant[:, quarter].sum() / max(1, significant[:, half].sum())
        m_half = msssim(img, codec.synthesize(q, half.astype(np.int64), top, 640, 480))
        m_quarter = msssim(img, codec.synthesize(q, quarter.astype(np.int64), top, 640, 480))
        rows.append((first_bytes, first_bytes * share, m_half, m_quarter))
        print(f"{name}: first layer {first_bytes} B, MS-SSIM {m_half:.3f}; quarter layer about "
              f"{first_bytes * share:.0f} B, MS-SSIM {m_quarter:.3f}", flush=True)
    r = np.array(rows)
    print(f"mean: first layer {r[:, 0].mean():.0f} B at {r[:, 2].mean():.3f}; quarter layer "
          f"{r[:, 1].mean():.0f} B at {r[:, 3].mean():.3f}; largest quarter layer {r[:, 1].max():.0f} B; "
          f"first layers over 500 B: {(r[:, 0] > 500).sum()}, quarter layers: {(r[:, 1] > 500).sum()}")


if __name__ == "__main__":
    main(*sys.argv[1:])
