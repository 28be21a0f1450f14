"""An lpimg server behind The Things Stack's MQTT integration (v3 JSON).

    python examples/ttn_server.py eu1.cloud.thethings.network:8883 --app my-cams \
        --tenant ttn --api-key NNSXS.... --tls --out received/

subscribes to v3/<app>@<tenant>/devices/+/up, decodes uplink_message.frm_payload on FPort 42
and answers by pushing {"downlinks": [...]} to .../down/push; The Things Stack delivers each
answer in the device's next class A receive window.

For a demo without a network server, --simulate-device ID --image photo.png also runs The Things
Stack device simulator (lpimg.link.lns) in this process: it publishes uplink JSON shaped like
the real thing to the same broker, so any local mosquitto will do:

    python examples/ttn_server.py localhost:1883 --app demo --out received/ \
        --simulate-device cam-1 --image photo.png
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import quote

from lpimg.endpoint import Device, Server
from lpimg.endpoint.files import write_update
from lpimg.link import open_device_link, open_server_link


def link_url(args: argparse.Namespace) -> str:
    query = f"app={quote(args.app)}&tenant={quote(args.tenant)}"
    if args.tls:
        query += "&tls=1"
    if args.api_key:  # The Things Stack: username app@tenant, password an API key
        user = quote(f"{args.app}@{args.tenant}" if args.tenant else args.app, safe="")
        return f"ttn://{user}:{quote(args.api_key, safe='')}@{args.broker}?{query}"
    return f"ttn://{args.broker}?{query}"


async def simulate(args: argparse.Namespace) -> None:
    """The other end, for the demo: a camera 'behind' The Things Stack."""
    async with open_device_link(link_url(args), args.simulate_device) as link:
        result = await Device(link).send(args.image, layers=args.layers)
        print(f"simulated device {args.simulate_device}: {result.reason}", flush=True)


async def main(args: argparse.Namespace) -> int:
    async with open_server_link(link_url(args)) as link:
        server = Server(link)
        updates = server.updates()  # subscribe before serving, so no update is missed
        async with server:
            print(f"serving application {args.app} on {args.broker}", flush=True)
            camera = asyncio.create_task(simulate(args)) if args.simulate_device else None
            async for update in updates:
                path = write_update(args.out, update)
                print(f"{path}: {update.layers} layers, {update.bytes} bytes"
                      f"{f' ({update.reason})' if update.final else ''}", flush=True)
                if camera is not None and update.final:  # the demo ends with its picture
                    await camera
                    return 0 if update.completed else 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker", help="host:port of The Things Stack's MQTT server (or a test broker)")
    parser.add_argument("--app", required=True, help="application id")
    parser.add_argument("--tenant", default="ttn", help="tenant id ('' for The Things Stack Open Source)")
    parser.add_argument("--api-key", default=None, help="API key with the 'read/write traffic' rights")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--simulate-device", default=None, metavar="ID", help="also run a simulated device")
    parser.add_argument("--image", default=None, help="picture the simulated device sends")
    parser.add_argument("--layers", type=int, default=None)
    parsed = parser.parse_args()
    if parsed.simulate_device and not parsed.image:
        parser.error("--simulate-device needs --image")
    sys.exit(asyncio.run(main(parsed)))
