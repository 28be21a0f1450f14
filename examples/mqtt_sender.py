"""Send a picture through an MQTT broker (topics lpimg/<device>/up and lpimg/<device>/down).

    python examples/mqtt_sender.py broker.local:1883 --device cam-7 --image photo.png

The link reconnects by itself after a broker restart and queues frames meanwhile; the
protocol's ACKs recover whatever the broker dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from lpimg.endpoint import Device
from lpimg.link import open_device_link
from lpimg.protocol import ProtocolConfig


async def main(args: argparse.Namespace) -> int:
    # mtu=51: frames the size of a LoRaWAN EU868 DR0-DR2 uplink, as if a radio were behind it.
    url = f"mqtt://{args.broker}?mtu={args.mtu}"
    async with open_device_link(url, args.device) as link:
        device = Device(link, config=ProtocolConfig(ack_timeout=args.ack_timeout))
        result = await device.send(args.image, layers=args.layers, timeout=args.timeout)
    print(f"{result.reason}: {result.layers_acknowledged}/{result.layers} layers, "
          f"{result.layer_bytes} bytes, {result.stats.uplinks} frames sent")
    return 0 if result.completed else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker", help="host:port of the MQTT broker")
    parser.add_argument("--device", required=True, help="this camera's id (an MQTT topic level)")
    parser.add_argument("--image", required=True, help="picture to send")
    parser.add_argument("--layers", type=int, default=None, help="send only the first K layers")
    parser.add_argument("--mtu", type=int, default=51)
    parser.add_argument("--ack-timeout", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    sys.exit(asyncio.run(main(parser.parse_args())))
