"""Does the analysis transform fit a K210-class KPU? Per-layer figures and a verdict.

Rules (nncase documentation, as summarised in the design brief): each layer's int8 input and
output feature maps together within 2 MiB of KPU RAM; weights within 6 MB of main SRAM; only
1x1/3x3 convolutions with stride 1 or 2 and 'same' padding; ReLU-family activations; 1..1024
channels; input at most 320x240 (larger images are tiled, see :mod:`lpimg.codec.tiling`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lpimg.codec.tiling import MAX_TILE_H, MAX_TILE_W, plan_tiles

KPU_RAM = 2 * 1024 * 1024
WEIGHT_RAM = 6 * 1024 * 1024
KPU_OPS_PER_S = 230e9  # 230 GOPS; one MAC = 2 ops


@dataclass
class LayerReport:
    index: int
    op: str
    kernel: int
    stride: int
    activation: str
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    io_bytes: int
    weight_bytes: int
    macs: int
    ok: bool
    problems: list[str]


def check(analysis, width: int, height: int) -> dict:  # noqa: ANN001 (model.Analysis)
    """Report for one image size; tiles are planned exactly as the encoder plans them."""
    lat_w, lat_h = -(-width // 16), -(-height // 16)
    tiles = plan_tiles(lat_w, lat_h)
    tw = max(t.window[2] for t in tiles) * 16
    th = max(t.window[3] for t in tiles) * 16
    problems: list[str] = []
    if tw > MAX_TILE_W or th > MAX_TILE_H:
        problems.append(f"tile input {tw}x{th} exceeds {MAX_TILE_W}x{MAX_TILE_H}")
    layers: list[LayerReport] = []
    c, h, w = 3, th, tw
    total_weights = 0
    total_macs_tile = 0
    for i, layer in enumerate(analysis.layers):
        conv = layer.conv
        oh, ow = -(-h // layer.stride), -(-w // layer.stride)
        cout = conv.out_channels
        io = c * h * w + cout * oh * ow
        wbytes = conv.weight.numel() + 4 * cout  # int8 weights + int32 bias
        macs = cout * oh * ow * c * layer.kernel * layer.kernel
        lp: list[str] = []
        if io > KPU_RAM:
            lp.append(f"input+output {io} B > {KPU_RAM} B of KPU RAM")
        if layer.kernel not in (1, 3):
            lp.append(f"kernel {layer.kernel} not 1 or 3")
        if layer.stride not in (1, 2):
            lp.append(f"stride {layer.stride} not 1 or 2")
        if not 1 <= cout <= 1024 or not 1 <= c <= 1024:
            lp.append("channel count outside 1..1024")
        layers.append(LayerReport(
            i, "conv2d", layer.kernel, layer.stride, "relu" if layer.relu else "none (int8 latent)",
            (c, h, w), (cout, oh, ow), io, wbytes, macs, not lp, lp))
        problems += [f"layer {i}: {p}" for p in lp]
        total_weights += wbytes
        total_macs_tile += macs
        c, h, w = cout, oh, ow
    if total_weights > WEIGHT_RAM:
        problems.append(f"weights {total_weights} B > {WEIGHT_RAM} B")
    # MACs over all tiles, each tile at its own window size
    total_macs = 0
    for t in tiles:
        c, h, w = 3, t.window[3] * 16, t.window[2] * 16
        for layer in analysis.layers:
            oh, ow = -(-h // layer.stride), -(-w // layer.stride)
            total_macs += layer.conv.out_channels * oh * ow * c * layer.kernel ** 2
            c, h, w = layer.conv.out_channels, oh, ow
    return {
        "size": f"{width}x{height}",
        "tiles": len(tiles),
        "tile_input": f"{tw}x{th}",
        "layers": [asdict(x) for x in layers],
        "total_macs": total_macs,
        "macs_per_tile_max": total_macs_tile,
        "weight_bytes": total_weights,
        "peak_io_bytes": max(x.io_bytes for x in layers),
        "kpu_time_ms_est": 1000 * 2 * total_macs / KPU_OPS_PER_S,
        "pass": not problems,
        "problems": problems,
    }
