"""``lpimg demo``: one picture, device and server in one process, over a simulated LoRaWAN link.

The real endpoints run as a camera and a gateway would run them: a
:class:`~lpimg.endpoint.Device` encodes the photo and sends its layers, a
:class:`~lpimg.endpoint.Server` acknowledges and decodes them, both over ``sim://`` (time on
air, duty cycle, class A windows, loss) on its virtual clock, so an hour of LoRaWAN takes
seconds. The result is a per-layer table (bytes, time on air, PSNR, MS-SSIM, and what JPEG
achieves with the same bytes) and a self-contained ``report.html`` with every reconstruction.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError

SAMPLE = Path(__file__).parent / "data" / "astronaut.png"
DEVICE = "demo-cam"


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
             model: str = DEFAULT_MODEL, layers: int | None = None, progress: bool = True) -> DemoResult:
    from lpimg.codec.image import load_image
    from lpimg.codec.pipeline import LearnedCodec

    out = Path(out)
    path = Path(image_path) if image_path else SAMPLE
    image = load_image(path)
    codec = LearnedCodec.load(model)
    if not 0.0 <= loss <= 1.0:
        raise LpimgError(f"--loss must be in [0, 1], got {loss}")
    from lpimg.link.sim import parse_link_spec

    parse_link_spec(link)  # a bad link spec fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    transfer = asyncio.run(_transfer(codec, image, link, loss, seed, layers, progress))
    return _report(codec, image, path, link, loss, seed, out, transfer, progress)


@dataclass
class _Transfer:
    """What the endpoints did: the server's updates (each with the uplink airtime spent when
    it was published), the device's result, the radio's counters and the encoding."""

    updates: list[tuple[Any, float]]
    final: Any
    device: Any
    radio: Any
    coded: Any
    encode_s: float


async def _transfer(codec: Any, image: Any, link: str, loss: float, seed: int, layers: int | None,
                    progress: bool) -> _Transfer:
    """The real endpoints, as a gateway and a camera would run them, over ``sim://``."""
    from lpimg.endpoint import Device, Server, encode_image
    from lpimg.link import open_device_link, open_server_link
    from lpimg.wire import Manifest

    url = f"sim://{link}?loss={loss}&seed={seed}&net=lpimg-demo"
    t0 = time.perf_counter()
    coded, encoder = encode_image(codec, image, layers)
    encode_s = time.perf_counter() - t0
    updates: list[tuple[Any, float]] = []
    bar = _progress(len(coded.layers), f"sending over {link}", progress)
    async with open_server_link(url) as server_link, open_device_link(url, DEVICE) as device_link:
        def on_update(update: Any) -> None:
            if update.device != DEVICE:
                return
            if update.layers > bar.n:
                bar.update(update.layers - bar.n)
            updates.append((update, device_link.radio.airtime_s))

        async with Server(server_link, codec=codec, on_update=on_update) as server:
            device = Device(device_link, codec=codec)
            result = await device.send_encoded(
                coded, manifest=Manifest(capture_time=int(time.time())), encoder=encoder)
            final = server.session(DEVICE).latest if updates else None
        radio = device_link.radio
    bar.close()
    return _Transfer(updates, final, result, radio, coded, encode_s)


def _report(codec: Any, image: Any, path: Path, link: str, loss: float, seed: int, out: Path,
            transfer: _Transfer, progress: bool) -> DemoResult:
    from lpimg.bench.baselines import decode as decode_jpeg
    from lpimg.bench.baselines import jpeg_at_most
    from lpimg.bench.metrics import msssim, psnr
    from lpimg.codec.bitplane import pass_kind
    from lpimg.endpoint.coding import layer_spec
    from lpimg.report import LayerRow, png_bytes, rd_plot_png, render

    h, w = image.shape[:2]
    coded, result, radio = transfer.coded, transfer.device, transfer.radio
    header = coded.header
    received = list(transfer.final.received) if transfer.final is not None else []
    # The server's reconstruction after each update; a layer that arrived in the same uplink
    # as the next one (tiny layers of a thumbnail) has no update of its own, and is decoded
    # here from the device's bytes, which the server verified by CRC.
    by_count = {update.layers: (update, airtime) for update, airtime in transfer.updates
                if update.layers and update.decodable}
    dec = codec.decoder(header)
    rows: list[LayerRow] = []
    cumulative = 0
    bar = _progress(len(received), "decoding", progress)
    decode_s = 0.0
    airtime = 0.0
    for count, layer in enumerate(received, start=1):
        data = coded.layers[layer.pass_index]
        if len(data) != layer.size:
            raise LpimgError(f"layer {layer.index}: the server got {layer.size} bytes, the device "
                             f"sent {len(data)}")
        dec.apply(layer_spec(layer.pass_index, layer.region), data)
        t1 = time.perf_counter()
        if count in by_count:
            update, airtime = by_count[count]
            rec = update.reconstruction
        else:
            later = [a for n, (_, a) in by_count.items() if n >= count]
            airtime = min(later) if later else radio.airtime_s
            rec = dec.reconstruct()
        decode_s = time.perf_counter() - t1
        cumulative += layer.size
        kind, plane = pass_kind(layer.pass_index, header.top_plane)
        what = {"sigq": "sig A (1/2)", "sigo": "sig A (2/2)", "sigh": "sig B (1/2)",
                "sigv": "sig B (2/2)", "ref": "ref"}[kind]
        row = LayerRow(layer.index, f"{what} plane {plane}", layer.size, cumulative, airtime,
                       layer.at, psnr(rec, image), msssim(rec, image), rec)
        jp = jpeg_at_most(image, cumulative)
        if jp is not None:
            data, q = jp
            jrec = decode_jpeg(data)
            row.jpeg_quality, row.jpeg_bytes = q, len(data)
            row.jpeg_psnr, row.jpeg_msssim, row.jpeg_image = psnr(jrec, image), msssim(jrec, image), jrec
            row.jpeg_data = data
            (out / f"jpeg_{layer.index:02d}.jpg").write_bytes(data)
        row.png_data = png_bytes(rec)  # encoded once: the file and the report share it
        (out / f"layer_{layer.index:02d}.png").write_bytes(row.png_data)
        rows.append(row)
        bar.update(1)
    bar.close()
    if not rows:
        raise LpimgError(f"no layer arrived over {link} with {loss:.0%} loss: {result.reason}")
    encode_s = transfer.encode_s
    stats = {
        "uplink_frames": radio.uplinks, "uplink_bytes": radio.uplink_bytes,
        "uplinks_lost": radio.uplinks_lost, "airtime_s": radio.airtime_s,
        "downlink_frames": radio.downlinks, "downlink_bytes": radio.downlink_bytes,
        "downlinks_lost": radio.downlinks_lost, "downlink_airtime_s": radio.downlink_airtime_s,
        "duration_s": result.duration_s, "finished": result.completed, "reason": result.reason,
        "server_reason": transfer.final.reason if transfer.final is not None else None,
        "retransmissions": result.retransmissions,
    }
    coded_layers = len(coded.layers)
    summary = {
        "picture": f"{path.name}, {w}x{h}",
        "model": f"{codec.name} (id {codec.model_id:#06x})",
        "link": f"{link}, {loss:.0%} loss each way, seed {seed}",
        "layers": f"{len(rows)} of {coded_layers} delivered ({result.reason})",
        "payload": f"{cumulative} bytes ({8 * cumulative / (w * h):.3f} bpp)",
        "uplink": f"{radio.uplinks} frames ({radio.uplinks_lost} lost), {radio.uplink_bytes} bytes, "
                  f"{radio.airtime_s:.1f} s on air",
        "downlink": f"{radio.downlinks} frames ({radio.downlinks_lost} lost), {radio.downlink_bytes} bytes",
        "virtual duration": f"{result.duration_s / 3600:.2f} h (duty cycle included)",
        "endpoints": "lpimg.endpoint Device and Server over sim:// (virtual clock)",
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
    (out / "demo.json").write_text(json.dumps({"summary": summary, "layers": table,
                                               "transfer": stats}, indent=2, default=str))
    return DemoResult(table, stats, out)


def print_table(result: DemoResult) -> None:
    print(f"{'layer':>5} {'pass':<19} {'bytes':>6} {'total':>7} {'air s':>7} {'PSNR':>6} "
          f"{'MS-SSIM':>7} | {'JPEG q':>6} {'bytes':>6} {'PSNR':>6} {'MS-SSIM':>7}")
    for r in result.rows:
        jq = "-" if r["jpeg_quality"] is None else str(r["jpeg_quality"])
        jb = "-" if r["jpeg_bytes"] is None else str(r["jpeg_bytes"])
        jpsnr = "-" if r["jpeg_psnr"] is None else f"{r['jpeg_psnr']:.2f}"
        jms = "-" if r["jpeg_msssim"] is None else f"{r['jpeg_msssim']:.4f}"
        print(f"{r['layer']:>5} {r['pass']:<19} {r['bytes']:>6} {r['total_bytes']:>7} "
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
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--out", default="lpimg-demo")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    import sys

    result = run_demo(args.image, args.link, args.loss, args.out, args.seed, args.model,
                      args.layers, progress=sys.stderr.isatty())
    print_table(result)
    return 0
