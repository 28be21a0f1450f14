"""``lpimg bench speed``: timings at an exact size, with the targets in the JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

from lpimg.bench.speed import _fit, _size, run
from lpimg.cli import main

PHOTO = Path(__file__).resolve().parents[1] / "lpimg" / "data" / "astronaut.png"


def test_pictures_are_fitted_to_exactly_the_size() -> None:
    import numpy as np

    small = np.zeros((40, 50, 3), np.uint8)
    assert _fit(small, 64, 48).shape == (48, 64, 3)  # upscaled then cropped
    big = np.zeros((500, 700, 3), np.uint8)
    assert _fit(big, 640, 480).shape == (480, 640, 3)


def test_run_times_encode_and_decode(tmp_path: Path) -> None:
    Image.open(PHOTO).convert("RGB").save(tmp_path / "p.png")
    result = run(str(tmp_path), (96, 64), repeat=1)
    row = result["per_image"][0]
    assert result["size"] == "96x64" and row["layers"] > 3 and row["bytes"] > 0
    assert all(row[k] > 0 for k in ("encode_s", "analysis_tiled_s", "decode_s", "decode_every_layer_s"))
    assert result["pass"] == (result["encode_s_max"] <= 0.5 and result["decode_s_max"] <= 1.0)


def test_cli_json_and_bad_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.open(PHOTO).convert("RGB").save(tmp_path / "p.png")
    assert main(["bench", "speed", "--images", str(tmp_path), "--size", "64x48", "--repeat", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == "64x48"
    with pytest.raises(argparse.ArgumentTypeError):
        _size("640by480")
    with pytest.raises(argparse.ArgumentTypeError):
        _size("8x8")
