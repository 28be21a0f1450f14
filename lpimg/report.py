"""Self-contained HTML reports: people would rather look at the pictures than read the numbers.

Everything (images, plot) is inlined as base64, so a report is one file that can be mailed,
archived or opened from a CI artefact without a server.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class LayerRow:
    """One row of the per-layer table and its pictures."""

    layer: int
    label: str
    layer_bytes: int
    cumulative_bytes: int
    airtime_s: float
    arrival_s: float
    psnr: float
    msssim: float
    image: np.ndarray
    jpeg_quality: int | None = None
    jpeg_bytes: int | None = None
    jpeg_psnr: float | None = None
    jpeg_msssim: float | None = None
    jpeg_image: np.ndarray | None = None
    # the encoded files, where the caller already has them: the JPEG's own bytes (not a PNG of
    # its decoding, which would be larger and is not what was compared) and the PNG it wrote
    jpeg_data: bytes | None = None
    png_data: bytes | None = None


def png_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def png_data_uri(image: np.ndarray | bytes, fmt: str = "PNG") -> str:
    if isinstance(image, bytes):
        data, mime = image, "image/jpeg" if fmt == "JPEG" else "image/png"
    else:
        data, mime = png_bytes(image, fmt), f"image/{fmt.lower()}"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def rd_plot_png(rows: Sequence[LayerRow], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    xb = [r.cumulative_bytes for r in rows]
    a1.plot(xb, [r.msssim for r in rows], "o-", label="lpimg (layer prefixes)", lw=2)
    jp = [r for r in rows if r.jpeg_bytes is not None]
    if jp:
        a1.plot([r.jpeg_bytes for r in jp], [r.jpeg_msssim for r in jp], "s--",
                label="JPEG at the same bytes")
    a1.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    a1.xaxis.set_minor_formatter(NullFormatter())
    a1.set_xlabel("bytes received")
    a1.set_ylabel("MS-SSIM")
    a1.grid(alpha=0.3)
    a1.legend()
    a2.plot([r.airtime_s for r in rows], [r.psnr for r in rows], "o-", lw=2, label="lpimg")
    if jp:
        a2.plot([r.airtime_s for r in jp], [r.jpeg_psnr for r in jp], "s--",
                label="JPEG at the same bytes")
    a2.set_xlabel("uplink time on air (s)")
    a2.set_ylabel("PSNR (dB)")
    a2.grid(alpha=0.3)
    a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _fmt(v: float | int | None, spec: str) -> str:
    return "&ndash;" if v is None else format(v, spec)


def render(title: str, summary: dict[str, str], rows: Sequence[LayerRow],
           original: np.ndarray, plot_png: bytes, notes: Sequence[str] = ()) -> str:
    esc = html.escape
    head = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary.items())
    table_rows = []
    for r in rows:
        table_rows.append(
            f"<tr><td>{r.layer}</td><td>{esc(r.label)}</td><td>{r.layer_bytes}</td>"
            f"<td>{r.cumulative_bytes}</td><td>{r.airtime_s:.1f}</td><td>{r.arrival_s:.0f}</td>"
            f"<td>{r.psnr:.2f}</td><td>{r.msssim:.4f}</td>"
            f"<td>{_fmt(r.jpeg_quality, 'd')}</td><td>{_fmt(r.jpeg_bytes, 'd')}</td>"
            f"<td>{_fmt(r.jpeg_psnr, '.2f')}</td><td>{_fmt(r.jpeg_msssim, '.4f')}</td></tr>")
    figures = []
    for r in rows:
        if r.jpeg_image is None:
            jpeg = "<figure class='none'><div>no JPEG fits in this many bytes</div></figure>"
        else:
            theirs = png_data_uri(r.jpeg_data, "JPEG") if r.jpeg_data else png_data_uri(r.jpeg_image)
            jpeg = (f"<figure><img src='{theirs}'><figcaption>JPEG q{r.jpeg_quality}, "
                    f"{r.jpeg_bytes} B, MS-SSIM {r.jpeg_msssim:.3f}</figcaption></figure>")
        ours = png_data_uri(r.png_data or r.image)
        figures.append(
            f"<div class='pair'><figure><img src='{ours}'><figcaption>lpimg after "
            f"layer {r.layer} ({esc(r.label)}): {r.cumulative_bytes} B, {r.airtime_s:.1f} s on air, "
            f"MS-SSIM {r.msssim:.3f}</figcaption></figure>{jpeg}</div>")
    note_html = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }}
.summary th {{ text-align: left; }}
.pair {{ display: flex; gap: 12px; margin-bottom: 14px; }}
figure {{ margin: 0; }}
figure img {{ max-width: 560px; width: 100%; image-rendering: auto; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.85em; color: #555; }}
.none div {{ width: 300px; height: 100px; display: flex; align-items: center; justify-content: center;
  background: #f6f6f6; color: #999; border: 1px dashed #ccc; }}
</style></head><body>
<h1>{esc(title)}</h1>
<table class="summary">{head}</table>
<img src="data:image/png;base64,{base64.b64encode(plot_png).decode()}" alt="rate-distortion plot">
<h2>Layer by layer</h2>
<table><tr><th>layer</th><th>pass</th><th>bytes</th><th>total bytes</th><th>time on air (s)</th>
<th>arrived at (s)</th><th>PSNR</th><th>MS-SSIM</th><th>JPEG q</th><th>JPEG bytes</th>
<th>JPEG PSNR</th><th>JPEG MS-SSIM</th></tr>{''.join(table_rows)}</table>
<ul>{note_html}</ul>
<h2>What the server saw</h2>
{''.join(figures)}
<h2>Original</h2>
<figure><img src="{png_data_uri(original)}"></figure>
</body></html>
"""
