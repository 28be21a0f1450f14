"""Loading and validating pictures before they reach the codec."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lpimg.errors import ImageInputError

MIN_SIDE = 16
MAX_SIDE = 4080  # 255 latent positions: a refine region (u8 latent units on the wire) can cover it


def to_rgb_array(image: Image.Image, *, name: str = "image") -> np.ndarray:
    """Any PIL image -> uint8 HxWx3, converting what can be converted and saying so."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        warnings.warn(f"{name}: {mode} image scaled to 8 bits", stacklevel=2)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
        warnings.warn(f"{name}: alpha channel composited onto white", stacklevel=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def check_geometry(width: int, height: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageInputError(
            f"image is {width}x{height}; lpimg needs at least {MIN_SIDE}x{MIN_SIDE} pixels")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageInputError(
            f"image is {width}x{height}; the largest lpimg codes is {MAX_SIDE}x{MAX_SIDE} "
            "(split it or downscale it first)")


def load_image(path: str | Path) -> np.ndarray:
    """Read a picture file into uint8 HxWx3, with a clear error for anything unusable."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            arr = to_rgb_array(im, name=path.name)
    except FileNotFoundError as exc:
        raise ImageInputError(f"{path}: no such file") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageInputError(f"{path}: not a readable image ({exc})") from exc
    check_geometry(arr.shape[1], arr.shape[0])
    return arr


def as_rgb(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        arr = to_rgb_array(image)
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ImageInputError(f"expected an HxWx3 RGB array, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise ImageInputError(f"expected uint8 pixels, got {arr.dtype}")
        arr = np.ascontiguousarray(arr[:, :, :3])
    check_geometry(arr.shape[1], arr.shape[0])
    return arr
