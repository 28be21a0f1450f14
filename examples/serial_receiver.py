"""Receive pictures over a serial line and write them as they sharpen.

    python examples/serial_receiver.py /dev/ttyUSB1 --out received/ [--once]

Writes received/<device>/<image>.png after every layer, with a JSON sidecar (layers, bytes,
timing). A serial line reaches one device; its id is --device (default "serial-cam").
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from lpimg.endpoint import Server
from lpimg.endpoint.files import write_update
from lpimg.link import open_server_link
from lpimg.protocol import ProtocolConfig


async def main(args: argparse.Namespace) -> int:
    url = f"serial://{args.port}?baud={args.baud}&mtu={args.mtu}&device={args.device}"
    async with open_server_link(url) as link:
        server = Server(link, config=ProtocolConfig(idle_timeout=args.idle_timeout))
        updates = server.updates()  # subscribe before serving, so no update is missed
        async with server:
            print(f"listening on {args.port}", flush=True)
            async for update in updates:
                path = write_update(args.out, update)
                print(f"{path}: {update.layers} layers, {update.bytes} bytes"
                      f"{f' ({update.reason})' if update.final else ''}", flush=True)
                if args.once and update.final:
                    return 0 if update.completed else 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", help="serial port, e.g. /dev/ttyUSB1 or a pty path")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--device", default="serial-cam", help="id of the device on this line")
    parser.add_argument("--baud", type=int, default=57600)
    parser.add_argument("--mtu", type=int, default=64)
    parser.add_argument("--idle-timeout", type=float, default=600.0,
                        help="seconds of silence after which a session is abandoned")
    parser.add_argument("--once", action="store_true", help="exit after the first picture")
    sys.exit(asyncio.run(main(parser.parse_args())))
