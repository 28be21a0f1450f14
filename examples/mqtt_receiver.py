"""Receive pictures from any number of cameras through an MQTT broker.

    python examples/mqtt_receiver.py broker.local:1883 --out received/ [--budget 2000] [--once]

Every camera publishing on lpimg/<device>/up is served at once; each picture is written to
received/<device>/<image>.png as its layers arrive. --budget stops a camera once its picture
has that many bytes (a simple policy; see lpimg.endpoint.policies for others).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from lpimg.endpoint import ByteBudget, Server
from lpimg.endpoint.files import write_update
from lpimg.link import open_server_link
from lpimg.protocol import ProtocolConfig


async def main(args: argparse.Namespace) -> int:
    async with open_server_link(f"mqtt://{args.broker}?mtu={args.mtu}") as link:
        policies = [ByteBudget(args.budget)] if args.budget else []
        server = Server(link, policies=policies, config=ProtocolConfig(idle_timeout=args.idle_timeout))
        updates = server.updates()  # subscribe before serving, so no update is missed
        async with server:
            print(f"listening on {args.broker}", flush=True)
            async for update in updates:
                path = write_update(args.out, update)
                print(f"{path}: {update.layers} layers, {update.bytes} bytes"
                      f"{f' ({update.reason})' if update.final else ''}", flush=True)
                if args.once and update.final:
                    return 0 if update.completed else 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker", help="host:port of the MQTT broker")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--budget", type=int, default=None, help="stop each picture after N bytes")
    parser.add_argument("--mtu", type=int, default=51)
    parser.add_argument("--idle-timeout", type=float, default=600.0)
    parser.add_argument("--once", action="store_true", help="exit after the first picture")
    sys.exit(asyncio.run(main(parser.parse_args())))
