"""``lpimg bench feedback`` on a thumbnail: the closed loop really refines the chosen quadrant
through the endpoints, stops once its targets hold, and the figures add up. No quality or byte
numbers of the shipped weights appear here."""

from __future__ import annotations

import json

import numpy as np
from endpoint_helpers import codec, crop
from PIL import Image

from lpimg.bench import BENCHMARKS
from lpimg.bench.feedback import most_detail, quadrants, region_quality, run_image
from lpimg.cli import main
from lpimg.wire import Region


def test_quadrants_cover_the_latent_grid() -> None:
    quads = quadrants(100, 60)  # 7 x 4 latent positions
    assert quads == [(0, 0, 3, 2), (3, 0, 4, 2), (0, 2, 3, 2), (3, 2, 4, 2)]
    assert sum(w * h for _, _, w, h in quads) == 7 * 4


def test_most_detail_finds_the_textured_quadrant() -> None:
    picture = np.full((64, 64, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    picture[32:, :32] = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert most_detail(picture) == 2
    inside, outside = region_quality(picture, picture, 2)
    assert inside == outside == 1.0


def test_closed_loop_refines_the_region_and_stops() -> None:
    image = crop(128, 0, 128, 96)
    # Nothing wanted outside: after its first layer, everything the device sends is the region.
    result = run_image(codec(), "thumb", image, link="lorawan-eu868:dr5", roi="detail", low=0.0)
    closed, open_loop = result["closed_loop"], result["open_loop"]
    roi = Region(*result["roi_latent"])
    assert closed["reason"].startswith("stopped") and open_loop["reason"].startswith("stopped")
    assert closed["whole_layers"] == 1 and closed["region_layers"] >= 1
    assert closed["layers"] == closed["whole_layers"] + closed["region_layers"]
    targets = result["targets"]
    if closed["reached"]:
        assert closed["msssim_roi"] >= targets["roi"] and closed["msssim_outside"] >= targets["outside"]
    assert result["saved_fraction"] == 1 - closed["uplink_bytes"] / open_loop["uplink_bytes"]
    assert result["roi_quadrant"] in range(4) and list(quadrants(128, 96)[result["roi_quadrant"]]) == [
        roi.x, roi.y, roi.width, roi.height]


def test_cli_json(tmp_path, capsys) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.fromarray(crop(0, 200, 128, 96)).save(folder / "a.png")
    assert "feedback" in BENCHMARKS
    assert main(["bench", "feedback", "--images", str(folder), "--link", "lorawan-eu868:dr5",
                 "--roi", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 1 and result["per_image"][0]["roi_quadrant"] == 3
    row = result["per_image"][0]
    assert result["open_loop_uplink_bytes"] == row["open_loop"]["uplink_bytes"]
    assert result["closed_loop_uplink_bytes"] == row["closed_loop"]["uplink_bytes"]
