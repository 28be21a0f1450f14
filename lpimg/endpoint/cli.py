"""``lpimg send``, ``lpimg serve`` and ``lpimg inspect``: the endpoints and the dissector as
commands. Registered by :func:`lpimg.cli.build_parser` through :func:`add_parsers`; the work is
in the library (:class:`~lpimg.endpoint.Device`, :class:`~lpimg.endpoint.Server`,
:mod:`lpimg.endpoint.dissect`), so a gateway embedding lpimg gets the same behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.errors import LinkError, LpimgError

log = logging.getLogger("lpimg.endpoint.cli")


def _reject_sim(url: str, role: str) -> None:
    from lpimg.link.url import LinkURL

    if LinkURL.parse(url).scheme == "sim":
        raise LinkError(
            f"sim:// links are in-process (a device and a server share one virtual clock), so "
            f"`lpimg {role}` cannot use one on its own: run `lpimg demo`, or use "
            "lpimg.endpoint.Device and Server in one program"
        )


def _config(args: argparse.Namespace) -> Any:
    from lpimg.protocol import ProtocolConfig

    values = {}
    if getattr(args, "ack_timeout", None) is not None:
        values["ack_timeout"] = args.ack_timeout
    if getattr(args, "idle_timeout", None) is not None:
        values["idle_timeout"] = args.idle_timeout
    for name in _LIMITS:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return ProtocolConfig(**values)


_LIMITS = {
    "max_sessions": (int, "sessions held at once, finished ones included"),
    "max_active_sessions": (int, "sessions received at once; more starts get ABORT(SERVER_FULL)"),
    "max_session_buffer": (int, "bytes one session may buffer"),
    "max_total_buffer": (int, "bytes all sessions together may buffer (reserved per session)"),
    "start_timeout": (float, "seconds a session may go without a verified descriptor"),
    "rate_limit": (float, "frames per second one device may send (token bucket; default none)"),
    "rate_burst": (int, "frames a device may send at once before --rate-limit applies"),
}
"""Server resource bounds settable from ``lpimg serve`` (ProtocolConfig fields, spec 7.7)."""


def _logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)


# -- send ----------------------------------------------------------------------------------


def _cmd_send(args: argparse.Namespace) -> int:
    from lpimg.endpoint.device import Device, Pacing
    from lpimg.link import open_device_link

    _logging(args)
    _reject_sim(args.link, "send")
    if args.reference == "auto" and not args.store:
        raise LpimgError("--reference auto needs --store DIR: the reference (what the server holds "
                         "of the last picture) is kept there between sends")
    pacing = Pacing(min_interval=args.min_interval, rx_window=args.rx_window)
    if args.duty_cycle:
        from dataclasses import replace

        pacing = replace(Pacing.lorawan(args.duty_cycle), min_interval=args.min_interval,
                         rx_window=args.rx_window)

    async def main() -> Any:
        async with open_device_link(args.link, args.device) as link:
            device = Device(link, model=args.model, store=args.store, config=_config(args), pacing=pacing,
                            key=_device_key(args))
            reference = "auto" if args.reference == "auto" else None
            return await device.send(args.image, layers=args.layers, timeout=args.timeout,
                                     reference=reference)

    result = asyncio.run(main())
    line = (f"{args.device}: session {result.session_id:04x}: {result.reason}; "
            f"{result.layers_acknowledged}/{result.layers} layers acknowledged, "
            f"{result.layer_bytes} layer bytes, {result.stats.uplinks} uplinks "
            f"({result.stats.retransmissions} retransmissions, "
            f"{result.stats.acknowledged_resent} of acknowledged fragments), "
            f"{result.stats.downlinks} downlinks"
            f"{', resumed' if result.resumed else ''}"
            f"{_reference_note(result) if args.reference == 'auto' else ''}")
    if result.completed:
        print(line)
        return 0
    print(f"lpimg: send failed: {line}", file=sys.stderr)
    return 1


def _reference_note(result: Any) -> str:
    if result.fell_back:
        return "; the server lacked the reference: sent intra"
    if result.reference_id is None:
        return "; intra (no reference yet)"
    return f"; coded against reference {result.reference_id:04x}"


def _device_key(args: argparse.Namespace) -> bytes | None:
    """``send --key-file``: 32 hex digits, or a key store file holding this device's key."""
    if not args.key_file:
        return None
    from lpimg.endpoint.keys import load_device_key

    return load_device_key(args.key_file, args.device)


def _key_store(args: argparse.Namespace) -> Any:
    """``serve --key-file``: a JSON object of device id -> 32 hex digits."""
    if not args.key_file:
        return None
    from lpimg.endpoint.keys import KeyStore

    return KeyStore.load(args.key_file)


# -- serve ---------------------------------------------------------------------------------

def _cmd_serve(args: argparse.Namespace) -> int:
    from lpimg.endpoint.files import write_update
    from lpimg.endpoint.policies import ByteBudget
    from lpimg.endpoint.server import Server
    from lpimg.link import open_server_link

    _logging(args)
    _reject_sim(args.link, "serve")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policies = [ByteBudget(args.budget)] if args.budget else []
    devices = set(args.devices.split(",")) if args.devices else None

    async def main() -> int:
        async with open_server_link(args.link) as link:
            # Files are written in on_update, which runs before the server commits its state and
            # answers the device: a picture the device was told is complete is on disk, even if
            # this process is killed the next instant.
            server = Server(link, model=args.model, config=_config(args), policies=policies,
                            devices=devices, state=args.state, state_sync=args.state_sync,
                            decode=not args.no_decode, on_update=lambda update: write_update(out, update),
                            keys=_key_store(args))
            updates = server.updates()
            async with server:
                print(f"serving {args.link}, writing to {out}", flush=True)
                async for update in updates:
                    state = update.reason if update.final else "receiving"
                    print(f"{update.device}/{update.image_id}: {update.layers} layers, "
                          f"{update.bytes} bytes ({state})", flush=True)
                    if args.once and update.final:
                        return 0 if update.completed else 1
                if server.error is not None:
                    raise server.error
        return 0

    return asyncio.run(main())


# -- inspect -------------------------------------------------------------------------------


def _frames_from_file(path: str) -> list[tuple[str | None, bytes]]:
    from lpimg.endpoint.dissect import parse_hex
    from lpimg.errors import WireError

    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return [(None, raw)]
    frames: list[tuple[str | None, bytes]] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        direction = None
        head, _, rest = line.partition(" ")
        if head.rstrip(":").lower() in ("up", "down", "uplink", "downlink") and rest:
            direction = "up" if head.lower().startswith("up") else "down"
            line = rest
        try:
            frames.append((direction, parse_hex(line)))
        except WireError:
            return [(None, raw)]  # not a hex listing: the file is one binary frame
    return frames


def _print_frames(frames: list[tuple[str | None, bytes]], direction: str) -> None:
    from lpimg.endpoint.dissect import dissect_frame, dissect_stream, format_dissection, reassemble

    uplinks = []
    for number, (given, data) in enumerate(frames):
        dissection = dissect_frame(data, given or direction)  # type: ignore[arg-type]
        prefix = f"#{number} " if len(frames) > 1 else ""
        print(prefix + format_dissection(dissection))
        if dissection.direction == "up" and dissection.error is None:
            uplinks.append(data)
    if len(uplinks) > 1 or any(d[:1] and d[0] >> 4 == 1 for d in uplinks):
        stream, notes = reassemble(uplinks)
        if stream:
            print(f"\nsession stream reassembled from the uplinks: {len(stream)} bytes")
            for note in notes:
                print(f"  note: {note}")
            for record in dissect_stream(stream):
                print(format_dissection(record))


def _cmd_inspect(args: argparse.Namespace) -> int:
    from lpimg.endpoint.dissect import dissect_stream, format_dissection, parse_hex

    if args.link:
        return _inspect_link(args)
    if args.file:
        frames = _frames_from_file(args.file)
    elif args.hex:
        frames = [(None, parse_hex(text)) for text in args.hex]
    else:
        raise LpimgError("give frames as hex, --file FILE (hex lines, '-' for stdin) or --link URL")
    if args.records:
        stream = b"".join(data for _, data in frames)
        for record in dissect_stream(stream):
            print(format_dissection(record))
        return 0
    _print_frames(frames, args.direction)
    return 0


def _inspect_link(args: argparse.Namespace) -> int:
    from lpimg.endpoint.dissect import dissect_frame, format_dissection
    from lpimg.link import open_server_link

    _reject_sim(args.link, "inspect --link")

    async def main() -> None:
        async with open_server_link(args.link) as link:
            print(f"listening on {args.link} (uplinks, as a server link receives them)", flush=True)
            seen = 0
            async for device, frame in link:
                stamp = time.strftime("%H:%M:%S")
                direction = "down" if args.direction == "down" else "up"
                print(f"{stamp} from {device}: " + format_dissection(dissect_frame(frame, direction)),
                      flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    return

    asyncio.run(main())
    return 0


# -- registration --------------------------------------------------------------------------


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``send``, ``serve`` and ``inspect`` to the ``lpimg`` command."""
    p = sub.add_parser("send", help="device role: send a picture over a link (exit 0 once delivered)")
    p.add_argument("image", help="picture file")
    p.add_argument("--link", required=True, help="link URL: serial://, socket://, mqtt://, ttn://, ...")
    p.add_argument("--device", required=True, help="this device's id on the link")
    p.add_argument("--store", help="session store directory: a restarted send resumes from it")
    p.add_argument("--layers", type=int, default=None, help="send only the first K layers")
    p.add_argument("--reference", choices=("auto", "none"), default="none",
                   help="auto: a fixed camera; code the picture against what the server holds of the "
                        "last one (kept in --store), intra if there is none or the server lacks it")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.add_argument("--min-interval", type=float, default=0.0,
                   help="least seconds between two uplinks (a radio that does not pace itself)")
    p.add_argument("--rx-window", type=float, default=0.0,
                   help="after each uplink, listen this long for the answer (class A manners)")
    p.add_argument("--duty-cycle", metavar="PROFILE", default=None,
                   help="enforce a region's duty cycle with LoRa airtime, e.g. lorawan-eu868:dr3")
    p.add_argument("--ack-timeout", type=float, default=None, help="seconds before polling the server")
    p.add_argument("--key-file", default=None,
                   help="this device's 128-bit key (32 hex digits, or a JSON key store): "
                        "authenticated sessions (spec section 15)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_send)

    p = sub.add_parser("serve", help="server role: receive pictures, write DIR/<device>/<image>.png")
    p.add_argument("--link", required=True, help="link URL: serial://, mqtt://, ttn://, chirpstack://, ...")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--budget", type=int, default=None, help="stop each picture after this many layer bytes")
    p.add_argument("--once", action="store_true", help="exit after the first picture ends (0: delivered)")
    p.add_argument("--devices", default=None, help="comma-separated device ids to accept (default: all)")
    p.add_argument("--key-file", default=None,
                   help='JSON {"device id": "32 hex digits"}: these devices must authenticate')
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--ack-timeout", type=float, default=None)
    p.add_argument("--idle-timeout", type=float, default=None,
                   help="seconds of silence after which a session is abandoned")
    p.add_argument("--state", default=None, metavar="PATH",
                   help="SQLite state file: sessions survive a crash and resume on restart")
    p.add_argument("--state-sync", choices=("full", "normal"), default="full",
                   help="full: each commit survives a power cut; normal: only a process crash")
    p.add_argument("--no-decode", action="store_true",
                   help="only reassemble (report layers and bytes; write no pictures)")
    for name, (kind, text) in _LIMITS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("inspect", help="dissect frames field by field (hex, a file, or a live link)")
    p.add_argument("hex", nargs="*", help="frames as hex (one argument per frame)")
    p.add_argument("--file", help="text file of hex frames, one per line ('up'/'down' prefix allowed), "
                                  "or a binary frame; '-' reads stdin")
    p.add_argument("--link", help="listen on a server link and dissect every uplink")
    p.add_argument("--count", type=int, default=0, help="with --link: stop after N frames")
    p.add_argument("--direction", choices=("auto", "up", "down"), default="auto")
    p.add_argument("--records", action="store_true",
                   help="the input is session stream bytes: dissect its records")
    p.set_defaults(func=_cmd_inspect)
