"""``lpimg bench colour``: correlations per opponent colour axis of the full-stream decode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lpimg.bench.colour import AXES, run
from lpimg.cli import main
from lpimg.errors import LpimgError

PHOTO = Path(__file__).resolve().parents[1] / "lpimg" / "data" / "astronaut.png"


def test_every_axis_is_measured_and_luminance_survives(tmp_path: Path) -> None:
    Image.open(PHOTO).convert("RGB").save(tmp_path / "photo.png")
    result = run(str(tmp_path), crop=96)
    assert result["images"] == 1 and set(result["axes"]) == set(AXES)
    for row in result["axes"].values():
        assert -1.0 <= row["correlation"] <= 1.0 and row["std_in"] > 0
    assert result["axes"]["luminance"]["correlation"] > 0.8  # any working codec keeps luminance


def test_an_axis_the_codec_drops_scores_near_zero() -> None:
    """The measure itself: an output with green-magenta replaced by noise decorrelates on it."""
    rng = np.random.default_rng(0)
    a = rng.random((5000, 3))
    gm = AXES["green_magenta"]
    b = a - np.outer(a @ gm, gm) / (gm @ gm) + np.outer(rng.random(5000), gm)
    assert abs(np.corrcoef(a @ gm, b @ gm)[0, 1]) < 0.1
    assert np.corrcoef(a @ AXES["red_blue"], b @ AXES["red_blue"])[0, 1] > 0.99


def test_cli_json_and_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.open(PHOTO).convert("RGB").save(tmp_path / "photo.png")
    assert main(["bench", "colour", "--images", str(tmp_path), "--crop", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["axes"]["red_blue"]["std_out"] >= 0
    with pytest.raises(LpimgError):
        run(str(tmp_path), model=str(tmp_path / "nothing"))
