"""Send a picture over a serial line: a LoRa modem in transparent mode, a UART, or a pty.

    python examples/serial_sender.py /dev/ttyUSB0 --image photo.png --layers 6 --store state/

The frames are SLIP-delimited with a CRC-16 (lpimg.link.serial); the protocol adds ACKs and
retransmissions on top, so a noisy line costs time, not pictures. With --store, a sender that
is killed and started again with the same picture resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from lpimg.endpoint import Device, Pacing
from lpimg.link import open_device_link
from lpimg.protocol import ProtocolConfig


async def main(args: argparse.Namespace) -> int:
    url = f"serial://{args.port}?baud={args.baud}&mtu={args.mtu}"
    async with open_device_link(url) as link:
        device = Device(
            link,
            store=args.store,
            # A modem in transparent mode does not enforce airtime rules: pace the radio here.
            pacing=Pacing(min_interval=args.interval),
            # Wired or short-range: ask the receiver again after 2 s without an answer.
            config=ProtocolConfig(ack_timeout=args.ack_timeout),
        )
        result = await device.send(args.image, layers=args.layers)
    print(f"{result.reason}: {result.layers_acknowledged}/{result.layers} layers, "
          f"{result.layer_bytes} bytes, {result.stats.uplinks} frames sent")
    return 0 if result.completed else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", help="serial port, e.g. /dev/ttyUSB0 or a pty path")
    parser.add_argument("--image", required=True, help="picture to send")
    parser.add_argument("--layers", type=int, default=None, help="send only the first K layers")
    parser.add_argument("--baud", type=int, default=57600)
    parser.add_argument("--mtu", type=int, default=64, help="largest frame the radio carries")
    parser.add_argument("--interval", type=float, default=0.0, help="least seconds between frames")
    parser.add_argument("--ack-timeout", type=float, default=2.0)
    parser.add_argument("--store", default=None, help="session store directory (resume after restart)")
    sys.exit(asyncio.run(main(parser.parse_args())))
