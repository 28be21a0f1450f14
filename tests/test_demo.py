"""The demo end to end on a small picture: table, pictures and a self-contained report."""

from __future__ import annotations

import base64
import json

import numpy as np
from PIL import Image

from lpimg.cli import main
from lpimg.demo import SAMPLE, run_demo


def small_sample(tmp_path):
    img = Image.open(SAMPLE).convert("RGB").crop((160, 40, 256, 112))  # 96x72, the face
    path = tmp_path / "face.png"
    img.save(path)
    return path


def test_demo_writes_report_and_layers(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(small_sample(tmp_path), link="lorawan-eu868:dr5", loss=0.0, out=out,
                      progress=False)
    assert result.stats["finished"] and result.stats["reason"] == "complete"
    rows = result.rows
    assert [r["layer"] for r in rows] == list(range(len(rows)))
    assert all(b["total_bytes"] > a["total_bytes"] for a, b in zip(rows, rows[1:], strict=False))
    assert all(b["airtime_s"] >= a["airtime_s"] for a, b in zip(rows, rows[1:], strict=False))
    for r in rows:
        layer = np.asarray(Image.open(out / f"layer_{r['layer']:02d}.png"))
        assert layer.shape == (72, 96, 3)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= len(rows) + 2  # layers, original, plot
    summary = json.loads((out / "demo.json").read_text())
    assert summary["layers"] == rows
    # the report shows the very files compared: each layer's PNG and each JPEG's own bytes
    for r in rows:
        png = base64.b64encode((out / f"layer_{r['layer']:02d}.png").read_bytes()).decode()
        assert f"data:image/png;base64,{png}" in html
        if r["jpeg_bytes"] is not None:
            jpg = base64.b64encode((out / f"jpeg_{r['layer']:02d}.jpg").read_bytes()).decode()
            assert f"data:image/jpeg;base64,{jpg}" in html
    assert any(r["jpeg_bytes"] is not None for r in rows)


def test_demo_cli_with_loss(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--image", str(small_sample(tmp_path)), "--link", "lorawan-eu868:dr3",
                 "--loss", "0.2", "--layers", "4", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "report:" in text and "ended: complete" in text
    assert len(list(out.glob("layer_*.png"))) == 4


def test_demo_refuses_a_bad_link(tmp_path, capsys):
    code = main(["demo", "--image", str(small_sample(tmp_path)), "--link", "carrier-pigeon:dr9",
                 "--out", str(tmp_path / "x")])
    assert code == 2
    assert "lpimg: error" in capsys.readouterr().err
