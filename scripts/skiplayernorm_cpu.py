"""ONNX Runtime's fused SkipLayerNormalization against Add + LayerNormalization on the CPU provider.

Found while profiling the tiny transformer (2026-12-06): its four SkipLayerNormalization nodes took a fifth
of the dynamic INT8 model's time at batch 8. ONNX Runtime's own level-2 optimizer fuses Add + LayerNormalization
into SkipLayerNormalization (as the transformer optimizer does), and its CPU kernel for float is a scalar loop
where LayerNormalization is vectorised. This script times both forms of one residual add + norm, alternating
run by run in one sitting, with the optimizer at ``basic`` (no fusion) so each form stays as written, and at
``all`` (the default), where the unfused form is fused back.

    .venv/bin/python scripts/skiplayernorm_cpu.py [--threads 2] [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnx.helper as helper
import onnxruntime as ort
from onnx import TensorProto

SHAPES = [(1, 32, 384), (8, 32, 384), (8, 128, 384), (8, 128, 768)]


def residual_norm(fused: bool, hidden: int) -> bytes:
    dims = ["batch", "seq", hidden]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("x", "skip")]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    gamma = helper.make_tensor("gamma", TensorProto.FLOAT, [hidden], np.ones(hidden, np.float32))
    beta = helper.make_tensor("beta", TensorProto.FLOAT, [hidden], np.zeros(hidden, np.float32))
    if fused:
        nodes = [
            helper.make_node(
                "SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain="com.microsoft", epsilon=1e-5
            )
        ]
    else:
        nodes = [
            helper.make_node("Add", ["x", "skip"], ["sum"]),
            helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5),
        ]
    graph = helper.make_graph(nodes, "residual_norm", inputs, [output], [gamma, beta])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def session(model: bytes, threads: int, level: ort.GraphOptimizationLevel) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = level
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def op_types(sess_model: bytes, threads: int, level: ort.GraphOptimizationLevel) -> list[str]:
    """The op types ONNX Runtime runs after its optimizer (read back from the optimized model)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".onnx") as handle:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = level
        options.optimized_model_filepath = handle.name
        ort.InferenceSession(sess_model, options, providers=["CPUExecutionProvider"])
        return [node.op_type for node in onnx.load(handle.name).graph.node]


def time_pair(sessions: dict[str, ort.InferenceSession], feeds: dict[str, np.ndarray], rounds: int) -> dict:
    """Median µs per run of each session, alternating session by session within each round."""
    for sess in sessions.values():
        for _ in range(20):
            sess.run(None, feeds)
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            start = time.perf_counter()
            for _ in range(50):
                sess.run(None, feeds)
            samples[name].append((time.perf_counter() - start) / 50 * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    basic, full = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, median of {args.rounds} rounds of 50 runs")
    hidden = SHAPES[0][2]
    print("unfused form at level all runs as:", op_types(residual_norm(False, hidden), args.threads, full))
    print(f"{'shape':>16} {'SkipLayerNorm µs':>17} {'Add+LayerNorm µs':>17} {'ratio':>6}")
    for shape in SHAPES:
        rng = np.random.default_rng(0)
        feeds = {name: rng.standard_normal(shape).astype(np.float32) for name in ("x", "skip")}
        sessions = {
            "skip": session(residual_norm(True, shape[2]), args.threads, basic),
            "plain": session(residual_norm(False, shape[2]), args.threads, basic),
        }
        got = time_pair(sessions, feeds, args.rounds)
        print(f"{shape!s:>16} {got['skip']:17.0f} {got['plain']:17.0f} {got['skip'] / got['plain']:6.2f}")


if __name__ == "__main__":
    main()
