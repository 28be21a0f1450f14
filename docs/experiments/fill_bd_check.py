"""Does ``fill_unknown`` move the BD-rate that issue 3 judges (MS-SSIM, 0.03-0.6 bpp)?

Usage: .venv/bin/python docs/experiments/fill_bd_check.py IMAGE_DIR [MODEL]
(``bash docs/experiments/selection_set.sh /tmp/sel`` makes the non-Kodak selection set;
4 min 41 s for its 24 pictures on one core, `make test` beside it.)

``fill_unknown_check.py`` found that the fill lowers the first layer's MSE but costs a little
MS-SSIM with lpimg-c12. Before dropping it, this asks whether it matters where the codec is
judged: it measures every layer prefix of every picture twice, as ``lpimg bench rd`` does (the
same grouping by absolute pass), with the fill and without, prints both curves side by side and
the BD-rates of "without" against "with".
"""
import json
import sys

from lpimg.bench import rd
from lpimg.codec.pipeline import LearnedCodec

codec = LearnedCodec.load(sys.argv[2]) if len(sys.argv) > 2 else LearnedCodec.load()
images = rd._images(sys.argv[1], None)
with_fill = rd.lpimg_rows(rd.measure_lpimg(codec, images, lambda items, desc: items)[0], images)
synthesize = LearnedCodec.synthesize
LearnedCodec.synthesize = lambda self, *a, **k: synthesize(self, *a, **{**k, "fill": False})
without = rd.lpimg_rows(rd.measure_lpimg(codec, images, lambda items, desc: items)[0], images)
print("pass      bpp   MS-SSIM fill / none   PSNR fill / none")
for a, b in zip(with_fill, without, strict=True):
    print(f"{a['pass']:6s} {a['bpp']:7.4f}   {a['msssim']:.4f} / {b['msssim']:.4f}"
          f"    {a['psnr']:5.2f} / {b['psnr']:5.2f}")
print("BD-rate of no fill against the fill, percent:", json.dumps(rd._bd(without, with_fill)))
