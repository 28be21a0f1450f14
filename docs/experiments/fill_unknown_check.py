"""Does filling the positions that know nothing after the first layer (``fill_unknown``) still pay?

Usage: .venv/bin/python docs/experiments/fill_unknown_check.py [MODEL]   (about 20 s)

On 13 non-Kodak pictures (the bundled photo, six fixed-camera frames, six training photographs;
256x320 top-left crops) it decodes the first layer with the fill (what the decoder does) and
without it (every unknown latent at the prior's expectation, the grey holes), and prints MSE and
MS-SSIM of both. The fill was introduced for lpimg-g2-era decoders; a synthesis that has learned
to render the holes itself may need it less.
"""
import glob
import sys

import numpy as np
import torch
from pytorch_msssim import ms_ssim

from lpimg.codec.image import load_image
from lpimg.codec.pipeline import LearnedCodec
from lpimg.demo import SAMPLE

codec = LearnedCodec.load(sys.argv[1]) if len(sys.argv) > 1 else LearnedCodec.load()
files = [str(SAMPLE)] + sorted(glob.glob("../shared/data/fixedcam/*"))[::100][:6] \
    + sorted(glob.glob("../shared/data/train/*/*"))[::60][:6]


def msssim(a: np.ndarray, b: np.ndarray) -> float:
    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]
    return float(ms_ssim(t(a), t(b), data_range=255.0))


rows = []
for f in files:
    img = load_image(f)
    h, w = min(img.shape[0], 256), min(img.shape[1], 320)
    img = img[:h, :w]
    enc = codec.encoder(img)
    dec = codec.decoder(enc.header)
    dec.apply(*enc.encode_all()[0])
    b = dec.bitplanes
    holes = codec.synthesize(b.q, b.coarse_passes, b.top, w, h, fill=False)
    filled = dec.reconstruct()
    mse = [float(np.mean((r.astype(float) - img) ** 2)) for r in (filled, holes)]
    rows.append(mse + [msssim(filled, img), msssim(holes, img)])
    print(f"{f.split('/')[-1]:>18}  MSE filled {mse[0]:6.0f} holes {mse[1]:6.0f}   "
          f"MS-SSIM filled {rows[-1][2]:.3f} holes {rows[-1][3]:.3f}")
m = np.mean(rows, axis=0)
print(f"{'mean':>18}  MSE filled {m[0]:6.0f} holes {m[1]:6.0f}   MS-SSIM filled {m[2]:.3f} holes {m[3]:.3f}")
