"""Choosing a link by URL, and the registry of URL schemes.

One string configures a transport, so the CLI, the examples and a gateway's config file all say
``--link mqtt://broker:1883`` instead of each growing its own flags::

    serial:///dev/ttyUSB0?baud=57600&mtu=240&framing=slip&device=cam-7
    socket://127.0.0.1:7000?framing=cobs
    mqtt://user:secret@broker:1883?device=cam-7&tls=1&ca=/etc/ssl/ca.pem
    ttn://eu1.cloud.thethings.network:8883?app=my-app&tenant=ttn&tls=1
    chirpstack://chirpstack.local:1883?app=0b6f5c1e-...
    sim://lorawan-eu868:dr3?loss=0.1                     (registered by lpimg.endpoint)

Opening returns an object that is both awaitable and an async context manager::

    link = await open_device_link(url, "cam-7")
    ...
    await link.close()

    async with open_server_link(url) as server:
        async for device, frame in server:
            ...

The URL is checked when ``open_*`` is *called* (a :class:`lpimg.LinkError` for an unknown scheme,
a missing host, a bad number, an unknown query parameter: typos must not be silently ignored);
the connection is made when it is awaited or entered (a :class:`lpimg.LinkError` if the port or
broker cannot be reached).

Other layers add schemes with :func:`register_scheme`. ``sim://`` is provided by
``lpimg.endpoint``: the first ``sim://`` URL imports that package, which is expected to register
the scheme; if it does not (yet), the error says so.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from lpimg.errors import LinkError
from lpimg.link.base import DeviceLink, ServerLink

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass
class LinkURL:
    """A parsed link URL; query parameters are consumed with the ``take_*`` helpers.

    Factories take what they understand and then call :meth:`finish`, which rejects whatever is
    left, so ``?baudrate=9600`` (instead of ``baud``) is an error rather than a silent default.
    """

    raw: str
    scheme: str
    netloc: str
    hostname: str | None
    port: int | None
    path: str
    username: str | None
    password: str | None
    params: dict[str, str] = field(default_factory=dict)
    port_error: str | None = None

    @classmethod
    def parse(cls, url: str) -> LinkURL:
        if not isinstance(url, str) or "://" not in url:
            raise LinkError(f"not a link URL: {url!r} (expected scheme://...)")
        parts = urlsplit(url)
        # A bad port is only an error for schemes that want host:port (require_host); others,
        # like sim://lorawan-eu868:dr3, read the netloc their own way.
        port_error = None
        try:
            port = parts.port
        except ValueError as exc:
            port, port_error = None, str(exc)
        if parts.fragment:
            raise LinkError(f"link URL {url!r} must not have a #fragment")
        params: dict[str, str] = {}
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as exc:
            raise LinkError(f"bad query in link URL {url!r}: {exc}") from None
        for key, value in pairs:
            if key in params:
                raise LinkError(f"query parameter {key!r} given twice in {url!r}")
            params[key] = value
        return cls(
            raw=url,
            scheme=parts.scheme.lower(),
            netloc=parts.netloc,
            hostname=parts.hostname,
            port=port,
            port_error=port_error,
            path=unquote(parts.path),
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            params=params,
        )

    def _fail(self, message: str) -> LinkError:
        return LinkError(f"{message} in link URL {self.redacted}")

    @property
    def redacted(self) -> str:
        """The URL with any password replaced, for error messages and logs."""
        if self.password is None:
            return repr(self.raw)
        parts = urlsplit(self.raw)
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return repr(parts._replace(netloc=f"{user}:***@{netloc}").geturl())

    def require_host(self, default_port: int | None = None) -> tuple[str, int]:
        if self.port_error is not None:
            raise self._fail(f"bad port ({self.port_error})")
        if not self.hostname:
            raise self._fail("missing host")
        port = self.port if self.port is not None else default_port
        if port is None:
            raise self._fail("missing port")
        if self.path not in ("", "/"):
            raise self._fail(f"unexpected path {self.path!r}")
        return self.hostname, port

    def take_str(self, name: str, default: str | None = None) -> str | None:
        return self.params.pop(name, default)

    def take_int(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.params.pop(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self._fail(f"{name}={raw!r} is not an integer") from None
        if not lo <= value <= hi:
            raise self._fail(f"{name}={value} is outside {lo}..{hi}")
        return value

    def take_float(self, name: str, default: float, lo: float, hi: float) -> float:
        raw = self.params.pop(name, None)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise self._fail(f"{name}={raw!r} is not a number") from None
        if not lo <= value <= hi:
            raise self._fail(f"{name}={value} is outside {lo}..{hi}")
        return value

    def take_bool(self, name: str, default: bool) -> bool:
        raw = self.params.pop(name, None)
        if raw is None:
            return default
        if raw.lower() in _TRUE or raw == "":
            return True
        if raw.lower() in _FALSE:
            return False
        raise self._fail(f"{name}={raw!r} is not a boolean (1/0, true/false)")

    def take_choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.params.pop(name, default)
        if raw not in choices:
            raise self._fail(f"{name}={raw!r} is not one of {', '.join(choices)}")
        return raw

    def finish(self, *also_allowed: str) -> None:
        """Reject every query parameter no factory took."""
        left = sorted(k for k in self.params if k not in also_allowed)
        if left:
            raise self._fail(f"unknown query parameter(s) {', '.join(left)}")


DeviceFactory = Callable[[LinkURL, "str | None"], DeviceLink]
"""Builds an *unopened* device link from a parsed URL and the device id (``None`` when the caller
gave none). Must validate the URL synchronously (raising :class:`LinkError`); the connection is
made by the link's ``open()``."""

ServerFactory = Callable[[LinkURL], ServerLink]
"""Builds an *unopened* server link from a parsed URL; same contract as :data:`DeviceFactory`."""


@dataclass(frozen=True)
class _Scheme:
    device: DeviceFactory | None
    server: ServerFactory | None


_registry: dict[str, _Scheme] = {}

# Built-in schemes, imported on first use so that `import lpimg.link` pulls in neither paho nor
# pyserial: module path, device factory name, server factory name.
_BUILTIN: dict[str, tuple[str, str, str]] = {
    "serial": ("lpimg.link.serial", "serial_device_link", "serial_server_link"),
    "socket": ("lpimg.link.serial", "serial_device_link", "serial_server_link"),
    "mqtt": ("lpimg.link.mqtt", "mqtt_device_link", "mqtt_server_link"),
    "ttn": ("lpimg.link.lns", "ttn_device_link", "ttn_server_link"),
    "chirpstack": ("lpimg.link.lns", "chirpstack_device_link", "chirpstack_server_link"),
}

# Schemes owned by a higher layer: importing the module is expected to call register_scheme.
_PROVIDERS: dict[str, str] = {"sim": "lpimg.endpoint"}


def register_scheme(
    scheme: str,
    device_factory: DeviceFactory | None,
    server_factory: ServerFactory | None,
    *,
    replace: bool = False,
) -> None:
    """Make ``scheme://`` URLs open links built by these factories.

    Either factory may be ``None`` when a scheme only has one side. Registering a scheme twice is
    an error unless ``replace=True`` (so two plugins cannot silently fight over a name).
    """
    scheme = scheme.lower()
    if not scheme.isascii() or not scheme.replace("+", "").replace("-", "").isalnum():
        raise LinkError(f"invalid URL scheme name {scheme!r}")
    if device_factory is None and server_factory is None:
        raise LinkError(f"scheme {scheme!r} needs at least one factory")
    if scheme in _registry and not replace:
        raise LinkError(f"URL scheme {scheme!r} is already registered")
    _registry[scheme] = _Scheme(device_factory, server_factory)


def unregister_scheme(scheme: str) -> None:
    """Remove a registered scheme (mostly for tests). Unknown names are ignored."""
    _registry.pop(scheme.lower(), None)


def registered_schemes() -> list[str]:
    """Every scheme that can be opened now or on first use."""
    return sorted(set(_registry) | set(_BUILTIN) | set(_PROVIDERS))


def _lookup(scheme: str) -> _Scheme:
    if scheme not in _registry and scheme in _BUILTIN:
        module_name, device_name, server_name = _BUILTIN[scheme]
        module = importlib.import_module(module_name)
        _registry[scheme] = _Scheme(getattr(module, device_name), getattr(module, server_name))
    if scheme not in _registry and scheme in _PROVIDERS:
        provider = _PROVIDERS[scheme]
        try:
            importlib.import_module(provider)
        except ImportError as exc:
            raise LinkError(f"{scheme}:// is provided by {provider}, which failed to import: {exc}") from exc
        if scheme not in _registry:
            raise LinkError(
                f"{scheme}:// is provided by {provider}, which has not registered it "
                f"(lpimg.link.register_scheme({scheme!r}, ...))"
            )
    if scheme not in _registry:
        known = ", ".join(f"{s}://" for s in registered_schemes())
        raise LinkError(f"unknown link URL scheme {scheme!r}; known: {known}")
    return _registry[scheme]


L = TypeVar("L", DeviceLink, ServerLink)


class LinkOpener(Generic[L]):
    """What ``open_*_link`` returns: ``await`` it for an open link, or ``async with`` it to have
    the link closed on exit. Awaiting or entering it more than once is an error."""

    def __init__(self, link: L) -> None:
        self._link = link
        self._used = False

    @property
    def link(self) -> L:
        """The link, not yet opened."""
        return self._link

    async def _open(self) -> L:
        if self._used:
            raise LinkError("this link was already opened")
        self._used = True
        try:
            await self._link.open()
        except BaseException:
            await self._link.close()
            raise
        return self._link

    def __await__(self) -> Generator[Any, None, L]:
        return self._open().__await__()

    async def __aenter__(self) -> L:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._link.close()


def open_device_link(url: str, device_id: str | None = None) -> LinkOpener[DeviceLink]:
    """A device-side link for ``url``; see the module docstring for the URL forms.

    ``device_id`` names this device where the transport addresses devices (MQTT topics, the
    TTN/ChirpStack simulators); it may instead come from ``?device=`` in the URL, and giving two
    different ids is an error. Point-to-point serial links do not need one.
    """
    parsed = LinkURL.parse(url)
    factory = _lookup(parsed.scheme).device
    if factory is None:
        raise LinkError(f"{parsed.scheme}:// links have no device side")
    return LinkOpener(factory(parsed, device_id))


def open_server_link(url: str) -> LinkOpener[ServerLink]:
    """A server-side link for ``url``; see the module docstring for the URL forms."""
    parsed = LinkURL.parse(url)
    factory = _lookup(parsed.scheme).server
    if factory is None:
        raise LinkError(f"{parsed.scheme}:// links have no server side")
    return LinkOpener(factory(parsed))


def resolve_device_id(url: LinkURL, device_id: str | None, *, required: bool) -> str | None:
    """Reconcile the ``device_id`` argument with a ``?device=`` query parameter."""
    from_url = url.take_str("device")
    if device_id is not None and from_url is not None and device_id != from_url:
        raise LinkError(f"device id {device_id!r} given, but the link URL {url.redacted} says {from_url!r}")
    chosen = device_id if device_id is not None else from_url
    if required and not chosen:
        raise LinkError(f"a device id is needed for {url.scheme}:// (argument or ?device=)")
    return chosen
