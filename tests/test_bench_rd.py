"""``lpimg bench rd`` on two small pictures: every layer boundary named in pass order, rates that
grow with every layer, baselines and BD-rates where the curves overlap, and the plot."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from lpimg.bench import rd
from lpimg.bench.rd import whole_plane_rows
from lpimg.cli import main
from lpimg.codec.bitplane import num_passes, pass_name


def _pictures(folder) -> None:  # noqa: ANN001
    folder.mkdir()
    yy, xx = np.mgrid[0:96, 0:128]
    for i in range(2):
        rng = np.random.default_rng(i)
        img = np.stack([120 + 90 * np.sin(xx / (7 + i) + yy / 11), 100 + 60 * np.cos(yy / 5),
                        140 + 50 * np.sin(xx / 13)], axis=2) + rng.normal(0, 6, (96, 128, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"p{i}.png")


def test_rd_names_every_boundary_and_rates_grow(tmp_path):
    _pictures(tmp_path / "imgs")
    result = rd.run(str(tmp_path / "imgs"), show_progress=False, baselines=False)
    rows = result["lpimg"]
    assert result["images"] == 2 and "bd_rate_percent" not in result
    # the labels all images share, coarse to fine, spelled as pass_name spells them
    top = 6
    names = [pass_name(i, top) for i in range(num_passes(top))]
    assert [r["pass"] for r in rows] == [n for n in names if n in {r["pass"] for r in rows}]
    assert len(rows) >= 5
    bpps = [r["bpp"] for r in rows]
    assert bpps == sorted(bpps) and bpps[0] > 0
    assert rows[-1]["psnr"] > rows[0]["psnr"] + 5
    assert result["layer_boundaries_in_0.05_0.5_bpp"] == sum(0.05 <= b <= 0.5 for b in bpps)


def test_rd_cli_writes_json_with_baselines_and_a_plot(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LPIMG_CACHE_DIR", str(tmp_path / "cache"))
    _pictures(tmp_path / "imgs")
    plot = tmp_path / "rd.png"
    assert main(["bench", "rd", "--images", str(tmp_path / "imgs"), "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["baselines"]) == {"JPEG", "WebP", "JPEG2000", "AVIF"}
    for name, bd in out["bd_rate_percent"].items():
        assert name in out["baselines"]
        assert set(bd) == {"msssim", "psnr"}
    assert any(bd["msssim"] is not None for bd in out["bd_rate_percent"].values())
    assert set(out["bd_rate_percent_whole_planes"]) == set(out["baselines"])
    assert plot.stat().st_size > 10_000 and Image.open(plot).size[0] > 500


def test_baselines_are_cached_per_picture_set(tmp_path, monkeypatch):
    """A second run on the same pictures reuses the baselines' points; other pictures (or
    --no-cache) measure again; an unreadable cache entry is measured again, not trusted."""
    monkeypatch.setenv("LPIMG_CACHE_DIR", str(tmp_path / "cache"))
    _pictures(tmp_path / "imgs")
    calls = []
    real = rd.measure_baselines

    def counting(images, progress):  # noqa: ANN001, ANN202
        calls.append(len(images))
        return real(images, progress)

    monkeypatch.setattr(rd, "measure_baselines", counting)
    first = rd.run(str(tmp_path / "imgs"), show_progress=False, limit=1)
    again = rd.run(str(tmp_path / "imgs"), show_progress=False, limit=1)
    assert (first["baselines_cache"], again["baselines_cache"]) == ("miss", "hit")
    assert again["baselines"] == first["baselines"] and calls == [1]
    assert rd.run(str(tmp_path / "imgs"), show_progress=False, limit=2)["baselines_cache"] == "miss"
    assert rd.run(str(tmp_path / "imgs"), show_progress=False, limit=1,
                  use_cache=False)["baselines_cache"] == "off"
    for entry in (tmp_path / "cache" / "rd-baselines").glob("*.json"):
        entry.write_text("{truncated")
    assert rd.run(str(tmp_path / "imgs"), show_progress=False, limit=1)["baselines_cache"] == "miss"
    assert calls == [1, 2, 1, 1]


def test_versus_another_model_gives_its_bd_rate(tmp_path):
    """--versus measures other lpimg models on the same pictures: against itself a model's
    BD-rate is 0; a model that does not exist fails before any picture is coded."""
    import pytest

    from lpimg.codec.shipped import DEFAULT_MODEL
    from lpimg.errors import LpimgError

    _pictures(tmp_path / "imgs")
    result = rd.run(str(tmp_path / "imgs"), show_progress=False, baselines=False,
                    versus=[DEFAULT_MODEL])
    (name, other), = result["versus"].items()
    assert name.startswith(DEFAULT_MODEL) and other["lpimg"] == result["lpimg"]
    assert abs(other["bd_rate_percent"]["msssim"]) < 1e-6 and abs(other["bd_rate_percent"]["psnr"]) < 1e-6
    with pytest.raises(LpimgError):
        rd.run(str(tmp_path / "imgs"), show_progress=False, baselines=False, versus=["no-such-model"])


def test_whole_plane_rows_keep_only_the_points_where_every_position_knows_the_same_planes():
    from lpimg.codec.bitplane import num_passes, pass_name

    names = [pass_name(i, 6) for i in range(14)]
    assert names[:4] == ["sig6q", "sig6o", "sig6h", "sig6v"] and num_passes(6) > 14
    rows = [{"pass": n, "bpp": 0.01 * i} for i, n in enumerate(names)]
    assert [r["pass"] for r in whole_plane_rows(rows)] == ["sig6v", "sig5v", "ref5", "sig4v", "ref4"]
