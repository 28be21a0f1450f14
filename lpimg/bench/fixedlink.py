"""``lpimg bench fixedcam-link``: a fixed camera's pictures end to end, with and without a reference.

``lpimg bench fixedcam`` measures the codec (bytes at equal MS-SSIM, interpolated). This one
measures what the link carries when the real endpoints do it: a :class:`~lpimg.endpoint.Device`
sends every K-th frame to a :class:`~lpimg.endpoint.Server` over ``sim://`` (virtual clock, LoRa
airtime and duty cycle, seeded loss), once as a chain coded against the last acknowledged picture
(``send(..., reference="auto")``) and once intra, the same passes each time (all of them by
default, or ``--layers K``), so both reach the same latent precision. Reported per frame and in
total: layer bytes, uplink frames and bytes, airtime, downlinks, whether the device had to fall
back to intra, and the PSNR of the server's final picture; ``saving_*`` = 1 - with / without.

A frame counts as delivered only if the device ended "complete" **and** the server's final
picture is exactly the one the codec gives for the layers the server reports (decoded here,
against the reference the device mirrored): a chain that claims success with a wrong picture must
not look good. Use ``--downlink-loss`` rather than ``--loss`` for chains: a session start lost
right after a finished session is answered as that finished session (frames carry no session id),
which ``--loss`` on the uplink makes happen and the report shows as undelivered frames.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError

DEFAULT_LINK = "lorawan-eu868:dr3"


def _frames(folder: str, start: int, step: int, count: int) -> list[Path]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    chosen = paths[start::step][:count]
    if step < 1 or count < 2 or len(chosen) < 2:
        raise LpimgError(f"need at least two frames from {folder} (start {start}, step {step})")
    return chosen


def _expected(codec: Any, image: np.ndarray, update: Any, reference: Any) -> tuple[np.ndarray, Any]:
    """The codec's own picture for the layers ``update`` reports, and the state they leave."""
    from lpimg.codec.reference import ConditionalDecoder, ConditionalEncoder
    from lpimg.endpoint.coding import layer_spec

    if reference is None:
        encoder: Any = codec.encoder(image)
        decoder: Any = codec.decoder(encoder.header)
    else:
        encoder = ConditionalEncoder(codec, image, reference)
        decoder = ConditionalDecoder(codec, encoder.header, reference)
    specs = []
    for layer in update.received:
        spec = layer_spec(layer.pass_index, layer.region)
        decoder.apply(spec, encoder.encode(spec))
        specs.append(spec)
    return decoder.reconstruct(), (encoder, specs)


async def _chain(
    url: str, images: list[np.ndarray], codec: Any, *, reference: bool, layers: int | None,
) -> list[dict[str, Any]]:
    from lpimg.bench.metrics import psnr
    from lpimg.codec.reference import ReferenceState
    from lpimg.endpoint import Device, Server
    from lpimg.link import open_device_link, open_server_link

    finals: dict[int, Any] = {}

    def keep(update: Any) -> None:
        if update.final:
            finals[update.session_id] = update

    rows: list[dict[str, Any]] = []
    async with open_server_link(url) as server_link, open_device_link(url, "fixed-cam") as link:
        server = Server(server_link, codec=codec, on_update=keep)
        async with server:
            device = Device(link, codec=codec)
            mirrored: Any = None  # the state the next picture is coded against, derived here
            for number, image in enumerate(images):
                before = (link.radio.uplinks, link.radio.uplink_bytes, link.radio.airtime_s)
                result = await device.send(image, layers=layers, reference="auto" if reference else None)
                await asyncio.sleep(0)
                final = finals.get(result.session_id)
                base = mirrored if result.reference_id is not None else None
                exact = False
                quality = None
                if final is not None and final.decodable:
                    expected, (encoder, specs) = _expected(codec, image, final, base)
                    picture = final.reconstruction
                    exact = bool(np.array_equal(picture, expected))
                    quality = psnr(picture, image)
                    count = result.layers_acknowledged
                    if count >= 1:
                        mirrored = ReferenceState.from_encoder(encoder, specs[:count])
                rows.append({
                    "frame": number,
                    "reason": result.reason,
                    "delivered": bool(result.reason == "complete" and exact),
                    "exact": exact,
                    "reference_id": result.reference_id,
                    "fell_back": result.fell_back,
                    "layers": result.layers,
                    "layer_bytes": result.layer_bytes,
                    "uplinks": link.radio.uplinks - before[0],
                    "uplink_bytes": link.radio.uplink_bytes - before[1],
                    "airtime_s": round(link.radio.airtime_s - before[2], 4),
                    "downlinks": result.downlinks,
                    "psnr_db": None if quality is None else round(quality, 3),
                })
    return rows


def run(frames: str, *, start: int = 450, step: int = 25, count: int = 8, link: str = DEFAULT_LINK,
        loss: float = 0.0, downlink_loss: float | None = None, seed: int = 1, layers: int | None = None,
        model: str = DEFAULT_MODEL) -> dict[str, Any]:
    from lpimg.codec.image import load_image
    from lpimg.codec.pipeline import LearnedCodec

    codec = LearnedCodec.load(model)
    images = [load_image(path) for path in _frames(frames, start, step, count)]
    down = loss if downlink_loss is None else downlink_loss
    out: dict[str, Any] = {
        "frames": len(images), "start": start, "step": step, "link": link, "uplink_loss": loss,
        "downlink_loss": down, "seed": seed, "layers": layers, "model_id": codec.model_id,
        "size": [int(images[0].shape[1]), int(images[0].shape[0])],
    }
    for name, with_reference, net in (("with_reference", True, "ref"), ("intra", False, "intra")):
        url = f"sim://{link}?uplink_loss={loss}&downlink_loss={down}&seed={seed}&net=bench-{net}"
        out[name] = asyncio.run(_chain(url, images, codec, reference=with_reference, layers=layers))
    keys = ("layer_bytes", "uplinks", "uplink_bytes", "airtime_s", "downlinks")
    summary: dict[str, Any] = {}
    for name in ("with_reference", "intra"):
        rows = out[name][1:]  # the first picture of a chain is intra either way
        summary[name] = {key: round(sum(row[key] for row in rows), 4) for key in keys}
        summary[name]["delivered"] = sum(row["delivered"] for row in out[name])
        summary[name]["fell_back"] = sum(row["fell_back"] for row in out[name])
        values = [row["psnr_db"] for row in rows if row["psnr_db"] is not None]
        summary[name]["psnr_db_mean"] = round(float(np.mean(values)), 3) if values else None
    for key in keys[:-1]:
        intra = summary["intra"][key]
        summary[f"saving_{key}"] = round(1 - summary["with_reference"][key] / intra, 4) if intra else None
    out["summary"] = summary
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fixedcam-link",
                       help="a fixed camera's chain over sim:// with the real endpoints, with and "
                            "without a reference")
    p.add_argument("--frames", default="../shared/data/fixedcam")
    p.add_argument("--start", type=int, default=450, help="first frame (default 450: the second "
                   "half, not used to fit the tables)")
    p.add_argument("--step", type=int, default=25, help="frame spacing K")
    p.add_argument("--count", type=int, default=8, help="pictures in the chain")
    p.add_argument("--link", default=DEFAULT_LINK, help=f"sim:// link profile (default {DEFAULT_LINK})")
    p.add_argument("--loss", type=float, default=0.0, help="uplink loss (see the note on chains)")
    p.add_argument("--downlink-loss", type=float, default=None, help="downlink loss (default: --loss)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--layers", type=int, default=None, help="bitplane passes per picture (default all)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    result = run(args.frames, start=args.start, step=args.step, count=args.count, link=args.link,
                 loss=args.loss, downlink_loss=args.downlink_loss, seed=args.seed, layers=args.layers,
                 model=args.model)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s = result["summary"]
    print(f"{result['frames']} frames from {result['start']} step {result['step']}, "
          f"{result['size'][0]}x{result['size'][1]}, {result['link']}, loss up {result['uplink_loss']} "
          f"down {result['downlink_loss']}, seed {result['seed']}")
    for name in ("with_reference", "intra"):
        t = s[name]
        print(f"{name:>14}: {t['layer_bytes']} layer B, {t['uplinks']} uplinks, {t['uplink_bytes']} "
              f"uplink B, {t['airtime_s']:.1f} s airtime, {t['downlinks']} downlinks, PSNR "
              f"{t['psnr_db_mean']} dB; delivered {t['delivered']}/{result['frames']}, "
              f"fell back {t['fell_back']}")
    print(f"saving (frames 2..): layer bytes {s['saving_layer_bytes']}, uplink bytes "
          f"{s['saving_uplink_bytes']}, airtime {s['saving_airtime_s']}")
    return 0 if s["with_reference"]["delivered"] == result["frames"] else 1
