"""MQTT links over a broker (``aiomqtt`` 2.x), and the connection machinery the LoRaWAN network
server adapters in :mod:`lpimg.link.lns` reuse.

URL form (plain lpimg topics, binary payloads)::

    mqtt://[user[:password]@]host[:port]?device=cam-7&prefix=lpimg&qos=0&tls=1&ca=/path/ca.pem

Topics: the device publishes its frames to ``{prefix}/{device}/up`` and subscribes to
``{prefix}/{device}/down``; the server subscribes to ``{prefix}/+/up`` and publishes to
``{prefix}/{device}/down``. Payloads are the raw frames.

Query parameters shared by ``mqtt://``, ``ttn://`` and ``chirpstack://``:

========================  ====================================================================
``username``/``password`` credentials (or put them in the URL's userinfo, percent-encoded)
``tls``                   ``1`` to use TLS (default port becomes 8883)
``ca``                    CA bundle file to verify the broker with (default: system CAs)
``cert``/``key``          client certificate and key files (mutual TLS)
``insecure``              ``1`` skips certificate and host name verification (tests only!)
``client_id``             MQTT client identifier (default: random)
``keepalive``             seconds, default 30
``qos``                   0 (default; the protocol retransmits) or 1
``mtu``                   largest frame either way, default 242 (LoRaWAN's maximum payload)
``outbox``                frames kept while disconnected, default 256
``inbox``                 receive queue bound, default 4096
``reconnect_min/max``     back-off between reconnection attempts, default 0.1 s .. 5 s
``timeout``               seconds for connect/subscribe/publish round trips, default 5
========================  ====================================================================

Connection policy. Opening the link makes the first connection and raises
:class:`lpimg.LinkError` if it fails (wrong host, refused, bad credentials, TLS failure): a
configuration error should stop a program at start-up, not spin forever. After that the link
survives broker restarts and network cuts on its own: it reconnects with exponential back-off
(with jitter) and subscribes again; ``stats.reconnects`` counts it.

Frames passed to ``send`` while disconnected are **queued** in a bounded outbox (``outbox=``,
oldest dropped first and counted in ``stats.dropped_out``) and published in order after the
reconnection; ``send`` does not wait for the broker to come back (with ``qos=1``, a publish
already waiting for its PUBACK when the broker dies returns after at most ``timeout`` seconds,
queued). Messages the broker had for us while we were away are lost (plain sessions, QoS 0 by
default): like the radio below it, the link is an unreliable datagram service and the
protocol's ACKs recover. With ``qos=1`` a publish interrupted by the disconnection is queued
again and may arrive twice, which the protocol tolerates.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from lpimg.aio import cancel_and_wait
from lpimg.errors import LinkError
from lpimg.link.base import DeviceLink, Inbox, LinkStats, RejectLog, ServerLink, check_frame
from lpimg.link.url import LinkURL, resolve_device_id

log = logging.getLogger("lpimg.link.mqtt")

DEFAULT_MQTT_MTU = 242
"""LoRaWAN's largest application payload (EU868 DR7 / US915 DR4+), so a frame that fits an MQTT
link also fits a LoRaWAN network server behind one."""

DEFAULT_PREFIX = "lpimg"
MAX_MESSAGE = 65_536
"""Largest MQTT message parsed at all; bigger ones are counted ``oversize`` before any JSON
decoding, so a hostile publisher cannot make the server parse megabytes."""


class Rejected(LinkError):
    """Internal: an inbound message is unusable. Always caught, counted and logged; never raised
    out of a link."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail


def device_in_topic(topic: str, before: str, after: str) -> str:
    """The single topic level between ``before`` and ``after``, or :class:`Rejected`."""
    if topic.startswith(before) and topic.endswith(after) and len(topic) > len(before) + len(after):
        device = topic[len(before) : len(topic) - len(after)]
        if "/" not in device:
            return device
    raise Rejected("bad_topic", topic)


def check_topic_level(value: str, what: str) -> str:
    """A device id, app id or prefix must be one non-empty topic level without wildcards."""
    if not value or any(c in value for c in "/+#\x00"):
        raise LinkError(f"{what} {value!r} cannot be used in an MQTT topic (no '/', '+', '#')")
    return value


@dataclass(frozen=True)
class MqttSettings:
    """Broker connection settings shared by every MQTT-based link."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    client_id: str | None = None
    keepalive: int = 30
    qos: int = 0
    mtu: int = DEFAULT_MQTT_MTU
    outbox: int = 256
    inbox: int = 4096
    reconnect_min: float = 0.1
    reconnect_max: float = 5.0
    timeout: float = 5.0

    def __repr__(self) -> str:  # never print the password
        tls = " tls" if self.tls else ""
        return f"<MqttSettings {self.username or ''}@{self.host}:{self.port}{tls}>"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca)
            if self.cert is not None:
                context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise LinkError(f"TLS setup failed: {exc}") from exc
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def parse_mqtt_settings(url: LinkURL, *, default_mtu: int = DEFAULT_MQTT_MTU) -> MqttSettings:
    """Consume the broker parameters of ``url`` (see the module docstring)."""
    tls = url.take_bool("tls", False)
    host, port = url.require_host(8883 if tls else 1883)
    username = url.take_str("username")
    password = url.take_str("password")
    if url.username is not None:
        if username is not None:
            raise LinkError(f"username given twice in {url.redacted}")
        username = url.username
    if url.password is not None:
        if password is not None:
            raise LinkError(f"password given twice in {url.redacted}")
        password = url.password
    if password is not None and username is None:
        raise LinkError(f"a password without a username in {url.redacted}")
    ca, cert, key = url.take_str("ca"), url.take_str("cert"), url.take_str("key")
    insecure = url.take_bool("insecure", False)
    if (ca or cert or key or insecure) and not tls:
        raise LinkError(f"ca/cert/key/insecure need tls=1 in {url.redacted}")
    if key is not None and cert is None:
        raise LinkError(f"key= needs cert= in {url.redacted}")
    reconnect_min = url.take_float("reconnect_min", 0.1, 0.001, 3600.0)
    reconnect_max = url.take_float("reconnect_max", max(5.0, reconnect_min), reconnect_min, 3600.0)
    return MqttSettings(
        host=host,
        port=port,
        username=username,
        password=password,
        tls=tls,
        ca=ca,
        cert=cert,
        key=key,
        insecure=insecure,
        client_id=url.take_str("client_id"),
        keepalive=url.take_int("keepalive", 30, 5, 65_535),
        qos=url.take_int("qos", 0, 0, 1),
        mtu=url.take_int("mtu", default_mtu, 1, MAX_MESSAGE),
        outbox=url.take_int("outbox", 256, 0, 1_000_000),
        inbox=url.take_int("inbox", 4096, 1, 1_000_000),
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
        timeout=url.take_float("timeout", 5.0, 0.1, 600.0),
    )


MessageHandler = Callable[[str, bytes], None]


def _direct_delivery(deliver: Callable[[aiomqtt.Message], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A message "queue" for ``aiomqtt.Client(queue_type=...)`` that hands each message to
    ``deliver`` as paho parses it, instead of queueing it for ``client.messages``.

    aiomqtt's message iterator costs a task and an ``asyncio.wait`` per message, which was
    most of what a server spent on a garbage frame and capped the rate it could read from its
    broker connection (the broker then drops messages for it, legitimate ones included). Our
    handlers are synchronous and never block (they count, filter and put into a bounded
    inbox), so they can run in paho's read callback. ``client.messages`` stays empty and is
    still awaited, for the disconnection it reports.
    """

    class DirectDelivery(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            deliver(item)

    return DirectDelivery


class MqttConnection:
    """One broker session that outlives broker restarts: connect, subscribe, deliver messages,
    publish or queue, reconnect with back-off. Used by every MQTT-based link."""

    def __init__(
        self,
        settings: MqttSettings,
        subscriptions: list[str],
        on_message: MessageHandler,
        stats: LinkStats,
        name: str,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_fatal = on_fatal
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.stats = stats
        self.name = name
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._outbox: deque[tuple[str, bytes, bytes]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failure: str | None = None
        self._overflow_logged = False

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def queued(self) -> int:
        """Frames waiting in the outbox for a connection."""
        return len(self._outbox)

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the broker connection is up (and subscribed); False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def start(self) -> None:
        """First connection; raises :class:`LinkError` if it fails. Reconnections are automatic."""
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(first), name=f"lpimg {self.name}")
        self._task.add_done_callback(lambda task: self._task_done(task, first))
        try:
            await first
        except BaseException:
            await self.close()
            raise

    def _task_done(self, task: asyncio.Task[None], first: asyncio.Future[None]) -> None:
        """The connection task only ends on close or a failed first connection; anything else
        is a bug, and the link must then fail loudly instead of going silent."""
        if task.cancelled() or self._closing:
            return
        exc = task.exception()
        if exc is None:
            return
        reason = f"{self.name}: connection task failed: {type(exc).__name__}: {exc}"
        if not first.done():
            first.set_exception(LinkError(reason))
            return
        log.error("%s", reason, exc_info=exc)
        self._failure = reason
        self._client = None
        self._connected.clear()
        if self.on_fatal is not None:
            self.on_fatal(reason)

    def _client_for(self) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            s.host,
            s.port,
            queue_type=_direct_delivery(self._deliver),
            username=s.username,
            password=s.password,
            identifier=s.client_id,
            keepalive=s.keepalive,
            timeout=s.timeout,
            tls_context=s.ssl_context(),
            logger=logging.getLogger("lpimg.link.mqtt.paho"),
        )

    async def _run(self, first: asyncio.Future[None]) -> None:
        s = self.settings
        delay = s.reconnect_min
        while not self._closing:
            was_connected = False
            try:
                client = self._client_for()
                async with client:
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=s.qos)
                    self._client = client
                    self._connected.set()
                    was_connected = True
                    if first.done():
                        self.stats.reconnects += 1
                        log.info("%s: reconnected to %s:%d", self.name, s.host, s.port)
                    else:
                        first.set_result(None)
                        log.debug("%s: connected to %s:%d", self.name, s.host, s.port)
                    delay = s.reconnect_min
                    flusher = asyncio.create_task(self._flush(client))
                    try:
                        async for message in client.messages:
                            if self._closing:  # a cancellation lost in aiomqtt (see lpimg.aio)
                                break
                            self._deliver(message)
                    finally:
                        self._client = None
                        self._connected.clear()
                        flusher.cancel()
            except (aiomqtt.MqttError, LinkError) as exc:
                self._client = None
                self._connected.clear()
                if not first.done():
                    first.set_exception(LinkError(f"{self.name}: cannot connect to {s.host}:{s.port}: {exc}"))
                    return
                if self._closing:
                    return
                # One warning per outage; the retries of a long outage are INFO, not a flood.
                level = logging.WARNING if was_connected else logging.INFO
                log.log(level, "%s: broker unreachable (%s); retrying in %.2f s", self.name, exc, delay)
            # Jitter keeps a fleet of gateways from reconnecting in lock step after an outage.
            await asyncio.sleep(delay * random.uniform(1.0, 1.25))
            delay = min(delay * 2, s.reconnect_max)

    def _deliver(self, message: aiomqtt.Message) -> None:
        if self._closing:
            return
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = b""
        try:
            self.on_message(message.topic.value, bytes(payload))
        except Exception:
            # A bug in one message's handling must not stop the link for every other device.
            log.exception("%s: failed to handle a message on %s", self.name, message.topic)

    async def _flush(self, client: aiomqtt.Client) -> None:
        """Publish what was queued while disconnected, oldest first."""
        while self._outbox:
            item = self._outbox[0]
            topic, payload, frame = item
            try:
                await client.publish(topic, payload, qos=self.settings.qos)
            except aiomqtt.MqttError:
                return  # connection lost again; the frames stay queued
            # The head may have been dropped by an overflow while we were publishing it.
            if self._outbox and self._outbox[0] is item:
                self._outbox.popleft()
            self.stats.count_out(frame)
        self._overflow_logged = False  # log the next outage's overflow again

    async def publish(self, topic: str, payload: bytes, frame: bytes) -> None:
        """Publish now if connected and nothing is queued ahead; otherwise queue (bounded)."""
        if self._closing:
            raise LinkError(f"{self.name}: link is closed")
        if self._failure is not None:
            raise LinkError(self._failure)
        client = self._client
        if client is not None and not self._outbox:
            try:
                await client.publish(topic, payload, qos=self.settings.qos)
            except aiomqtt.MqttError as exc:
                log.debug("%s: publish failed (%s); queueing", self.name, exc)
            else:
                self.stats.count_out(frame)
                return
        self._enqueue(topic, payload, frame)

    def _enqueue(self, topic: str, payload: bytes, frame: bytes) -> None:
        limit = self.settings.outbox
        if limit == 0:
            self.stats.dropped_out += 1
            return
        if len(self._outbox) >= limit:
            self._outbox.popleft()
            self.stats.dropped_out += 1
            if not self._overflow_logged:
                self._overflow_logged = True
                log.warning(
                    "%s: outbox of %d frames full while disconnected; dropping the oldest",
                    self.name,
                    limit,
                )
        self._outbox.append((topic, payload, frame))

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)  # its failures were reported by _task_done
        self._client = None
        self._connected.clear()
        if self._outbox:
            self.stats.dropped_out += len(self._outbox)
            log.info("%s: closed with %d frames unsent", self.name, len(self._outbox))
            self._outbox.clear()


class MqttDeviceBase(DeviceLink):
    """A device-side link over MQTT. Subclasses define the topics and the payload format."""

    kind = "mqtt"

    def __init__(self, settings: MqttSettings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.mtu = settings.mtu
        self.stats = LinkStats()
        self.name = f"{self.kind} device {device}"
        self._reject = RejectLog(self.stats, self.name)
        self._inbox: Inbox[bytes] = Inbox(settings.inbox, self._reject)
        self._conn = MqttConnection(
            settings,
            self.downlink_subscriptions(),
            self._on_message,
            self.stats,
            self.name,
            on_fatal=self._inbox.close,
        )

    # --- what subclasses define
    def downlink_subscriptions(self) -> list[str]:
        raise NotImplementedError

    def encode_uplink(self, frame: bytes) -> tuple[str, bytes]:
        """Topic and payload that carry ``frame`` to the server."""
        raise NotImplementedError

    def decode_downlink(self, topic: str, payload: bytes) -> list[bytes]:
        """Frames in a downlink message; raise :class:`Rejected` for unusable ones."""
        raise NotImplementedError

    # --- the DeviceLink interface
    @property
    def connected(self) -> bool:
        return self._conn.connected

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait for the broker connection (after an outage); False on timeout."""
        return await self._conn.wait_connected(timeout)

    @property
    def queued(self) -> int:
        """Frames waiting for the broker to come back."""
        return self._conn.queued

    async def open(self) -> None:
        await self._conn.start()

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            if len(payload) > MAX_MESSAGE:
                raise Rejected("oversize", f"{len(payload)}-byte message")
            frames = self.decode_downlink(topic, payload)
        except Rejected as rej:
            self._reject(rej.cause, "server", f"{topic}: {rej.detail}")
            return
        for frame in frames:
            if not frame:
                self._reject("empty", "server", topic)
            elif len(frame) > self.mtu:
                self._reject("oversize", "server", f"{len(frame)} bytes > mtu {self.mtu}")
            else:
                self.stats.count_in(frame)
                self._inbox.put(frame, "server")

    async def send(self, frame: bytes) -> None:
        frame = check_frame(frame, self.mtu)
        if self.closed:
            raise LinkError(f"{self.name}: link is closed")
        topic, payload = self.encode_uplink(frame)
        await self._conn.publish(topic, payload, frame)

    async def recv(self, timeout: float | None = None) -> bytes | None:
        return await self._inbox.get(timeout)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inbox.close("link closed")
        await self._conn.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.device!r} via {self.settings!r}>"


class MqttServerBase(ServerLink):
    """A server-side link over MQTT: many devices on one broker connection."""

    kind = "mqtt"

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self.mtu = settings.mtu
        self.stats = LinkStats()
        self.name = f"{self.kind} server"
        self._reject = RejectLog(self.stats, self.name)
        self._inbox: Inbox[tuple[str, bytes]] = Inbox(settings.inbox, self._reject)
        self._conn = MqttConnection(
            settings,
            self.uplink_subscriptions(),
            self._on_message,
            self.stats,
            self.name,
            on_fatal=self._inbox.close,
        )

    # --- what subclasses define
    def uplink_subscriptions(self) -> list[str]:
        raise NotImplementedError

    def device_from_topic(self, topic: str) -> str:
        """The device an uplink topic belongs to; raise :class:`Rejected` if it is not one."""
        raise NotImplementedError

    def decode_uplink(self, device: str, payload: bytes) -> bytes:
        """The frame in ``device``'s uplink message; raise :class:`Rejected` if unusable."""
        raise NotImplementedError

    def encode_downlink(self, device: str, frame: bytes) -> tuple[str, bytes]:
        raise NotImplementedError

    # --- the ServerLink interface
    @property
    def connected(self) -> bool:
        return self._conn.connected

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait for the broker connection (after an outage); False on timeout."""
        return await self._conn.wait_connected(timeout)

    @property
    def queued(self) -> int:
        """Frames waiting for the broker to come back."""
        return self._conn.queued

    async def open(self) -> None:
        await self._conn.start()

    def _on_message(self, topic: str, payload: bytes) -> None:
        device = "?"
        try:
            device = self.device_from_topic(topic)
            if len(payload) > MAX_MESSAGE:
                raise Rejected("oversize", f"{len(payload)}-byte message")
            frame = self.decode_uplink(device, payload)
            if not frame:
                raise Rejected("empty", "no payload")
            if len(frame) > self.mtu:
                raise Rejected("oversize", f"{len(frame)} bytes > mtu {self.mtu}")
        except Rejected as rej:
            self._reject(rej.cause, device, f"{topic}: {rej.detail}")
            return
        self.stats.count_in(frame)
        self._inbox.put((device, frame), device)

    async def send(self, device: str, frame: bytes) -> None:
        frame = check_frame(frame, self.mtu)
        if self.closed:
            raise LinkError(f"{self.name}: link is closed")
        check_topic_level(device, "device id")
        topic, payload = self.encode_downlink(device, frame)
        await self._conn.publish(topic, payload, frame)

    def prioritize(self, established: Callable[[str], bool]) -> None:
        self._inbox.priority = established

    async def recv(self) -> tuple[str, bytes]:
        item = await self._inbox.get()
        assert item is not None  # no timeout given
        return item

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inbox.close("link closed")
        await self._conn.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} via {self.settings!r}>"


class MqttDeviceLink(MqttDeviceBase):
    """Device side of a plain ``mqtt://`` link: raw frames on ``{prefix}/{device}/up|down``."""

    def __init__(self, settings: MqttSettings, device: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = check_topic_level(prefix, "topic prefix")
        check_topic_level(device, "device id")
        self.up_topic = f"{prefix}/{device}/up"
        self.down_topic = f"{prefix}/{device}/down"
        super().__init__(settings, device)

    def downlink_subscriptions(self) -> list[str]:
        return [self.down_topic]

    def encode_uplink(self, frame: bytes) -> tuple[str, bytes]:
        return self.up_topic, frame

    def decode_downlink(self, topic: str, payload: bytes) -> list[bytes]:
        if topic != self.down_topic:
            raise Rejected("bad_topic", topic)
        return [payload]


class MqttServerLink(MqttServerBase):
    """Server side of a plain ``mqtt://`` link: subscribes ``{prefix}/+/up``."""

    def __init__(self, settings: MqttSettings, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = check_topic_level(prefix, "topic prefix")
        super().__init__(settings)

    def uplink_subscriptions(self) -> list[str]:
        return [f"{self.prefix}/+/up"]

    def device_from_topic(self, topic: str) -> str:
        return device_in_topic(topic, f"{self.prefix}/", "/up")

    def decode_uplink(self, device: str, payload: bytes) -> bytes:
        return payload

    def encode_downlink(self, device: str, frame: bytes) -> tuple[str, bytes]:
        return f"{self.prefix}/{device}/down", frame


def mqtt_device_link(url: LinkURL, device_id: str | None) -> MqttDeviceLink:
    """Factory for ``mqtt://`` device links (see :mod:`lpimg.link.url`)."""
    device = resolve_device_id(url, device_id, required=True)
    assert device is not None
    prefix = url.take_str("prefix", DEFAULT_PREFIX) or DEFAULT_PREFIX
    settings = parse_mqtt_settings(url)
    url.finish()
    return MqttDeviceLink(settings, device, prefix)


def mqtt_server_link(url: LinkURL) -> MqttServerLink:
    """Factory for ``mqtt://`` server links (see :mod:`lpimg.link.url`)."""
    prefix = url.take_str("prefix", DEFAULT_PREFIX) or DEFAULT_PREFIX
    settings = parse_mqtt_settings(url)
    url.finish()
    return MqttServerLink(settings, prefix)
