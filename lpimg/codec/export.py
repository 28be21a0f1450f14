"""QDQ INT8 ONNX export of the analysis transform (what a KPU compiler such as nncase ingests).

The graph is written by hand with ``onnx.helper`` rather than traced, so every quantization
parameter is exactly the one the integer reference uses: uint8 input with scale 1/255, per-channel
symmetric int8 weights, int32 biases at scale s_in*s_w, uint8 activations (ReLU folded into the
zero point 0), and a uint8 output with scale 1 and zero point 128 whose values minus 128 are
the latent integers.
onnxruntime fuses each DequantizeLinear-Conv-QuantizeLinear group into QLinearConv, whose
requantization (float32 scale x_scale*w_scale/y_scale, round half to even) is the one of
:mod:`lpimg.codec.quant`; the test suite checks the integers agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lpimg.codec.quant import quantized_params, weight_scales
from lpimg.errors import CodecError

LATENT_ZERO_POINT = 128
"""The exported graph's output is uint8; latent = output - 128 (then clipped to +-127)."""


def onnx_latents(output: np.ndarray) -> np.ndarray:
    """The model's (1, C, h, w) uint8 output -> int latents (C, h, w) as the codec uses them."""
    return np.clip(output[0].astype(np.int32) - LATENT_ZERO_POINT, -127, 127)


def build_onnx(analysis, opset: int = 21):  # noqa: ANN001, ANN201 (model.Analysis -> onnx.ModelProto)
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # the dev extra brings onnx
        raise CodecError("ONNX export needs the 'onnx' package: pip install 'lpimg[dev]'") from exc

    nodes, inits = [], []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    const("in_scale", np.array(1.0 / 255.0, dtype=np.float32))
    const("u8_zero", np.array(0, dtype=np.uint8))
    nodes.append(helper.make_node("DequantizeLinear", ["image", "in_scale", "u8_zero"], ["x0"]))
    x, in_scale = "x0", 1.0 / 255.0
    last = len(analysis.layers) - 1
    for i, layer in enumerate(analysis.layers):
        w_q, b_q, _ = quantized_params(layer, in_scale)
        s_w = weight_scales(layer.conv.weight.detach().float()).numpy().astype(np.float32)
        b_scale = (np.float32(in_scale) * s_w).astype(np.float32)
        const(f"w{i}_q", w_q.numpy().astype(np.int8))
        const(f"w{i}_s", s_w)
        const(f"w{i}_z", np.zeros(len(s_w), dtype=np.int8))
        const(f"b{i}_q", b_q.numpy().astype(np.int32))
        const(f"b{i}_s", b_scale)
        const(f"b{i}_z", np.zeros(len(s_w), dtype=np.int32))
        nodes.append(helper.make_node("DequantizeLinear", [f"w{i}_q", f"w{i}_s", f"w{i}_z"],
                                      [f"w{i}"], axis=0))
        nodes.append(helper.make_node("DequantizeLinear", [f"b{i}_q", f"b{i}_s", f"b{i}_z"],
                                      [f"b{i}"], axis=0))
        k = layer.kernel
        nodes.append(helper.make_node(
            "Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k],
            strides=[layer.stride] * 2, pads=[k // 2] * 4))
        out_scale = float(layer.out_scale)
        const(f"a{i}_s", np.array(out_scale, dtype=np.float32))
        if i < last:
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
            nodes.append(helper.make_node("QuantizeLinear", [f"r{i}", f"a{i}_s", "u8_zero"],
                                          [f"a{i}_q"]))
            nodes.append(helper.make_node("DequantizeLinear", [f"a{i}_q", f"a{i}_s", "u8_zero"],
                                          [f"x{i + 1}"]))
            x, in_scale = f"x{i + 1}", out_scale
        else:
            # uint8 with zero point 128 rather than int8: onnxruntime fuses DQ-Conv-Q into
            # QLinearConv only when input and output share a type; an int8 output after a uint8
            # input ran the last layer in float and missed about one latent in 10^5
            const("latent_zero", np.array(LATENT_ZERO_POINT, dtype=np.uint8))
            nodes.append(helper.make_node("QuantizeLinear", [f"c{i}", f"a{i}_s", "latent_zero"],
                                          ["latents"]))
    graph = helper.make_graph(
        nodes, "lpimg_analysis",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("latents", TensorProto.UINT8,
                                       [1, analysis.layers[-1].conv.out_channels, "h16", "w16"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="lpimg")
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


def export_onnx(analysis, path: str | Path) -> Path:  # noqa: ANN001
    import onnx

    path = Path(path)
    onnx.save(build_onnx(analysis), path)
    return path


def run_onnx(path: str | Path, tile: np.ndarray, threads: int = 1) -> np.ndarray:
    """uint8 HxWx3 tile -> int latents (C, h, w) through onnxruntime (latents clipped to +-127)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": np.ascontiguousarray(tile.transpose(2, 0, 1))[None]})[0]
    return onnx_latents(out)
