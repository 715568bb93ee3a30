"""The accuracy-aware fallback's search, on a synthetic metric (no ONNX Runtime needed)."""

from __future__ import annotations

from pathlib import Path

from compressctl.quantization.fallback import accuracy_aware_fallback


def metric_of(float_nodes: frozenset[str]) -> float:
    """Returning a or b to float fixes the same error (their gains do not add up); c fixes another."""
    return 0.90 + max(0.05 * ("a" in float_nodes), 0.045 * ("b" in float_nodes)) + 0.04 * ("c" in float_nodes)


def run(max_drop: float, seconds: float = float("inf")):
    made: dict[Path, frozenset[str]] = {}

    def quantize(float_nodes: list[str]) -> Path:
        path = Path(f"model-{len(made)}.onnx")
        made[path] = frozenset(float_nodes)
        return path

    quantized = Path("quantized.onnx")
    made[quantized] = frozenset()
    return accuracy_aware_fallback(
        ["a", "b", "c"],
        quantize,
        lambda path: metric_of(made[path]),
        float_metric=1.0,
        quantized=quantized,
        quantized_metric=metric_of(frozenset()),
        max_drop=max_drop,
        max_nodes=8,
        seconds=seconds,
    )


def test_a_node_the_budget_is_met_without_goes_back_to_int8() -> None:
    result = run(max_drop=0.015)
    assert [r["node"] for r in result.ranking] == ["a", "b", "c"]  # by single-node gain
    assert result.met and result.float_nodes == ["a", "c"]
    assert [s.get("added") or s.get("removed") for s in result.steps] == ["a", "b", "c", "b", "a"]
    assert [s.get("needed") for s in result.steps[3:]] == [False, True]
    assert abs(result.metric - 0.99) < 1e-9


def test_the_best_model_seen_is_kept_when_the_budget_is_out_of_reach() -> None:
    result = run(max_drop=0.001)
    assert not result.met and result.float_nodes == ["a", "b", "c"] and abs(result.metric - 0.99) < 1e-9


def test_the_search_stops_at_its_time_budget_with_the_quantized_model() -> None:
    result = run(max_drop=0.015, seconds=0.0)
    assert result.ranking == [] and result.steps == [] and not result.met
    assert result.path == Path("quantized.onnx") and result.float_nodes == []


def test_nodes_with_heavy_tailed_inputs_are_ranked_first(tmp_path: Path) -> None:
    """The second MatMul reads an activation with one channel 200× the others: it is tried first."""
    from types import SimpleNamespace

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compressctl.data import Split
    from compressctl.quantization.fallback import outlier_order

    rng = np.random.default_rng(0)
    spike = np.ones(16, np.float32)
    spike[3] = 200.0
    weights = [numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), f"w{i}") for i in (1, 2)]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
            helper.make_node("Mul", ["h", "spike"], ["s"], name="scale"),
            helper.make_node("MatMul", ["s", "w2"], ["y"], name="second"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
        [*weights, numpy_helper.from_array(spike, "spike")],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    judge = SimpleNamespace(
        provider="CPUExecutionProvider", threads=1, split=Split([rng.standard_normal((8, 16)).astype(np.float32)], None)
    )
    ordered, peaks = outlier_order(path, ["first", "second"], judge)
    assert ordered == ["second", "first"]
    assert peaks["second"] > 2 * peaks["first"]
    # a graph it cannot read keeps graph order
    assert outlier_order(tmp_path / "missing.onnx", ["first", "second"], judge) == (["first", "second"], {})


def test_the_ranking_leaves_time_to_return_the_nodes_it_found(monkeypatch) -> None:
    """Each evaluation takes 1 s of a fake clock; ranking all 12 nodes would spend the whole 10 s budget."""
    from compressctl.quantization import fallback

    clock = {"now": 0.0}
    monkeypatch.setattr(fallback.time, "monotonic", lambda: clock["now"])
    made: dict[Path, frozenset[str]] = {}

    def quantize(float_nodes: list[str]) -> Path:
        path = Path(f"model-{len(made)}.onnx")
        made[path] = frozenset(float_nodes)
        return path

    def evaluate(path: Path) -> float:
        clock["now"] += 1.0
        return 0.95 + 0.02 * ("n0" in made[path]) + 0.02 * ("n1" in made[path])

    quantized = Path("quantized.onnx")
    made[quantized] = frozenset()
    result = fallback.accuracy_aware_fallback(
        [f"n{i}" for i in range(12)],
        quantize,
        evaluate,
        float_metric=1.0,
        quantized=quantized,
        quantized_metric=0.95,
        max_drop=0.015,
        max_nodes=8,
        seconds=10.0,
    )
    assert len(result.ranking) < 12  # the ranking stopped at its share of the budget ...
    assert result.met and set(result.float_nodes) == {"n0", "n1"}  # ... and the two nodes it needed went to float
