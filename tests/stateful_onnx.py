"""A tiny streaming model, built with onnx.helper, shaped like a voice activity detector.

Inputs: ``x`` [batch, 8], ``state`` [2, batch, 4] (the batch on axis 1) and
``sr``, a scalar int64 that scales everything by ``sr / 16000``. Outputs:
``prob`` [batch, 1] (a sigmoid) and ``stateN`` [2, batch, 4].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RATE = 16000

STATE_INPUTS = [
    {"name": "x", "shape": ["batch", 8], "dtype": "float32"},
    {"name": "state", "shape": [2, "batch", 4], "dtype": "float32"},
    {"name": "sr", "shape": [], "dtype": "int64", "value": RATE},
]


def stateful_model(path: Path, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weight(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(array.astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("ReduceMean", ["state"], ["carried"], axes=[0], keepdims=0),
        helper.make_node("Add", ["h", "carried"], ["mixed"]),
        helper.make_node("Cast", ["sr"], ["sr_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_float", "rate"], ["scale"]),
        helper.make_node("Mul", ["mixed", "scale"], ["scaled"]),
        helper.make_node("Relu", ["scaled"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
        helper.make_node("Unsqueeze", ["hidden", "zero"], ["hidden_1"]),
        helper.make_node("MatMul", ["hidden_1", "w3"], ["update"]),
        helper.make_node("Add", ["state", "update"], ["summed"]),
        helper.make_node("Tanh", ["summed"], ["stateN"]),
    ]
    graph = helper.make_graph(
        nodes,
        "stateful",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", 4]),
        ],
        [
            weight("w1", rng.standard_normal((8, 4))),
            weight("w2", rng.standard_normal((4, 1))),
            weight("w3", rng.standard_normal((4, 4)) * 0.5),
            weight("rate", np.array(RATE)),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def stateful_data(path: Path, count: int = 160, seed: int = 0) -> Path:
    """An npz for the model: ``x`` [count, 8] and ``state`` [2, count, 4] (no ``sr``: the recipe gives it)."""
    rng = np.random.default_rng(seed)
    state = np.tanh(rng.standard_normal((2, count, 4))).astype(np.float32)
    np.savez(path, x=rng.standard_normal((count, 8)).astype(np.float32), state=state)
    return path
