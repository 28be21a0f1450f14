"""The ``lpimg`` command line.

Each sub-command is a thin wrapper: argument parsing here, the work in the library, so everything
the CLI does is also one import away for gateway and device code.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LpimgError


def _codec(args: argparse.Namespace):  # noqa: ANN202
    from lpimg.codec.pipeline import LearnedCodec

    return LearnedCodec.load(args.model)


def _cmd_train(args: argparse.Namespace) -> int:
    from lpimg.codec.model import ModelConfig
    from lpimg.codec.train import TrainConfig, train

    cfg = TrainConfig(
        data=args.data, out=args.out, iterations=args.iterations, batch=args.batch,
        patch=args.patch, lr=args.lr, lmbda=args.lmbda, seed=args.seed, threads=args.threads,
        checkpoint_every=args.checkpoint_every, mse_weight=args.mse_weight,
        clamp_latents=args.clamp_latents, noise_mix=args.noise_mix, chroma_weight=args.chroma_weight,
        phase_prefixes=args.phase_prefixes, first_prefixes=args.first_prefixes,
        quarter_prefixes=args.quarter_prefixes, step_floor=args.step_floor,
        qat_start=args.qat_start, init_from=args.init_from, freeze_encoder=args.freeze_encoder,
        model=ModelConfig(dec_spread=args.decoder_spread, dec_channels=args.dec_channels,
                          dec_blocks=tuple(args.dec_blocks)).to_dict(),
    )
    if not args.resume:
        from lpimg.codec.train import objective_warnings

        for line in objective_warnings(cfg):
            print(f"warning: {line}", file=sys.stderr, flush=True)
    if args.fit_minutes is not None and not args.resume:
        from lpimg.codec.train import plan_iterations

        cfg.iterations, rate = plan_iterations(cfg, args.fit_minutes, device=args.device)
        print(f"measured {rate:.2f} iterations/s on {args.device}: --iterations {cfg.iterations} "
              f"fits {args.fit_minutes:g} minutes", flush=True)
    final = train(cfg, resume=args.resume, progress=not args.quiet, max_minutes=args.max_minutes,
                  stop_at=args.stop_at, device=args.device)
    if final.name == "checkpoint.pt":
        print(f"stopped early; continue with --resume (checkpoint {final})")
    else:
        print(f"weights written to {final}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from lpimg.codec.train import pack_checkpoint

    parts = pack_checkpoint(args.run, args.dest)
    total = sum(p.stat().st_size for p in parts)
    print(f"{len(parts)} parts, {total / 1e6:.1f} MB in {args.dest}; continue with "
          f"`lpimg train --out {args.dest} --resume`")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from lpimg.codec.pipeline import LearnedCodec
    from lpimg.codec.release import (
        average_trained_models,
        fit_tables,
        tables_of_same_analysis,
        write_release,
    )

    model = average_trained_models(args.checkpoint)  # one run: its weights as they are
    if args.tables_from:
        tables = tables_of_same_analysis(model, LearnedCodec.load(args.tables_from))
    else:
        tables = fit_tables(model, args.data, max_images=args.max_images, progress=not args.quiet)
    source = [str(c) for c in args.checkpoint]
    meta: dict = {"source": source[0] if len(source) == 1 else source}
    meta.update({"tables_from": str(args.tables_from)} if args.tables_from else {"data": args.data})
    out = write_release(model, tables, args.out, meta)
    codec = LearnedCodec.load(out)
    print(f"{out}: model id {codec.model_id:#06x}, {out.stat().st_size / 1e6:.2f} MB")
    return 0


def _cmd_fit_residual(args: argparse.Namespace) -> int:
    from lpimg.codec.reference import ResidualTables
    from lpimg.codec.residual_fit import fit_residual_tables

    codec = _codec(args)
    if args.quiet:
        progress = None
    else:
        from tqdm import tqdm

        def progress(items, desc):  # noqa: ANN001, ANN202
            return tqdm(items, desc=desc, leave=False)

    tables = fit_residual_tables(
        codec, args.frames, args.train, fixed_pairs=args.pairs, synthetic_pairs=args.synthetic,
        frame_range=range(*args.frame_range), tile=args.tile, tolerance=args.tolerance,
        seed=args.seed, progress=progress)
    out = tables.save(args.out or ResidualTables.path_for(codec))
    print(f"{out}: residual tables {tables.residual_id:#06x} for model {codec.name} "
          f"({codec.model_id:#06x}), {tables.meta['pairs']} pairs, "
          f"{tables.meta['skipped_tiles'] / max(1, tables.meta['tiles']):.0%} of tiles skipped")
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from lpimg.codec import container
    from lpimg.codec.image import load_image

    codec = _codec(args)
    image = load_image(args.input)
    enc = codec.encoder(image)
    layers = enc.encode_all(args.layers)
    container.write(args.output, enc.header, layers)
    total = Path(args.output).stat().st_size
    bpp = 8 * total / (image.shape[0] * image.shape[1])
    print(f"{args.output}: {len(layers)} layers, {total} bytes, {bpp:.3f} bpp")
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from PIL import Image

    from lpimg.codec import container

    header, layers = container.read(args.input)
    codec = _codec(args)
    dec = codec.decoder(header)
    for spec, data in layers:
        dec.apply(spec, data)
    Image.fromarray(dec.reconstruct()).save(args.output)
    print(f"{args.output}: {header.width}x{header.height} from {len(layers)} layers")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from lpimg.codec import container
    from lpimg.codec.bitplane import pass_kind

    header, layers = container.read(args.input)
    rows = []
    cumulative = 0
    for i, (spec, data) in enumerate(layers):
        kind, plane = pass_kind(spec.index, header.top_plane)
        cumulative += len(data)
        r = spec.region
        rows.append({
            "layer": i, "pass": spec.index, "kind": kind, "plane": plane,
            "region": None if r is None else [r.x, r.y, r.w, r.h],
            "bytes": len(data), "cumulative_bytes": cumulative,
            "cumulative_bpp": 8 * cumulative / (header.width * header.height),
        })
    info = {"model_id": header.model_id, "width": header.width, "height": header.height,
            "top_plane": header.top_plane, "total_passes": header.total_passes,
            "layers": rows, "file_bytes": Path(args.input).stat().st_size}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.input}: {header.width}x{header.height}, model {header.model_id:#06x}, "
          f"top plane {header.top_plane}, {len(layers)}/{header.total_passes} passes, "
          f"{info['file_bytes']} bytes")
    print(f"{'layer':>5} {'pass':>4} {'kind':>4} {'plane':>5} {'bytes':>7} {'cum':>7} {'bpp':>6}  region")
    for r in rows:
        region = "whole" if r["region"] is None else "x{},y{} {}x{}".format(*r["region"])
        print(f"{r['layer']:>5} {r['pass']:>4} {r['kind']:>4} {r['plane']:>5} {r['bytes']:>7} "
              f"{r['cumulative_bytes']:>7} {r['cumulative_bpp']:>6.3f}  {region}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lpimg.codec.export import export_onnx
    from lpimg.codec.intref import IntegerAnalysis

    codec = _codec(args)
    if args.onnx:
        print(f"QDQ INT8 ONNX analysis transform written to {export_onnx(codec.model.analysis, args.onnx)}")
    if args.npz:
        IntegerAnalysis.from_model(codec.model.analysis).save(args.npz)
        print(f"integer weights, biases and scales written to {args.npz}")
    if not (args.onnx or args.npz):
        raise LpimgError("nothing to export: give --onnx PATH and/or --npz PATH")
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, not {text!r}") from exc


def _cmd_device_check(args: argparse.Namespace) -> int:
    from lpimg.codec.device_check import check

    codec = _codec(args)
    report = check(codec.model.analysis, *args.size)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"K210 check at {report['size']} ({report['tiles']} tile(s) of {report['tile_input']})")
        print(f"{'#':>2} {'op':<7} {'k':>1} {'s':>1} {'in':>14} {'out':>14} {'io B':>9} "
              f"{'weights':>8} {'MACs':>12}  ok")
        for lay in report["layers"]:
            print(f"{lay['index']:>2} {lay['op']:<7} {lay['kernel']:>1} {lay['stride']:>1} "
                  f"{'x'.join(map(str, lay['input_shape'])):>14} "
                  f"{'x'.join(map(str, lay['output_shape'])):>14} {lay['io_bytes']:>9} "
                  f"{lay['weight_bytes']:>8} {lay['macs']:>12}  {'yes' if lay['ok'] else 'NO'}")
        print(f"total MACs {report['total_macs']:,}  weights {report['weight_bytes']:,} B  "
              f"KPU estimate {report['kpu_time_ms_est']:.1f} ms at 230 GOPS")
        print("PASS" if report["pass"] else "FAIL: " + "; ".join(report["problems"]))
    return 0 if report["pass"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpimg", description="Progressive learned image "
                                     "transfer over LPWAN links.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_model(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or weights path")
        return p

    p = sub.add_parser("train", help="train the codec (resumable)")
    p.add_argument("--data", nargs="+", default=["../shared/data/train"])
    p.add_argument("--out", default="runs/default")
    p.add_argument("--iterations", type=int, default=30_000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lmbda", type=float, default=60.0)
    p.add_argument("--mse-weight", type=float, default=8.0,
                   help="weight of MSE next to 1 - MS-SSIM in the distortion (colour fidelity)")
    p.add_argument("--clamp-latents", action="store_true",
                   help="clamp latents to +-127 in training, as the deployed encoder does")
    p.add_argument("--noise-mix", type=float, default=0.0,
                   help="fraction of samples trained with additive noise on the full stream")
    p.add_argument("--chroma-weight", type=float, default=0.0,
                   help="extra weight of the green-magenta error (colour fidelity)")
    p.add_argument("--phase-prefixes", type=float, default=0.0,
                   help="share of samples decoded half way through a significance pass (phase A)")
    p.add_argument("--quarter-prefixes", type=float, default=0.0,
                   help="share of samples decoded a quarter or three quarters through a significance pass")
    p.add_argument("--first-prefixes", type=float, default=0.0,
                   help="share of samples decoded from the first layer or two alone (the previews)")
    p.add_argument("--step-floor", type=float, default=1.0,
                   help="prefixes finer than this quantizer step trade at its lambda (synthesis-only "
                   "runs: 4 keeps the capacity for the rates LPWAN pictures are sent at)")
    p.add_argument("--qat-start", type=float, default=0.05,
                   help="fraction of the schedule trained in float before int8 fake quantization")
    p.add_argument("--init-from", default=None,
                   help="start from another run's weights (fresh optimizer and schedule)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train the synthesis alone (analysis and density of --init-from kept: same model id)")
    p.add_argument("--dec-channels", type=int, default=96, help="width of the synthesis (server side)")
    p.add_argument("--dec-blocks", type=int, nargs=3, default=(0, 0, 0), metavar=("D16", "D8", "D4"),
                   help="extra residual blocks in the synthesis at 1/16, 1/8 and 1/4 resolution; "
                   "they start as the identity, so --init-from's synthesis renders as before")
    p.add_argument("--decoder-spread", action="store_true",
                   help="the synthesis also sees how precisely each latent is known")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu",
                   help="where the steps run: cpu or cuda (not part of the run: --resume may move it)")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="checkpoint and stop after this long (the schedule is unchanged)")
    p.add_argument("--fit-minutes", type=float, default=None,
                   help="measure the step rate here (30 s) and set --iterations so that the whole "
                   "schedule, decay included, ends within this many minutes")
    p.add_argument("--stop-at", type=int, default=None,
                   help="checkpoint and stop at this iteration (the schedule is unchanged)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("pack-checkpoint", help="split a run's checkpoint into < 10 MB parts to commit")
    p.add_argument("run", help="run directory holding checkpoint.pt")
    p.add_argument("dest", help="directory to hold checkpoint.pt.NNN, train_config.json, log.jsonl")
    p.set_defaults(func=_cmd_pack)

    p = sub.add_parser("release", help="fit integer tables and write shippable weights")
    p.add_argument("checkpoint", nargs="+",
                   help="checkpoint.pt, final.pt, or a (packed) run directory; several runs of one "
                        "architecture are averaged, weight by weight")
    p.add_argument("--data", nargs="+", default=["../shared/data/train"])
    p.add_argument("--max-images", type=int, default=400)
    p.add_argument("--out", default=f"lpimg/codec/weights/{DEFAULT_MODEL}.pt")
    p.add_argument("--tables-from", metavar="MODEL", default=None,
                   help="reuse MODEL's tables (and so its model id) instead of fitting them: for "
                        "runs that trained the synthesis alone; refused if the analysis differs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_release)

    p = with_model(sub.add_parser(
        "fit-residual", help="fit the reference-frame coding tables of a model (rerun after release)"))
    p.add_argument("--frames", default="../shared/data/fixedcam", help="fixed-camera frames")
    p.add_argument("--frame-range", type=int, nargs=2, default=(0, 450), metavar=("FIRST", "STOP"),
                   help="frames pairs are drawn from (default: the first half; benchmarks use the rest)")
    p.add_argument("--train", nargs="+", default=["../shared/data/train"],
                   help="still images for synthetic pairs")
    p.add_argument("--pairs", type=int, default=300, help="fixed-camera frame pairs")
    p.add_argument("--synthetic", type=int, default=300, help="synthetic pairs from still images")
    p.add_argument("--tile", type=int, default=2, help="skip tile side in latent positions")
    p.add_argument("--tolerance", type=int, default=1, help="skip tolerance the encoder will use")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: <weights>.residual.npz next to the model")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_fit_residual)

    p = with_model(sub.add_parser("encode", help="picture -> .lpi"))
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--layers", type=int, default=None, help="keep only the first K layers")
    p.set_defaults(func=_cmd_encode)

    p = with_model(sub.add_parser("decode", help=".lpi -> picture (whatever layers it holds)"))
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=_cmd_decode)

    p = sub.add_parser("info", help="layers and bytes of an .lpi")
    p.add_argument("input")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    p = with_model(sub.add_parser("export", help="INT8 analysis transform for devices"))
    p.add_argument("--onnx", help="QDQ INT8 ONNX model path")
    p.add_argument("--npz", help="integer weights for the numpy reference / a C port")
    p.set_defaults(func=_cmd_export)

    p = with_model(sub.add_parser("device-check", help="does the encoder fit a K210 KPU?"))
    p.add_argument("--size", type=_parse_size, default=(320, 240))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_device_check)

    from lpimg.bench import add_bench_parser
    from lpimg.demo import add_parser as add_demo_parser
    from lpimg.endpoint.cli import add_parsers as add_endpoint_parsers

    add_demo_parser(sub)
    add_endpoint_parsers(sub)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return int(args.func(args) or 0)
    except LpimgError as exc:
        print(f"lpimg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lpimg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
