"""``lpimg bench preview``: the longest layer prefix within a byte budget, and its quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lpimg.bench.preview import run
from lpimg.cli import main

PHOTO = Path(__file__).resolve().parents[1] / "lpimg" / "data" / "astronaut.png"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    Image.open(PHOTO).convert("RGB").save(tmp_path / "p.png")
    return tmp_path


def test_prefix_respects_the_budget_and_grows_with_it(folder: Path) -> None:
    small = run(str(folder), (128, 96), budget=60)
    large = run(str(folder), (128, 96), budget=100_000)
    row_s, row_l = small["per_image"][0], large["per_image"][0]
    if row_s["within_budget"] is not None:
        assert row_s["within_budget"]["bytes"] <= 60
    assert row_l["within_budget"]["bytes"] <= 100_000
    assert row_l["layers_within_budget"] > row_s["layers_within_budget"]
    assert row_l["within_budget"]["msssim"] > row_l["first_layer"]["msssim"]


def test_a_budget_below_the_first_layer_reports_nothing_fits(folder: Path) -> None:
    result = run(str(folder), (128, 96), budget=1)
    assert result["images_with_a_preview_within_budget"] == 0
    assert result["per_image"][0]["first_layer"]["bytes"] > 1  # still reported
    assert result["within_budget_msssim_mean"] is None


def test_cli(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "preview", "--images", str(folder), "--size", "96x64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["budget_bytes"] == 500 and out["size"] == "96x64"
    assert main(["bench", "preview", "--images", str(folder), "--size", "96x64"]) == 0
    assert "first layer" in capsys.readouterr().out


def test_strip_shows_original_and_preview(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "strip.png"
    run(str(folder), (128, 96), budget=100_000, strip=str(out), strip_images=("p.png",))
    assert Image.open(out).size == (128, 48)  # two 128x96 pictures side by side, at half size
