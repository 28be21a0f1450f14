"""The ``lpimg`` command line."""

from __future__ import annotations

import argparse
import sys

from lpimg.errors import LpimgError


def _cmd_train(args: argparse.Namespace) -> int:
    from lpimg.codec.train import TrainConfig, train

    cfg = TrainConfig(
        data=args.data, out=args.out, iterations=args.iterations, batch=args.batch,
        patch=args.patch, lr=args.lr, lmbda=args.lmbda, seed=args.seed, threads=args.threads,
        checkpoint_every=args.checkpoint_every,
    )
    final = train(cfg, resume=args.resume, progress=not args.quiet)
    print(f"weights written to {final}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpimg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the codec (resumable)")
    p.add_argument("--data", nargs="+", default=["../shared/data/train"])
    p.add_argument("--out", default="runs/default")
    p.add_argument("--iterations", type=int, default=30_000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lmbda", type=float, default=40.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LpimgError as exc:
        print(f"lpimg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
