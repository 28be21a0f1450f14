"""lpimg.endpoint: the device and server roles (codec + protocol + link + store), and ``sim://``.

::

    from lpimg.endpoint import Device, Server, ByteBudget
    from lpimg.link import open_device_link, open_server_link

    url = "sim://lorawan-eu868:dr3?loss=0.1&seed=1"
    async with open_server_link(url) as s, open_device_link(url, "cam-1") as d:
        async with Server(s, policies=[ByteBudget(2000)]) as server:
            result = await Device(d).send("photo.png")

Importing this package registers the ``sim://`` link scheme (:mod:`lpimg.endpoint.sim`) and
does not import torch; the codec is loaded when a device encodes or a server decodes.
"""

from lpimg.endpoint import sim as _sim
from lpimg.endpoint.coding import TOP_PLANE_KEY, EncodedImage, encode_image
from lpimg.endpoint.device import Device, DeviceResult, Pacing
from lpimg.endpoint.keys import KeyStore, load_device_key
from lpimg.endpoint.persist import ServerStore, StateError
from lpimg.endpoint.policies import (
    Action,
    ByteBudget,
    Policy,
    Refine,
    RefineRegion,
    Stop,
    TargetQuality,
    pass_fraction,
)
from lpimg.endpoint.references import HeldReference, ReferenceBank
from lpimg.endpoint.server import ImageUpdate, LayerInfo, Server, ServerCounters, SessionHandle
from lpimg.endpoint.sim import SimDeviceLink, SimNetwork, SimRadioStats, SimServerLink
from lpimg.endpoint.store import DeviceStore, StoreError

_sim.register()

__all__ = [
    "KeyStore",
    "load_device_key",
    "TOP_PLANE_KEY",
    "Action",
    "ByteBudget",
    "Device",
    "DeviceResult",
    "DeviceStore",
    "EncodedImage",
    "HeldReference",
    "ImageUpdate",
    "LayerInfo",
    "Pacing",
    "Policy",
    "Refine",
    "ReferenceBank",
    "RefineRegion",
    "Server",
    "ServerCounters",
    "ServerStore",
    "SessionHandle",
    "SimDeviceLink",
    "SimNetwork",
    "SimRadioStats",
    "SimServerLink",
    "StateError",
    "Stop",
    "StoreError",
    "TargetQuality",
    "encode_image",
    "pass_fraction",
]
