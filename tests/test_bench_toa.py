"""``lpimg bench toa`` on a thumbnail: the stop lands on the first layer that reaches the target,
and an unreachable target is reported, not raised. Targets are derived from the codec run
directly, never hard-coded (the weights will change)."""

from __future__ import annotations

import json

import numpy as np
from endpoint_helpers import codec, crop

from lpimg.bench import BENCHMARKS
from lpimg.bench.metrics import msssim
from lpimg.bench.toa import fit_picture, run
from lpimg.cli import main


def _prefix_quality(image: np.ndarray) -> list[float]:
    c = codec()
    enc = c.encoder(image)
    dec = c.decoder(enc.header)
    values = []
    for spec, data in enc.encode_all():
        dec.apply(spec, data)
        values.append(msssim(dec.reconstruct(), image))
    return values


def test_fit_picture_crops_to_the_aspect_then_resizes() -> None:
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, 100:200] = 255  # the centre third survives a 1:1 crop
    out = fit_picture(image, (50, 50))
    assert out.shape == (50, 50, 3) and out.min() == 255
    same = fit_picture(image, (300, 100))
    assert same is image


def test_stops_at_the_first_layer_reaching_the_target(tmp_path) -> None:
    image = crop(160, 40, 96, 72)
    path = tmp_path / "thumb.png"
    from PIL import Image

    Image.fromarray(image).save(path)
    quality = _prefix_quality(image)
    k = min(2, len(quality) - 1)
    target = quality[k]
    first = next(i for i, q in enumerate(quality) if q >= target)
    result = run(path, "lorawan-eu868:dr5", target, size=(96, 72))
    lp = result["lpimg"]
    assert lp["reached"] and lp["reason"] == "stopped"
    assert lp["layers_sent"] == first + 1
    assert lp["msssim"] == quality[first]
    assert lp["time_on_air_s"] == lp["uplink_airtime_s"] + lp["downlink_airtime_s"] > 0
    jp = result["jpeg"]
    if jp["reached"]:  # a JPEG reaching the target exists at this size for any sane codec
        assert jp["completed"] and jp["msssim"] >= target
        assert result["time_on_air_ratio"] == jp["time_on_air_s"] / lp["time_on_air_s"]


def test_unreachable_target_is_reported(tmp_path, capsys) -> None:
    image = crop(160, 40, 96, 72)
    path = tmp_path / "thumb.png"
    from PIL import Image

    Image.fromarray(image).save(path)
    best = max(_prefix_quality(image))
    target = min(0.999999, best + (1 - best) / 2)
    assert "toa" in BENCHMARKS
    assert main(["bench", "toa", "--image", str(path), "--size", "96x72", "--link",
                 "lorawan-eu868:dr5", "--target", str(target), "--json", "--plot",
                 str(tmp_path / "one.png")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lpimg"]["reached"] is False
    assert Image.open(tmp_path / "one.png").size[0] > 500  # drawn even without a ratio
    assert result["lpimg"]["best_msssim"] == best
    assert result["time_on_air_ratio"] is None


def test_a_folder_gives_each_ratio_and_their_median(tmp_path, capsys) -> None:
    from PIL import Image

    folder = tmp_path / "pics"
    folder.mkdir()
    for n, (x, y) in enumerate([(160, 40), (0, 0), (64, 96)]):
        Image.fromarray(crop(x, y, 96, 72)).save(folder / f"p{n}.png")
    (folder / "notes.txt").write_text("not a picture")
    quality = _prefix_quality(crop(160, 40, 96, 72))
    target = quality[min(2, len(quality) - 1)]
    assert main(["bench", "toa", "--images", str(folder), "--size", "96x72", "--link",
                 "lorawan-eu868:dr5", "--target", str(target), "--json", "--plot",
                 str(tmp_path / "ratios.png")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert Image.open(tmp_path / "ratios.png").size[0] > 500
    rows = result["images"]
    assert [row["image"] for row in rows] == ["p0.png", "p1.png", "p2.png"]
    single = run(folder / "p0.png", "lorawan-eu868:dr5", target, size=(96, 72))
    assert rows[0]["ratio"] == single["time_on_air_ratio"]
    assert rows[0]["lpimg_bytes"] == single["lpimg"]["payload_bytes"]
    ratios = [row["ratio"] for row in rows if row["ratio"] is not None]
    assert result["compared"] == len(ratios)
    if ratios:
        assert result["median_ratio"] == float(np.median(ratios))
        assert result["at_least_3x"] == sum(r >= 3 for r in ratios)


def test_an_empty_folder_is_a_clear_error(tmp_path) -> None:
    import pytest

    from lpimg.errors import LpimgError

    with pytest.raises(LpimgError, match="no pictures"):
        from lpimg.bench.toa import run_folder

        run_folder(tmp_path, progress=False)
