"""ONNX models the tests build with `onnx.helper`, as users export them: NCHW input of 0..255
pixels normalised per channel (torchvision's mean and std), logits out, no MLflow signature.

`linear_as_onnx` makes one that equals a fitted scikit-learn `LogisticRegression` on the
pipeline's flattened [0, 1] pixels: it undoes the normalisation, transposes to NHWC, flattens
and applies the regression's weights (Gemm), so its softmax is the regression's
`predict_proba`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: torchvision's `Normalize` on 0..255 pixels.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
OPSET = 17


def checked_model(nodes: list, name: str, inputs: list, outputs: list,
                  initializers: list) -> onnx.ModelProto:
    """The model of a graph of `nodes` (opset OPSET, IR version 8, as exporters write it),
    checked by `onnx.checker`."""
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=8)
    onnx.checker.check_model(model)
    return model


def per_channel(values, channels: int) -> np.ndarray:
    values = np.broadcast_to(np.asarray(values, np.float32), (channels,))
    return values.reshape(1, channels, 1, 1)


def linear_as_onnx(coef: np.ndarray, intercept: np.ndarray, image_shape: tuple[int, ...],
                   mean=MEAN, std=STD, scale: float = 255.0) -> bytes:
    """The serialised model: `[N, C, H, W]` normalised input, `[N, classes]` logits.
    `image_shape` is `(H, W, C)`, the order the regression's features were flattened in."""
    height, width, channels = image_shape
    features = height * width * channels
    initializers = [
        numpy_helper.from_array(per_channel(std, channels) / np.float32(scale), "std"),
        numpy_helper.from_array(per_channel(mean, channels) / np.float32(scale), "mean"),
        numpy_helper.from_array(np.array([-1, features], np.int64), "rows"),
        numpy_helper.from_array(np.asarray(coef.T, np.float32), "weights"),
        numpy_helper.from_array(np.asarray(intercept, np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Mul", ["input", "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["pixels"]),  # back to [0, 1]
        helper.make_node("Transpose", ["pixels"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["nhwc", "rows"], ["flat"]),
        helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"]),
    ]
    return checked_model(
        nodes, "linear_cnn_stand_in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["batch", channels, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(intercept)])],
        initializers).SerializeToString()
