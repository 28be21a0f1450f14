"""``lpimg demo``: one picture, device and server in one process, over a simulated LoRaWAN link.

The device encodes the photo, the real protocol state machines carry its layers over the
simulated link (time on air, duty cycle, class A windows, loss), and the server decodes after
every layer. The result is a per-layer table (bytes, time on air, PSNR, MS-SSIM, and what JPEG
achieves with the same bytes) and a self-contained ``report.html`` with every reconstruction.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lpimg.errors import LpimgError

SAMPLE = Path(__file__).parent / "data" / "astronaut.png"
TOP_PLANE_KEY = 24
"""Manifest key (application range, >= 24) carrying the codec's top plane: the one piece of
the stream header the protocol's session descriptor does not already carry."""


@dataclass
class DemoResult:
    rows: list
    stats: dict
    out: Path


def _progress(total: int, desc: str, enabled: bool):  # noqa: ANN202
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def run_demo(image_path: str | Path | None = None, link: str = "lorawan-eu868:dr3",
             loss: float = 0.1, out: str | Path = "lpimg-demo", seed: int = 1,
             model: str = "lpimg-b1", layers: int | None = None, progress: bool = True) -> DemoResult:
    from lpimg.bench.baselines import decode as decode_jpeg
    from lpimg.bench.baselines import jpeg_at_most
    from lpimg.bench.metrics import msssim, psnr
    from lpimg.codec.bitplane import LayerSpec, pass_kind
    from lpimg.codec.image import load_image
    from lpimg.codec.pipeline import LearnedCodec, StreamHeader
    from lpimg.link.sim import IndependentLoss, SimLink, run_transfer
    from lpimg.protocol import DeviceSession, ServerProtocol
    from lpimg.protocol.events import LayerReceived
    from lpimg.report import LayerRow, rd_plot_png, render
    from lpimg.wire import Manifest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = Path(image_path) if image_path else SAMPLE
    image = load_image(path)
    h, w = image.shape[:2]
    codec = LearnedCodec.load(model)

    t0 = time.perf_counter()
    enc = codec.encoder(image)
    coded = enc.encode_all(layers)
    encode_s = time.perf_counter() - t0

    sim = SimLink.from_spec(link, uplink_loss=IndependentLoss(loss),
                            downlink_loss=IndependentLoss(loss), seed=seed)
    device = DeviceSession(
        seed & 0xFFFF, [data for _, data in coded], mtu=sim.profile.mtu, now=0.0,
        model_id=codec.model_id, geometry=(w, h),
        manifest=Manifest(capture_time=int(time.time()), extra={TOP_PLANE_KEY: enc.header.top_plane}),
    )
    server = ServerProtocol()
    bar = _progress(len(coded), f"sending over {link}", progress)

    def on_event(side: str, event: object, now: float) -> None:
        if side == "server" and isinstance(event, LayerReceived):
            bar.update(1)

    stats = run_transfer(device, server, sim, device_addr="demo-cam", until=30 * 86400.0,
                         on_event=on_event)
    bar.close()

    uplinks = [f for f in stats.frames if f.direction == "up"]
    header = StreamHeader(codec.model_id, w, h, enc.header.top_plane)
    dec = codec.decoder(header)
    rows: list[LayerRow] = []
    received = [(e.time_s, e.event) for e in stats.events
                if e.side == "server" and isinstance(e.event, LayerReceived)]
    cumulative = 0
    bar = _progress(len(received), "decoding", progress)
    decode_s = 0.0
    for arrival, event in received:
        spec = LayerSpec(event.pass_index, None)
        dec.apply(spec, event.data)
        t1 = time.perf_counter()
        rec = dec.reconstruct()
        decode_s = time.perf_counter() - t1
        cumulative += len(event.data)
        airtime = sum(f.airtime_s for f in uplinks if f.start_s <= arrival)
        kind, plane = pass_kind(event.pass_index, header.top_plane)
        row = LayerRow(event.index, f"{kind} plane {plane}", len(event.data), cumulative, airtime,
                       arrival, psnr(rec, image), msssim(rec, image), rec)
        jp = jpeg_at_most(image, cumulative)
        if jp is not None:
            data, q = jp
            jrec = decode_jpeg(data)
            row.jpeg_quality, row.jpeg_bytes = q, len(data)
            row.jpeg_psnr, row.jpeg_msssim, row.jpeg_image = psnr(jrec, image), msssim(jrec, image), jrec
            (out / f"jpeg_{event.index:02d}.jpg").write_bytes(data)
        Image.fromarray(rec).save(out / f"layer_{event.index:02d}.png")
        rows.append(row)
        bar.update(1)
    bar.close()
    if not rows:
        raise LpimgError(f"no layer arrived over {link} with {loss:.0%} loss: {stats.reason}")

    summary = {
        "picture": f"{path.name}, {w}x{h}",
        "model": f"{codec.name} (id {codec.model_id:#06x})",
        "link": f"{link}, {loss:.0%} loss each way, seed {seed}",
        "layers": f"{len(rows)} of {len(coded)} delivered ({stats.reason})",
        "payload": f"{cumulative} bytes ({8 * cumulative / (w * h):.3f} bpp)",
        "uplink": f"{stats.uplink_frames} frames, {stats.uplink_bytes} bytes, "
                  f"{stats.airtime_s:.1f} s on air",
        "downlink": f"{stats.downlink_frames} frames, {stats.downlink_bytes} bytes",
        "virtual duration": f"{stats.duration_s / 3600:.2f} h (duty cycle included)",
        "encode / decode": f"{encode_s:.2f} s / {decode_s:.2f} s on this machine",
    }
    plot = rd_plot_png(rows, f"{path.name} over {link}")
    (out / "rd.png").write_bytes(plot)
    notes = [
        "Each lpimg row is what the server could show once that layer had arrived; JPEG rows are "
        "the best JPEG (Pillow, optimize) no larger than the same number of payload bytes.",
        "Time on air counts every uplink frame sent until the layer arrived, retransmissions and "
        "protocol headers included.",
    ]
    (out / "report.html").write_text(render(f"lpimg demo: {path.name}", summary, rows, image,
                                            plot, notes))
    table = [{
        "layer": r.layer, "pass": r.label, "bytes": r.layer_bytes, "total_bytes": r.cumulative_bytes,
        "airtime_s": round(r.airtime_s, 2), "psnr": round(r.psnr, 2), "msssim": round(r.msssim, 4),
        "jpeg_quality": r.jpeg_quality, "jpeg_bytes": r.jpeg_bytes,
        "jpeg_psnr": None if r.jpeg_psnr is None else round(r.jpeg_psnr, 2),
        "jpeg_msssim": None if r.jpeg_msssim is None else round(r.jpeg_msssim, 4),
    } for r in rows]
    stats_dict = {k: v for k, v in stats.as_dict().items() if k not in ("events", "frames")}
    (out / "demo.json").write_text(json.dumps({"summary": summary, "layers": table,
                                               "transfer": stats_dict}, indent=2, default=str))
    return DemoResult(table, stats_dict, out)


def print_table(result: DemoResult) -> None:
    print(f"{'layer':>5} {'pass':<12} {'bytes':>6} {'total':>7} {'air s':>7} {'PSNR':>6} "
          f"{'MS-SSIM':>7} | {'JPEG q':>6} {'bytes':>6} {'PSNR':>6} {'MS-SSIM':>7}")
    for r in result.rows:
        jq = "-" if r["jpeg_quality"] is None else str(r["jpeg_quality"])
        jb = "-" if r["jpeg_bytes"] is None else str(r["jpeg_bytes"])
        jpsnr = "-" if r["jpeg_psnr"] is None else f"{r['jpeg_psnr']:.2f}"
        jms = "-" if r["jpeg_msssim"] is None else f"{r['jpeg_msssim']:.4f}"
        print(f"{r['layer']:>5} {r['pass']:<12} {r['bytes']:>6} {r['total_bytes']:>7} "
              f"{r['airtime_s']:>7.1f} {r['psnr']:>6.2f} {r['msssim']:>7.4f} | {jq:>6} {jb:>6} "
              f"{jpsnr:>6} {jms:>7}")
    s = result.stats
    print(f"uplink {s['uplink_frames']} frames / {s['uplink_bytes']} B, downlink "
          f"{s['downlink_frames']} frames, {s['airtime_s']:.1f} s on air, "
          f"{s['duration_s'] / 3600:.2f} h virtual; ended: {s['reason']}")
    print(f"report: {result.out / 'report.html'}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="send a photo over a simulated LoRaWAN link, write a report")
    p.add_argument("--image", help="picture to send (default: a bundled sample photo)")
    p.add_argument("--link", default="lorawan-eu868:dr3")
    p.add_argument("--loss", type=float, default=0.1, help="frame loss rate, each direction")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--layers", type=int, default=None, help="send only the first K layers")
    p.add_argument("--model", default="lpimg-b1")
    p.add_argument("--out", default="lpimg-demo")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    import sys

    result = run_demo(args.image, args.link, args.loss, args.out, args.seed, args.model,
                      args.layers, progress=sys.stderr.isatty())
    print_table(result)
    return 0
