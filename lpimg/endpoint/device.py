"""The device role: encode a picture, carry its layers over a link, resume after a reboot.

:class:`Device` is the asyncio adapter around :class:`lpimg.protocol.DeviceSession` (which makes
every decision) and the codec (which answers refine requests). It only does what the sans-I/O
core cannot: wait for the radio, move frames, read the clock, persist state::

    async with open_device_link("mqtt://broker:1883", "cam-7") as link:
        device = Device(link, store="/var/lib/lpimg")
        result = await device.send("snapshot.png", layers=8)
        print(result.completed, result.reason)

Time. ``now`` is the link's virtual clock for ``sim://`` links and the event loop's clock
otherwise, so the same code runs hours of simulated LoRaWAN in milliseconds or a real modem.

Pacing. The session is asked for a frame only when the radio may transmit: for ``sim://`` the
link says when (airtime, duty cycle, receive windows); for a real radio behind a serial port the
device applies :class:`Pacing` (a minimum interval and/or a duty-cycle budget computed from the
LoRa time on air), because a modem in transparent mode will not refuse a frame that breaks the
regulations. Asking at the moment of transmission, not earlier, is what lets an ACK that
arrived in the meantime change what is sent.

Persistence. With a ``store`` directory every layer and the session's shape are written
(atomically) before they are sent, so a device that reboots mid-transfer calls
:meth:`Device.send` with the same picture (or :meth:`Device.resume` without it) and the session
resumes: the server reports what it holds and only the rest is sent.

Fixed cameras. ``send(image, reference="auto")`` codes the picture against the device's
:attr:`Device.reference`: the server's state of the last picture, mirrored from the layers the
server acknowledged (no decoding). After every finished session that got at least one layer
acknowledged, the reference becomes that picture's acknowledged state; otherwise the old one is
kept (it is dropped only for an acknowledged replacement, or when the server says it does not
hold it). A server that answers ABORT(UNKNOWN_REFERENCE) gets the same picture again, coded
without a reference, in a new session (:attr:`DeviceResult.fell_back`). With a ``store`` the
reference survives reboots.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lpimg.codec.shipped import DEFAULT_MODEL
from lpimg.endpoint.coding import (
    EncodedImage,
    encode_image,
    encoder_from_latents,
    refine_layers,
    to_codec_region,
    with_reference,
    with_top_plane,
)
from lpimg.endpoint.references import HeldReference
from lpimg.endpoint.sim import SimDeviceLink
from lpimg.endpoint.store import DeviceStore, StoredSession, StoreError, atomic_write
from lpimg.errors import CodecError, LinkError, LpimgError, ProtocolError
from lpimg.link.base import DeviceLink
from lpimg.link.sim.budget import DutyCycle
from lpimg.protocol import (
    Aborted,
    DeviceSession,
    DeviceStats,
    Event,
    LayersAcknowledged,
    ProtocolConfig,
    RefineRequested,
)
from lpimg.protocol.auth import check_key
from lpimg.protocol.stats import DEVICE_CAUSES
from lpimg.wire import MAX_MTU, MIN_MTU, AbortReason, Manifest, decode_manifest, encode_manifest

if TYPE_CHECKING:
    from lpimg.codec.bitplane import LayerSpec
    from lpimg.codec.pipeline import ImageEncoder, LearnedCodec
    from lpimg.codec.reference import ConditionalEncoder

    Encoder = ImageEncoder | ConditionalEncoder

log = logging.getLogger("lpimg.endpoint.device")

COUNTER_FILE = "downlink-counter"
"""In the store directory: the last downlink counter accepted (authenticated sessions)."""


@dataclass(frozen=True)
class Pacing:
    """How often a device on a real radio may transmit.

    ``min_interval`` is the least time between the starts of two uplinks. ``duty_cycle`` (a
    fraction, 0.01 for EU868) needs ``airtime(bytes) -> seconds``, the time on air of a frame,
    and keeps the transmitter silent for ``airtime * (1/dc - 1)`` after each frame.
    ``rx_window`` makes the device behave like a LoRaWAN class A radio: after each uplink it
    listens up to that long for the answer before transmitting again (at once if one comes).

    The default paces nothing: right for a wired line and for ``sim://``, which paces itself.
    On a fast link with loss (MQTT across the Internet) a little pacing pays: a device that
    blasts its whole window before any answer can come back also gets the answers to all of it
    late, and after a lost session start every one of them is an "unknown session" that makes
    the protocol core start again (each restart spending one of fragment 0's attempts).
    """

    min_interval: float = 0.0
    duty_cycle: float | None = None
    airtime: Callable[[int], float] | None = None
    rx_window: float = 0.0

    def __post_init__(self) -> None:
        if self.min_interval < 0 or self.rx_window < 0:
            raise LpimgError(f"min_interval and rx_window must be >= 0, got {self}")
        if self.duty_cycle is not None:
            if not 0.0 < self.duty_cycle <= 1.0:
                raise LpimgError(f"duty cycle must be in (0, 1], got {self.duty_cycle}")
            if self.airtime is None:
                raise LpimgError("a duty-cycle budget needs airtime(bytes) to charge frames")

    @classmethod
    def lorawan(cls, spec: str = "lorawan-eu868:dr3", *, min_interval: float = 0.0) -> Pacing:
        """The regional duty cycle and LoRa airtime of a link profile (``lorawan-eu868:dr0``),
        for a modem that does not enforce them itself."""
        from lpimg.link.sim.profiles import LoRaWANProfile, parse_link_spec

        profile = parse_link_spec(spec)
        if not isinstance(profile, LoRaWANProfile):
            return cls(min_interval=min_interval)
        return cls(min_interval, profile.duty_cycle, profile.uplink_airtime)


class _Pacer:
    def __init__(self, pacing: Pacing) -> None:
        self.pacing = pacing
        self._last: float | None = None
        self._listen_until = -float("inf")
        self._duty = DutyCycle(pacing.duty_cycle) if pacing.duty_cycle is not None else None

    def ready_at(self) -> float:
        time_ = self._listen_until
        if self._last is not None:
            time_ = max(time_, self._last + self.pacing.min_interval)
        if self._duty is not None:
            time_ = max(time_, self._duty.ready_at())
        return time_

    def sent(self, now: float, size: int) -> None:
        self._last = now
        if self.pacing.rx_window:
            self._listen_until = now + self.pacing.rx_window
        if self._duty is not None:
            assert self.pacing.airtime is not None
            self._duty.transmit(now, self.pacing.airtime(size))

    def heard(self) -> None:
        """A downlink arrived: the receive window it answered is over."""
        self._listen_until = -float("inf")


@dataclass(frozen=True)
class DeviceResult:
    """How a device's session ended.

    ``completed`` is True when the server has what it asked for: every layer (``reason``
    "complete") or as much as it wanted ("stopped"). Otherwise ``reason`` says why not
    ("aborted: ...", "gave up ...", "link failed: ...", "timed out ...").
    """

    completed: bool
    reason: str
    session_id: int
    layers: int
    """Layers announced, refinements included."""
    layers_acknowledged: int
    layer_bytes: int
    """Codec bytes of every layer announced (what the server gets if it takes everything)."""
    refines_answered: int
    """Refine requests answered with at least one layer."""
    resumed: bool
    duration_s: float
    """Link-clock seconds from the first frame to the end (virtual for sim://)."""
    stats: DeviceStats = field(default_factory=DeviceStats)
    reference_id: int | None = None
    """Frame id of the reference the delivered picture was coded against (None: intra)."""
    fell_back: bool = False
    """The server did not hold the reference the picture was first coded against, so it was sent
    again without one (this result is that second session's)."""

    @property
    def uplinks(self) -> int:
        return self.stats.uplinks

    @property
    def downlinks(self) -> int:
        return self.stats.downlinks

    @property
    def retransmissions(self) -> int:
        return self.stats.retransmissions


EventHook = Callable[[Event], None]


class Device:
    """The device role over one :class:`~lpimg.link.DeviceLink` (see the module docstring).

    ``codec`` (or ``model``, loaded on first use) encodes pictures and answers refine requests.
    ``store`` makes sessions survive a restart. ``on_event`` sees every protocol event (for
    logging or a progress display). One session runs at a time.
    """

    def __init__(
        self,
        link: DeviceLink,
        *,
        codec: LearnedCodec | None = None,
        model: str = DEFAULT_MODEL,
        store: str | Path | DeviceStore | None = None,
        config: ProtocolConfig | None = None,
        pacing: Pacing | None = None,
        mtu: int | None = None,
        on_event: EventHook | None = None,
        key: bytes | None = None,
    ) -> None:
        self.link = link
        self._codec = codec
        self._model = model
        self.store = store if isinstance(store, DeviceStore) or store is None else DeviceStore(store)
        self.config = config or ProtocolConfig()
        self.pacing = pacing or Pacing()
        self.mtu = min(mtu or link.mtu, link.mtu, MAX_MTU)
        if self.mtu < MIN_MTU:
            raise LinkError(f"the link carries {self.mtu}-byte frames; lpimg needs at least {MIN_MTU}")
        self.on_event = on_event
        self.key = None if key is None else check_key(key)
        """With a key every session is authenticated (spec section 15)."""
        self._logged: set[str] = set()
        self._downlink_counter: int | None = None
        """Read from the store on first use (see :attr:`downlink_counter`)."""
        self.session: DeviceSession | None = None
        """The running (or last) protocol session, for inspection."""
        self._encoder: Encoder | None = None
        self._stored: StoredSession | None = None
        self._refines_answered = 0
        self._pending_specs: list[Any] = []
        self._specs: list[LayerSpec] = []
        """The codec's name of every layer of the running session, refinements included."""
        self._base: HeldReference | None = None
        """The reference the running session's picture is coded against (None: intra, or a
        resumed picture whose reference this device no longer holds)."""
        self._named: int | None = None
        """The reference frame id the running session's manifest names."""
        self._peer_abort: AbortReason | None = None
        self._busy = False
        self.reference: HeldReference | None = self._load_reference()
        """The state the server holds of this device's last acknowledged picture (fixed cameras:
        ``send(..., reference="auto")`` codes against it), or None."""

    # -- clock and codec ---------------------------------------------------------------------

    def _now(self) -> float:
        if isinstance(self.link, SimDeviceLink):
            return self.link.clock.time()
        return asyncio.get_running_loop().time()

    @property
    def codec(self) -> LearnedCodec:
        """The codec (loaded on first use)."""
        if self._codec is None:
            from lpimg.codec.pipeline import LearnedCodec

            self._codec = LearnedCodec.load(self._model)
        return self._codec

    # -- public API --------------------------------------------------------------------------

    async def send(
        self,
        image: np.ndarray | str | Path,
        *,
        layers: int | None = None,
        manifest: Manifest | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        reference: Literal["auto"] | HeldReference | None = None,
    ) -> DeviceResult:
        """Encode ``image`` (an array or a picture file) into its first ``layers`` layers and
        deliver it. If the store holds an unfinished session of the same picture (same pixels,
        model, layer count and reference), that session is resumed instead.

        ``reference="auto"`` codes the picture against :attr:`reference` when the device holds
        one (a fixed camera; intra otherwise); a :class:`HeldReference` codes against that one.
        ``layers`` counts bitplane passes either way (a reference-coded picture adds its tile-mode
        map). If the server does not hold the reference, the picture is sent again without it.

        ``timeout`` (link-clock seconds) gives the session up (the server is told) if it has
        not ended by then; it applies to each session (the fallback is a second one). Raises
        :class:`lpimg.LpimgError` only for unusable input (the picture, the model); every way
        the transfer itself can end is a :class:`DeviceResult`.
        """
        if isinstance(image, str | Path):
            from lpimg.codec.image import load_image

            image = load_image(image)
        if reference == "auto":
            base = self.reference
        elif reference is None or isinstance(reference, HeldReference):
            base = reference
        else:
            raise LpimgError(f"reference must be 'auto', a HeldReference or None, got {reference!r}")
        encoded, encoder = encode_image(self.codec, image, layers, None if base is None else base.state)
        stored = self._load_stored()
        if stored is not None and stored.digest == encoded.digest and stored.mtu == self.mtu:
            log.info("resuming stored session %04x", stored.session_id)
            result = await self._resume(stored, timeout)
        else:
            if stored is not None:
                log.warning("stored session %04x was for another picture; starting a new one",
                            stored.session_id)
            self._encoder = encoder
            result = await self._start(encoded, manifest, timeout, base)
        if base is not None and self._peer_abort is AbortReason.UNKNOWN_REFERENCE:
            log.warning("the server does not hold reference %04x/%s: sending the picture again "
                        "without it", base.frame_id, base.digest.hex())
            if self.reference is base:
                self._set_reference(None)
            encoded, encoder = encode_image(self.codec, image, layers)
            self._encoder = encoder
            result = replace(await self._start(encoded, manifest, timeout, None), fell_back=True)
        return result

    async def send_encoded(
        self,
        encoded: EncodedImage,
        *,
        manifest: Manifest | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        encoder: Encoder | None = None,
        reference: HeldReference | None = None,
    ) -> DeviceResult:
        """Deliver layers encoded elsewhere (for example on the camera's accelerator).

        Refine requests are answered if ``encoder`` (whose pass counters match the layers) or
        ``encoded.latents`` is given, and declined otherwise. A picture coded against a
        reference needs that ``reference`` (its frame id goes into the manifest); if the server
        does not hold it the session ends "aborted: unknown reference" (no fallback here: the
        layers are given, not the picture). This always starts a new session (recorded in the
        store, if any); after a reboot, call :meth:`resume` first.
        """
        if encoder is None and encoded.latents is not None:
            header = encoded.header
            from lpimg.codec.bitplane import LayerSpec

            encoder = encoder_from_latents(
                self.codec, encoded.latents, header.width, header.height,
                [LayerSpec(i) for i in range(len(encoded.layers))],
                None if reference is None else reference.state,
            )
        self._encoder = encoder
        return await self._start(encoded, manifest, timeout, reference)

    async def resume(self, *, timeout: float | None = None) -> DeviceResult | None:
        """Resume the session the store holds (after a reboot); None if there is none."""
        stored = self._load_stored()
        if stored is None:
            return None
        return await self._resume(stored, timeout)

    # -- the reference (fixed cameras) -------------------------------------------------------

    def _load_reference(self) -> HeldReference | None:
        if self.store is None:
            return None
        try:
            return self.store.load_reference()
        except StoreError as exc:
            log.warning("ignoring the stored reference: %s", exc)
            return None

    def _set_reference(self, reference: HeldReference | None) -> None:
        self.reference = reference
        if self.store is not None:
            try:
                self.store.save_reference(reference)
            except OSError as exc:
                log.warning("could not store the reference: %s", exc)

    def _advance_reference(self, session: DeviceSession) -> None:
        """After a finished session: the server's state of the layers it acknowledged becomes
        the reference, if it acknowledged any (else the old one stays, and the server, which
        keeps the base of its last picture, still holds it)."""
        count = session.acknowledged_layers
        encoder = self._encoder
        if count < 1 or encoder is None or len(self._specs) < count:
            return
        from lpimg.codec.reference import ReferenceState

        try:
            state = ReferenceState.from_encoder(encoder, self._specs[:count])
        except CodecError as exc:
            log.warning("cannot mirror the server's state of session %04x: %s", session.session_id, exc)
            return
        self._set_reference(HeldReference(session.session_id, state))
        log.info("reference is now session %04x (%d layers, %s)", session.session_id, count,
                 state.hash().hex())

    # -- downlink counter (authenticated sessions) ----------------------------------------------

    @property
    def downlink_counter(self) -> int:
        """The last downlink counter this device accepted (spec section 15).

        It must never go back, or old downlinks could be replayed: it is carried from session
        to session and, with a store, kept in ``downlink-counter`` there across reboots.
        """
        if self._downlink_counter is None:
            counter = 0
            if isinstance(self.store, DeviceStore):
                try:
                    counter = int((self.store.path / COUNTER_FILE).read_text())
                except (OSError, ValueError):
                    counter = 0  # none stored yet (or unreadable: nothing better to start from)
            self._downlink_counter = counter
        return self._downlink_counter

    def _keep_counter(self, session: DeviceSession) -> None:
        if session.downlink_counter <= self.downlink_counter:
            return
        self._downlink_counter = session.downlink_counter
        if isinstance(self.store, DeviceStore):
            try:
                atomic_write(self.store.path / COUNTER_FILE, str(self._downlink_counter).encode())
            except OSError as exc:
                log.warning("could not store the downlink counter: %s", exc)

    def _log_rejections(self, session: DeviceSession) -> None:
        """Log each cause of dropped downlinks once per device (they are all counted)."""
        for cause in session.stats.take_fresh():
            if cause in self._logged:
                continue
            self._logged.add(cause)
            log.warning("session %04x: dropped a downlink (%s: %s); further ones are only counted",
                        session.session_id, cause, DEVICE_CAUSES.get(cause, cause))

    # -- starting and resuming ---------------------------------------------------------------

    def _load_stored(self) -> StoredSession | None:
        if self.store is None:
            return None
        try:
            return self.store.load()
        except StoreError as exc:
            log.warning("ignoring the session store: %s", exc)
            return None

    def _session_id(self) -> int:
        if self.store is not None:
            return self.store.next_session_id()
        import secrets

        return secrets.randbelow(0x10000)

    async def _start(
        self, encoded: EncodedImage, manifest: Manifest | Mapping[str, Any] | None, timeout: float | None,
        base: HeldReference | None = None,
    ) -> DeviceResult:
        header = encoded.header
        if (header.condition is None) != (base is None):
            raise CodecError("a reference-coded picture needs its reference, and an intra picture none")
        if base is not None and header.condition is not None and header.condition.reference != base.digest:
            raise CodecError("the picture was coded against another reference than the one given")
        if manifest is None:
            manifest = Manifest(capture_time=int(time.time()))
        full = with_top_plane(manifest, header.top_plane)
        if base is not None and header.condition is not None:
            full = with_reference(full, base.frame_id, header.condition)
        session_id = self._session_id()
        from lpimg.codec.bitplane import LayerSpec

        stored = StoredSession(
            session_id=session_id,
            mtu=self.mtu,
            model_id=header.model_id,
            width=header.width,
            height=header.height,
            top_plane=header.top_plane,
            manifest=encode_manifest(full),
            digest=encoded.digest,
            specs=[LayerSpec(i) for i in range(len(encoded.layers))],
        )
        try:
            session = DeviceSession(
                session_id, list(encoded.layers), mtu=self.mtu, now=self._now(),
                model_id=header.model_id, geometry=(header.width, header.height), manifest=full,
                config=self.config, key=self.key, downlink_counter=self.downlink_counter,
            )
        except ProtocolError as exc:
            raise CodecError(f"these layers cannot be sent over this link: {exc}") from exc
        if self.store is not None:
            latents = encoded.latents
            if latents is None and self._encoder is not None:
                latents = self._encoder.latents
            self.store.begin(stored, encoded.layers, latents)
        self._stored = stored
        self._specs = list(stored.specs)
        self._base = base
        self._named = full.reference_id
        return await self._run(session, resumed=False, timeout=timeout)

    async def _resume(self, stored: StoredSession, timeout: float | None) -> DeviceResult:
        assert self.store is not None
        try:
            layers = self.store.layers(stored)
            manifest = decode_manifest(stored.manifest)
            latents = self.store.latents(stored)
        except (StoreError, LpimgError) as exc:
            raise StoreError(f"cannot resume stored session {stored.session_id:04x}: {exc}") from exc
        self._encoder = None
        base = self.reference
        if manifest.reference_hash is None:
            base = None
        elif base is None or base.digest != manifest.reference_hash:
            # The picture's reference is gone: the session still resumes (the layers are
            # stored), but refine requests are declined and the reference is not advanced.
            log.warning("stored session %04x was coded against a reference this device no longer "
                        "holds: refine requests will be declined", stored.session_id)
            base = None
            latents = None
        if latents is not None:
            if stored.model_id != self.codec.model_id:
                log.warning("stored session %04x was coded by model %#06x, not %#06x: refine "
                            "requests will be declined", stored.session_id, stored.model_id,
                            self.codec.model_id)
            else:
                self._encoder = encoder_from_latents(
                    self.codec, latents, stored.width, stored.height, stored.specs,
                    None if base is None else base.state)
        session = DeviceSession.resume(
            stored.session_id, layers, mtu=stored.mtu, now=self._now(), model_id=stored.model_id,
            geometry=(stored.width, stored.height), manifest=manifest, config=self.config,
            added_groups=stored.groups, key=self.key, downlink_counter=self.downlink_counter,
        )
        self._stored = stored
        self._specs = list(stored.specs)
        self._base = base
        self._named = manifest.reference_id
        return await self._run(session, resumed=True, timeout=timeout)

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self, session: DeviceSession, *, resumed: bool, timeout: float | None) -> DeviceResult:
        if self._busy:
            raise LpimgError("this device already runs a session")
        self._busy = True
        self.session = session
        self._refines_answered = 0
        self._peer_abort = None
        pacer = _Pacer(self.pacing)
        link = self.link
        started = self._now()
        deadline = None if timeout is None else started + timeout
        override: str | None = None
        wants_send = True
        try:
            while True:
                self._drain(session)
                if session.finished:
                    break
                now = self._now()
                if deadline is not None and now >= deadline and override is None:
                    override = f"timed out after {timeout:g} s"
                    session.abort(AbortReason.CANCELLED)
                    wants_send = True
                    continue
                # Downlinks that already arrived come first: an ACK changes what to send.
                reply = await link.recv(0)
                if reply is not None:
                    session.receive_frame(reply, self._now())
                    self._after_downlink(session)
                    pacer.heard()
                    wants_send = True
                    continue
                timer = session.get_timer()
                if timer is not None and now >= timer:
                    session.handle_timer(now)
                    wants_send = True
                    continue
                ready = pacer.ready_at()
                if isinstance(link, SimDeviceLink):
                    ready = max(ready, link.transmit_ready_at())
                if wants_send and ready <= now:
                    frame = session.next_frame(now)
                    if frame is None:
                        wants_send = False
                    else:
                        await link.send(frame)
                        pacer.sent(now, len(frame))
                        if not isinstance(link, SimDeviceLink):
                            await asyncio.sleep(0)  # let the link's reader hand over downlinks
                    continue
                waits = [t for t in (timer, None if override else deadline) if t is not None]
                if wants_send:
                    waits.append(ready)
                wake = min(waits) if waits else None
                reply = await link.recv(None if wake is None else max(0.0, wake - now))
                if reply is not None:
                    session.receive_frame(reply, self._now())
                    self._after_downlink(session)
                    pacer.heard()
                    wants_send = True
        except LinkError as exc:
            reason = f"link failed: {exc}"
            log.warning("session %04x interrupted (%s); %s", session.session_id, exc,
                        "the store keeps it for a resume" if self.store else "it is lost")
            return self._result(session, False, reason, resumed, started, finished=False)
        finally:
            self._busy = False
        reason = override or session.reason or "ended"
        completed = session.reason in ("complete", "stopped") and override is None
        result = self._result(session, completed, reason, resumed, started, finished=True)
        self._advance_reference(session)
        return replace(result, reference_id=self._named)

    def _after_downlink(self, session: DeviceSession) -> None:
        if self.key is not None:
            self._keep_counter(session)
        self._log_rejections(session)

    def _result(
        self, session: DeviceSession, completed: bool, reason: str, resumed: bool, started: float,
        *, finished: bool,
    ) -> DeviceResult:
        if finished and self.store is not None:
            try:
                self.store.finish(session.session_id, reason)
            except OSError as exc:
                log.warning("could not record the end of session %04x: %s", session.session_id, exc)
        log.info("session %04x ended: %s", session.session_id, reason)
        end = session.finished_at if session.finished_at is not None else self._now()
        return DeviceResult(
            completed=completed,
            reason=reason,
            session_id=session.session_id,
            layers=session.layer_count,
            layers_acknowledged=session.acknowledged_layers,
            layer_bytes=sum(len(layer) for layer in session.layers),
            refines_answered=self._refines_answered,
            resumed=resumed,
            duration_s=end - started,
            stats=session.stats,
        )

    def _drain(self, session: DeviceSession) -> None:
        while (event := session.next_event()) is not None:
            if isinstance(event, RefineRequested):
                self._answer_refine(session, event)
            elif isinstance(event, LayersAcknowledged):
                log.debug("session %04x: %d layers acknowledged", session.session_id, event.count)
            elif isinstance(event, Aborted) and event.by_peer:
                self._peer_abort = event.code
            if self.on_event is not None:
                self.on_event(event)
        self._persist_groups(session)

    def _persist_groups(self, session: DeviceSession) -> None:
        """Store every group appended since the last call, before any of it is sent.

        Declined requests count too (the session appended an empty group, perhaps on its own
        after ``refine_timeout``): a resumed session must rebuild exactly the same stream.
        """
        stored = self._stored
        if self.store is None or stored is None:
            self._pending_specs.clear()
            return
        for group in session.added_groups[len(stored.groups):]:
            first = len(stored.specs)
            layers = list(session.layers[first : first + group.layer_count])
            specs = self._pending_specs[: group.layer_count]
            del self._pending_specs[: group.layer_count]
            if len(specs) != group.layer_count:
                from lpimg.codec.bitplane import LayerSpec

                specs = [LayerSpec(group.first_pass + i, to_codec_region(group.region))
                         for i in range(group.layer_count)]
            self.store.add_group(stored, group, specs, layers)

    def _answer_refine(self, session: DeviceSession, request: RefineRequested) -> None:
        """Encode the passes the server asked for, persist them, then announce them."""
        if self._encoder is None:
            log.info("declining refine request (no latents to encode from)")
            session.decline_refine()
            return
        try:
            specs, layers, region = refine_layers(self._encoder, request.region, request.pass_index)
        except CodecError as exc:
            log.warning("declining refine request %s: %s", request, exc)
            session.decline_refine()
            return
        if not layers:
            session.decline_refine()
            return
        first_pass = specs[0].index
        try:
            session.add_layers(layers, region=region, first_pass=first_pass)
        except ProtocolError as exc:
            log.warning("cannot append the refinement: %s; declining", exc)
            session.decline_refine()
            return
        self._pending_specs.extend(specs)
        self._specs.extend(specs)
        self._refines_answered += 1
        log.info("refine: %d layers (passes %d..%d) over %s", len(layers), first_pass,
                 specs[-1].index, region or "the whole image")


def encoded_from_layers(
    header: Any, layers: Sequence[bytes], latents: np.ndarray | None = None, digest: str = ""
) -> EncodedImage:
    """An :class:`EncodedImage` from a stream header and group 0 layers (passes 0..n-1)."""
    return EncodedImage(header, tuple(bytes(layer) for layer in layers), latents, digest)
