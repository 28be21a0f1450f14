"""Writing what a server receives: ``<out>/<device>/<image>.png`` plus a JSON sidecar.

Used by ``lpimg serve`` and the examples. Both files are replaced atomically at every update,
so a web page or a script polling the folder never reads half a picture, and device and image
ids (which come from the network: an MQTT topic level, a DevEUI) are reduced to harmless file
names first, so a device called ``..`` cannot write outside the output folder.
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

from lpimg.endpoint.server import ImageUpdate
from lpimg.endpoint.store import atomic_write

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(text: str) -> str:
    """A device or image id as one harmless path component (no '/', no leading dot)."""
    name = _SAFE.sub("_", text).lstrip(".") or "_"
    return name[:128]


def sidecar(update: ImageUpdate, png: str | None = None) -> dict[str, object]:
    """The JSON-ready description of an update: layers, bytes, timing, how it ended."""
    return {
        "device": update.device,
        "session_id": update.session_id,
        "image_id": update.image_id,
        "width": update.width,
        "height": update.height,
        "model_id": update.model_id,
        "reference_id": update.reference_id,
        "layers": update.layers,
        "bytes": update.bytes,
        "final": update.final,
        "reason": update.reason,
        "png": png,
        "timing": {
            "started_at": update.started_at,
            "updated_at": update.updated_at,
            "elapsed_s": update.updated_at - update.started_at,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(update.wall_time)),
        },
        "received": [
            {"index": layer.index, "pass": layer.pass_index, "bytes": layer.size,
             "region": None if layer.region is None else
             [layer.region.x, layer.region.y, layer.region.width, layer.region.height],
             "at": layer.at}
            for layer in update.received
        ],
    }


def write_update(out: str | Path, update: ImageUpdate) -> Path:
    """Write ``<out>/<device>/<image>.png`` (if the session is decoded) and ``<image>.json``,
    each atomically; returns the PNG's path."""
    from PIL import Image

    out = Path(out)
    folder = out / safe_name(update.device)
    folder.mkdir(parents=True, exist_ok=True)
    stem = safe_name(update.image_id)
    png = folder / f"{stem}.png"
    if update.decodable:
        buffer = io.BytesIO()
        Image.fromarray(update.reconstruction).save(buffer, format="PNG")
        atomic_write(png, buffer.getvalue())
    doc = sidecar(update, png.name if update.decodable else None)
    atomic_write(folder / f"{stem}.json", json.dumps(doc, indent=1).encode())
    return png
