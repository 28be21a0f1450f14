"""``lpimg bench feedback``: bytes saved when the server steers the device (stop and refine).

Two runs per picture, each with the real :class:`~lpimg.endpoint.Device` and
:class:`~lpimg.endpoint.Server` over ``sim://`` on the virtual clock:

- **open loop** (the baseline): the device sends its layers in order until the whole picture
  reaches the high target (0.95 MS-SSIM), then the server stops it;
- **closed loop**: the device sends its first layer only; the server picks a region of interest
  (a quarter of the picture, chosen by a callback from what it has received: by default the
  quadrant with the most detail) and drives the rest with refine requests through the
  :mod:`policies <lpimg.endpoint.policies>`: whole-picture passes (``RefineRegion`` with no
  region) until the outside reaches the low target (0.85), then passes over the region until it
  reaches the high target, then ``TargetQuality`` stops the session.

The server judges quality with the original at hand (a perfect quality estimate): the benchmark
measures what feedback can save, not how well a no-reference estimate works. "Outside" is the
mean MS-SSIM of the three other quadrants. If the codec's full stream cannot reach a target on
a picture, the target becomes the full stream's own quality there less a small margin
(``targets_adjusted``), and a session that runs out of passes to ask for stops with what it
has (``reached: false``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError

HIGH = 0.95
LOW = 0.85
DEFAULT_LINK = "lorawan-eu868:dr3"
MARGIN = 0.005
"""A target the codec's full stream cannot beat by this much becomes the full stream's quality
less this much, so whether a run "reaches" it is not decided by the fourth decimal (a region
refined alone sees coarser latents just outside it than the full stream does)."""
LATENT = 16
"""Pixels per latent position (the unit of a refine region)."""


# -- regions -----------------------------------------------------------------------------------


def quadrants(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The four quarters of a picture in latent units (x, y, w, h): top-left, top-right,
    bottom-left, bottom-right. Odd latent sizes give the extra row/column to the right/bottom."""
    lw, lh = -(-width // LATENT), -(-height // LATENT)
    hw, hh = lw // 2, lh // 2
    return [(0, 0, hw, hh), (hw, 0, lw - hw, hh), (0, hh, hw, lh - hh), (hw, hh, lw - hw, lh - hh)]


def pixel_box(region: tuple[int, int, int, int], width: int, height: int) -> tuple[slice, slice]:
    x, y, w, h = region
    return (slice(y * LATENT, min(height, (y + h) * LATENT)), slice(x * LATENT, min(width, (x + w) * LATENT)))


def most_detail(picture: np.ndarray) -> int:
    """The quadrant whose luma has the largest mean gradient magnitude: where a coarse picture
    already shows edges and texture, more passes show the most."""
    h, w = picture.shape[:2]
    luma = picture.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grad = np.abs(np.diff(luma, axis=0))[:, :-1] + np.abs(np.diff(luma, axis=1))[:-1, :]
    scores = []
    for quad in quadrants(w, h):
        ys, xs = pixel_box(quad, w, h)
        scores.append(float(grad[ys, xs].mean()) if grad[ys, xs].size else 0.0)
    return int(np.argmax(scores))


def region_quality(rec: np.ndarray, image: np.ndarray, roi: int) -> tuple[float, float]:
    """MS-SSIM inside quadrant ``roi`` and the mean over the other three."""
    from lpimg.bench.metrics import msssim

    h, w = image.shape[:2]
    values = []
    for quad in quadrants(w, h):
        ys, xs = pixel_box(quad, w, h)
        values.append(msssim(rec[ys, xs], image[ys, xs]))
    inside = values[roi]
    outside = float(np.mean([v for i, v in enumerate(values) if i != roi]))
    return inside, outside


# -- the closed-loop server ----------------------------------------------------------------------


@dataclass
class Targets:
    inside: float
    outside: float


class ClosedLoop:
    """The server application's brain for one picture: which region, what next, when enough.

    ``choose`` (for :class:`~lpimg.endpoint.RefineRegion`) asks for one more pass at a time,
    whole picture first, then the region of interest; ``estimate`` (for
    :class:`~lpimg.endpoint.TargetQuality` with target 1) is 1 once both targets are met or
    nothing is left to ask for. ``pick`` chooses the quadrant from the first reconstruction.
    """

    def __init__(self, image: np.ndarray, targets: Targets, pick: Callable[[np.ndarray], int]) -> None:
        self.image = image
        self.targets = targets
        self.pick = pick
        self.roi: int | None = None
        self._cache: tuple[int, tuple[float, float]] | None = None
        self.exhausted = False

    def _roi(self, update: Any) -> int:
        if self.roi is None:
            self.roi = self.pick(update.reconstruction)
        return self.roi

    def quality(self, update: Any) -> tuple[float, float]:
        """(inside, outside) of this update's reconstruction, computed once per layer count."""
        if self._cache is None or self._cache[0] != update.layers:
            quality = region_quality(update.reconstruction, self.image, self._roi(update))
            self._cache = (update.layers, quality)
        return self._cache[1]

    def _wire_roi(self, update: Any) -> Any:
        from lpimg.wire import Region

        x, y, w, h = quadrants(update.width, update.height)[self._roi(update)]
        return Region(x, y, w, h)

    def choose(self, update: Any) -> tuple[Any, int] | None:
        if not update.decodable:
            return None
        inside, outside = self.quality(update)
        whole = sum(1 for layer in update.received if layer.region is None)
        if outside < self.targets.outside and whole < update.total_passes:
            return None, whole
        roi = self._wire_roi(update)
        done = [layer.pass_index for layer in update.received if layer.region == roi]
        next_pass = max([whole, *(p + 1 for p in done)])
        if inside < self.targets.inside and next_pass < update.total_passes:
            return roi, next_pass
        self.exhausted = True
        return None

    def estimate(self, update: Any) -> float:
        if not update.decodable:
            return 0.0
        inside, outside = self.quality(update)
        if inside >= self.targets.inside and outside >= self.targets.outside:
            return 1.0
        self.choose(update)  # sets `exhausted` when there is nothing left to ask for
        return 1.0 if self.exhausted else 0.0


# -- one picture --------------------------------------------------------------------------------


async def _session(url: str, codec: Any, image: np.ndarray, policies: list[Any],
                   layers: int | None) -> tuple[Any, Any, Any]:
    from lpimg.endpoint import Device, Server
    from lpimg.link import open_device_link, open_server_link

    async with open_server_link(url) as server_link, open_device_link(url, "cam") as device_link:
        async with Server(server_link, codec=codec, policies=policies) as server:
            result = await Device(device_link, codec=codec).send(image, layers=layers)
            final = server.session("cam").latest
        return result, final, device_link.radio


def _summary(result: Any, final: Any, radio: Any, image: np.ndarray, roi: int) -> dict[str, Any]:
    inside, outside = region_quality(final.reconstruction, image, roi)
    from lpimg.bench.metrics import msssim

    return {
        "reason": final.reason,
        "device_reason": result.reason,
        "layers": final.layers,
        "whole_layers": sum(1 for layer in final.received if layer.region is None),
        "region_layers": sum(1 for layer in final.received if layer.region is not None),
        "payload_bytes": final.bytes,
        "uplink_frames": radio.uplinks,
        "uplink_bytes": radio.uplink_bytes,
        "downlink_frames": radio.downlinks,
        "time_on_air_s": radio.airtime_s + radio.downlink_airtime_s,
        "duration_s": result.duration_s,
        "msssim": msssim(final.reconstruction, image),
        "msssim_roi": inside,
        "msssim_outside": outside,
    }


def full_stream_quality(codec: Any, image: np.ndarray, roi: int) -> tuple[float, float, float]:
    """(whole, inside, outside) MS-SSIM of the codec's complete stream: the most any run can get."""
    from lpimg.bench.metrics import msssim

    enc = codec.encoder(image)
    dec = codec.decoder(enc.header)
    for spec, data in enc.encode_all():
        dec.apply(spec, data)
    rec = dec.reconstruct()
    inside, outside = region_quality(rec, image, roi)
    return msssim(rec, image), inside, outside


def run_image(codec: Any, name: str, image: np.ndarray, *, link: str = DEFAULT_LINK, loss: float = 0.0,
              seed: int = 1, high: float = HIGH, low: float = LOW, roi: str = "detail",
              base_layers: int = 1, margin: float = MARGIN) -> dict[str, Any]:
    from lpimg.bench.metrics import msssim
    from lpimg.endpoint import RefineRegion, TargetQuality

    h, w = image.shape[:2]
    pick: Callable[[np.ndarray], int] = most_detail if roi == "detail" else (lambda _rec: int(roi))
    url = f"sim://{link}?loss={loss}&seed={seed}"

    whole_target = high
    loop_targets = Targets(high, low)
    loop = ClosedLoop(image, loop_targets, pick)

    # Ceiling check first for the whole picture (baseline) with a provisional ROI of 0; the
    # closed loop's ROI ceiling is checked once its ROI is known, below.
    ceiling_whole, _, _ = full_stream_quality(codec, image, 0)
    adjusted = []
    if ceiling_whole - margin < whole_target:
        whole_target = ceiling_whole - margin
        adjusted.append(f"whole picture: {high} -> {whole_target:.4f} (full stream {ceiling_whole:.4f})")

    def whole_quality(update: Any) -> float:
        return msssim(update.reconstruction, image) if update.decodable else 0.0

    base_result, base_final, base_radio = asyncio.run(_session(
        url + "&net=open", codec, image, [TargetQuality(whole_target, whole_quality)], None))

    # The ROI the closed loop will choose depends only on the first layer: pick it now from
    # the same first layer, to bound the region target by the full stream before the run.
    enc = codec.encoder(image)
    dec = codec.decoder(enc.header)
    for spec in enc.default_layers()[:base_layers]:
        dec.apply(spec, enc.encode(spec))
    chosen = pick(dec.reconstruct())
    _, ceiling_in, ceiling_out = full_stream_quality(codec, image, chosen)
    if ceiling_in - margin < loop_targets.inside:
        loop_targets.inside = ceiling_in - margin
        adjusted.append(f"region: {high} -> {loop_targets.inside:.4f} (full stream {ceiling_in:.4f})")
    if ceiling_out - margin < loop_targets.outside:
        loop_targets.outside = ceiling_out - margin
        adjusted.append(f"outside: {low} -> {loop_targets.outside:.4f} (full stream {ceiling_out:.4f})")

    policies = [TargetQuality(1.0, loop.estimate), RefineRegion(loop.choose, max_requests=256)]
    fb_result, fb_final, fb_radio = asyncio.run(_session(
        url + "&net=closed", codec, image, policies, base_layers))
    if loop.roi is None:
        raise LpimgError(f"{name}: the closed-loop server never decoded a layer ({fb_final.reason})")
    if loop.roi != chosen:
        raise LpimgError(f"{name}: the server chose quadrant {loop.roi}, the bound was computed for {chosen}")
    open_loop = _summary(base_result, base_final, base_radio, image, loop.roi)
    closed = _summary(fb_result, fb_final, fb_radio, image, loop.roi)
    closed["reached"] = (closed["msssim_roi"] >= loop_targets.inside
                         and closed["msssim_outside"] >= loop_targets.outside)
    open_loop["reached"] = open_loop["msssim"] >= whole_target
    return {
        "image": name,
        "size": f"{w}x{h}",
        "roi_quadrant": loop.roi,
        "roi_latent": list(quadrants(w, h)[loop.roi]),
        "targets": {"whole": whole_target, "roi": loop_targets.inside, "outside": loop_targets.outside},
        "targets_adjusted": adjusted,
        "open_loop": open_loop,
        "closed_loop": closed,
        "saved_uplink_bytes": open_loop["uplink_bytes"] - closed["uplink_bytes"],
        "saved_fraction": 1 - closed["uplink_bytes"] / open_loop["uplink_bytes"],
        "saved_payload_fraction": 1 - closed["payload_bytes"] / open_loop["payload_bytes"],
    }


def run(folder: str, *, limit: int | None = None, model: str = DEFAULT_MODEL, progress: bool = False,
        **options: Any) -> dict[str, Any]:
    from lpimg.bench.rd import _images
    from lpimg.codec.pipeline import LearnedCodec
    from lpimg.link.sim import parse_link_spec

    parse_link_spec(options.get("link", DEFAULT_LINK))
    if options.get("roi", "detail") not in ("detail", "0", "1", "2", "3"):
        raise LpimgError(f"--roi must be detail or a quadrant 0..3, got {options['roi']!r}")
    codec = LearnedCodec.load(model)
    images = _images(folder, limit)
    started = time.perf_counter()
    rows = []
    iterator: Any = images
    if progress:
        from tqdm import tqdm

        iterator = tqdm(images, desc="feedback", leave=False)
    for name, image in iterator:
        rows.append(run_image(codec, name, image, **options))
    open_bytes = sum(r["open_loop"]["uplink_bytes"] for r in rows)
    closed_bytes = sum(r["closed_loop"]["uplink_bytes"] for r in rows)
    return {
        "images": len(rows),
        "folder": str(folder),
        "model": codec.name,
        "model_id": f"{codec.model_id:#06x}",
        "link": options.get("link", DEFAULT_LINK),
        "loss": options.get("loss", 0.0),
        "targets": {"roi": options.get("high", HIGH), "outside": options.get("low", LOW)},
        "roi_choice": options.get("roi", "detail"),
        "open_loop_uplink_bytes": open_bytes,
        "closed_loop_uplink_bytes": closed_bytes,
        "saved_fraction_total": 1 - closed_bytes / open_bytes if open_bytes else None,
        "saved_fraction_mean": float(np.mean([r["saved_fraction"] for r in rows])),
        "saved_payload_fraction_total": 1 - sum(r["closed_loop"]["payload_bytes"] for r in rows)
        / max(1, sum(r["open_loop"]["payload_bytes"] for r in rows)),
        "closed_loop_reached": sum(r["closed_loop"]["reached"] for r in rows),
        "targets_adjusted": sum(bool(r["targets_adjusted"]) for r in rows),
        "per_image": rows,
        "wall_s": time.perf_counter() - started,
    }


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feedback", help="bytes saved by server feedback (stop + refine a region)",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--images", default="../shared/data/kodak")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--link", default=DEFAULT_LINK)
    p.add_argument("--loss", type=float, default=0.0, help="frame loss each way (default 0)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--high", type=float, default=HIGH, help="MS-SSIM wanted in the region (0.95)")
    p.add_argument("--low", type=float, default=LOW, help="MS-SSIM wanted elsewhere (0.85)")
    p.add_argument("--roi", default="detail", help="'detail' (quadrant with most detail) or 0..3")
    p.add_argument("--base-layers", type=int, default=1, help="layers the closed-loop device "
                   "sends unasked (default 1)")
    p.add_argument("--ceiling-margin", type=float, default=MARGIN,
                   help=f"an unreachable target becomes the full stream's quality less this ({MARGIN})")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    import sys

    result = run(args.images, limit=args.limit, model=args.model, progress=sys.stderr.isatty(),
                 link=args.link, loss=args.loss, seed=args.seed, high=args.high, low=args.low,
                 roi=args.roi, base_layers=args.base_layers, margin=args.ceiling_margin)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'image':<12} {'roi':>3} {'open B':>7} {'closed B':>8} {'saved':>6} | "
          f"{'open roi/out':>13} | {'closed roi/out':>14}  adjusted")
    for r in result["per_image"]:
        o, c = r["open_loop"], r["closed_loop"]
        print(f"{r['image']:<12} {r['roi_quadrant']:>3} {o['uplink_bytes']:>7} {c['uplink_bytes']:>8} "
              f"{r['saved_fraction']:>6.1%} | {o['msssim_roi']:.3f}/{o['msssim_outside']:.3f} | "
              f"{c['msssim_roi']:.3f}/{c['msssim_outside']:.3f}{'' if c['reached'] else ' (short)'}"
              f"  {'; '.join(r['targets_adjusted'])}")
    print(f"total: open loop {result['open_loop_uplink_bytes']} B, closed loop "
          f"{result['closed_loop_uplink_bytes']} B: {result['saved_fraction_total']:.1%} saved "
          f"(mean per image {result['saved_fraction_mean']:.1%}; target > 40 %)")
    return 0
