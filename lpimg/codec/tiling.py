"""Encoding images larger than the KPU's 320x240 input as overlapping tiles, without seams.

The analysis transform's receptive field is 55 pixels (six 3x3 convolutions, total stride 16), so
a latent depends on pixels at most 20 before and 35 after its own 16x16 block. A tile whose input
window extends ``MARGIN`` = 2 latents (32 px) beyond the latents it keeps therefore computes those
latents exactly as a whole-image pass would: tiled and untiled encodings are *identical*, not just
close, and the tile grid leaves no trace in the picture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

DOWNSCALE = 16
MAX_TILE_W = 320
MAX_TILE_H = 240
MARGIN = 2  # latents of context on each inner side of a tile
RECEPTIVE_FIELD = 55


@dataclass(frozen=True)
class Tile:
    """Latent rectangles: ``core`` is kept, ``window`` is what the encoder sees."""

    core: tuple[int, int, int, int]  # x, y, w, h in latents
    window: tuple[int, int, int, int]


def padded_size(width: int, height: int) -> tuple[int, int]:
    return -(-width // DOWNSCALE) * DOWNSCALE, -(-height // DOWNSCALE) * DOWNSCALE


def pad_image(img: np.ndarray) -> np.ndarray:
    """Edge-replicate to a multiple of 16 (replication, not black, so borders code cheaply)."""
    h, w = img.shape[:2]
    pw, ph = padded_size(w, h)
    return np.pad(img, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")


def plan_tiles(lat_w: int, lat_h: int) -> list[Tile]:
    max_w, max_h = MAX_TILE_W // DOWNSCALE, MAX_TILE_H // DOWNSCALE
    if lat_w <= max_w and lat_h <= max_h:
        return [Tile((0, 0, lat_w, lat_h), (0, 0, lat_w, lat_h))]
    core_w, core_h = max_w - 2 * MARGIN, max_h - 2 * MARGIN
    tiles = []
    for y0 in range(0, lat_h, core_h):
        for x0 in range(0, lat_w, core_w):
            cw, ch = min(core_w, lat_w - x0), min(core_h, lat_h - y0)
            wx0, wy0 = max(0, x0 - MARGIN), max(0, y0 - MARGIN)
            wx1, wy1 = min(lat_w, x0 + cw + MARGIN), min(lat_h, y0 + ch + MARGIN)
            tiles.append(Tile((x0, y0, cw, ch), (wx0, wy0, wx1 - wx0, wy1 - wy0)))
    return tiles


def iter_tiles(padded: np.ndarray) -> Iterator[tuple[Tile, np.ndarray]]:
    ph, pw = padded.shape[:2]
    for tile in plan_tiles(pw // DOWNSCALE, ph // DOWNSCALE):
        wx, wy, ww, wh = tile.window
        yield tile, padded[wy * 16:(wy + wh) * 16, wx * 16:(wx + ww) * 16]


def encode_tiled(
    padded: np.ndarray, channels: int, encode_tile: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Run ``encode_tile`` (uint8 HxWx3 -> int latents CxhXw) per tile and stitch the cores."""
    ph, pw = padded.shape[:2]
    out = np.zeros((channels, ph // DOWNSCALE, pw // DOWNSCALE), dtype=np.int32)
    for tile, pixels in iter_tiles(padded):
        lat = encode_tile(pixels)
        cx, cy, cw, ch = tile.core
        wx, wy = tile.window[:2]
        out[:, cy:cy + ch, cx:cx + cw] = lat[:, cy - wy:cy - wy + ch, cx - wx:cx - wx + cw]
    return out
