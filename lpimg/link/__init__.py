"""lpimg.link: async transports that move opaque frames between a device and a server.

Pick one by URL::

    from lpimg.link import open_device_link, open_server_link

    async with open_server_link("mqtt://127.0.0.1:1883") as server:
        device, frame = await server.recv()
        await server.send(device, reply)

Schemes: ``serial://``, ``socket://`` (:mod:`lpimg.link.serial`), ``mqtt://``
(:mod:`lpimg.link.mqtt`), ``ttn://``, ``chirpstack://`` (:mod:`lpimg.link.lns`), ``sim://``
(registered by ``lpimg.endpoint``; the simulator core is :mod:`lpimg.link.sim`). Importing this
package loads neither paho-mqtt nor pyserial; a scheme's module is imported on first use.
"""

from lpimg.link.base import DeviceLink, LinkStats, ServerLink
from lpimg.link.url import (
    LinkOpener,
    LinkURL,
    open_device_link,
    open_server_link,
    register_scheme,
    registered_schemes,
    unregister_scheme,
)

__all__ = [
    "DeviceLink",
    "LinkOpener",
    "LinkStats",
    "LinkURL",
    "ServerLink",
    "open_device_link",
    "open_server_link",
    "register_scheme",
    "registered_schemes",
    "unregister_scheme",
]
