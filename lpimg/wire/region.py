"""Rectangles of latent positions, the unit in which refinement is asked for and answered."""

from __future__ import annotations

from dataclasses import dataclass

from lpimg.errors import WireError
from lpimg.wire.codes import LATENT_UNIT_PIXELS


@dataclass(frozen=True, slots=True)
class Region:
    """A rectangle in latent units (one unit = 16x16 pixels), each coordinate one byte.

    The wire value (0, 0, 0, 0) means "the whole image" and is represented in Python by
    ``None`` wherever a region is optional, never by a ``Region``; so a ``Region`` always has a
    positive area.
    """

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("x", "y", "width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 255:
                raise WireError(f"region {name} must be an integer in 0..255, got {value!r}")
        if self.width == 0 or self.height == 0:
            raise WireError(f"region {self} is empty; use None for the whole image")

    @classmethod
    def from_pixels(cls, x: int, y: int, width: int, height: int) -> Region:
        """The smallest latent rectangle covering a pixel rectangle."""
        unit = LATENT_UNIT_PIXELS
        x0, y0 = x // unit, y // unit
        x1, y1 = -(-(x + width) // unit), -(-(y + height) // unit)
        return cls(x0, y0, x1 - x0, y1 - y0)

    def to_pixels(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) in pixels."""
        unit = LATENT_UNIT_PIXELS
        return self.x * unit, self.y * unit, self.width * unit, self.height * unit


def region_to_wire(region: Region | None) -> tuple[int, int, int, int]:
    """The four wire bytes of an optional region."""
    if region is None:
        return (0, 0, 0, 0)
    return (region.x, region.y, region.width, region.height)


def region_from_wire(x: int, y: int, width: int, height: int) -> Region | None:
    """Decode four wire bytes; an all-zero rectangle is the whole image."""
    if x == y == width == height == 0:
        return None
    return Region(x, y, width, height)
