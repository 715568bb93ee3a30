"""advise on a transformer encoder: FFN and residual-width groups, dynamic INT8 with per-MatMul float nodes, int4."""

from __future__ import annotations

import pytest

from tests.conftest import write_recipe

ENCODER = {
    "version": 1,
    "name": "tiny-encoder",
    "seed": 0,
    "model": {
        "factory": "compressctl.zoo:tiny_transformer",
        "kwargs": {"d_model": 64, "nhead": 4, "num_layers": 1, "dim_feedforward": 256},
        "inputs": [{"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64", "range": [0, 1000]}],
        "dims": {"seq": 16},
    },
    "data": {
        "source": {"factory": "compressctl.zoo:token_band_task", "kwargs": {"samples": 512, "seq": 16}},
        "batch_size": 64,
    },
    "evaluate": {"metric": "fidelity"},
    "stages": [
        {"type": "train", "epochs": 1, "lr": 0.001},
        {"type": "finetune", "epochs": 1, "lr": 0.0005},
        {"type": "export", "opset": 18},
        {"type": "quantize", "mode": "dynamic", "per_channel": True, "exclude_op_types": ["Gather"]},
    ],
    "report": {"providers": ["CPUExecutionProvider"], "batch_sizes": [8], "warmup": 2, "repeat": 10, "max_seconds": 3},
}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from compressctl.advise import sensitivity
    from compressctl.advise.advisor import prepare
    from compressctl.recipe import load_recipe

    folder = tmp_path_factory.mktemp("encoder")
    bench, _report = prepare(load_recipe(write_recipe(folder, ENCODER)), folder / "out", ["CPUExecutionProvider"])
    return folder, bench, sensitivity.analyse(bench, folder / "sensitivity")


def test_the_encoders_space_prunes_ffn_and_heads_and_searches_its_quantization(encoder):
    from compressctl.advise.space import build_space

    _folder, bench, analysis = encoder
    space = build_space(bench, analysis)
    found = {d.name: d for d in space.dimensions}
    assert found["quantize.mode"].choices == (None, "static", "kmeans", "dynamic", "int4")
    assert space.quantize_mode == "dynamic"  # the recipe's quantize stage
    groups = [space.layers[d.name] for d in space.dimensions if d.per == "layer_group"]
    members = [set(group.members) for group in groups]
    assert {"encoder.layers.0.linear1"} in members  # the FFN's hidden units, a group of their own
    assert {"encoder.layers.0.linear2"} in members  # the residual width, rooted at the FFN's output
    # its groups narrow Linear layers: least-squares reconstruction is offered, with or without training after
    assert found["prune.reconstruct"].choices == ("none", "least_squares")
    assert found["advise.recovery"].choices == ("train", "none")
    import onnx

    op_types = {n.name: n.op_type for n in onnx.load(bench.baseline_path).graph.node}
    nodes = [space.layers[d.name].members[0] for d in space.dimensions if d.per == "node"]
    assert nodes and {op_types[n] for n in nodes} <= {"MatMul", "Gemm"}  # per-MatMul float or INT8


def test_proxies_of_dynamic_int8_with_float_nodes_and_int4(encoder):
    import onnx

    from compressctl.advise.space import build_space

    folder, bench, analysis = encoder
    space = build_space(bench, analysis)
    ffn = next(d for d in space.dimensions if d.per == "layer_group" and "linear1" in str(space.layers[d.name].members))
    node = next(d for d in space.dimensions if d.per == "node")
    values = space.fill(
        {ffn.name: 0.5, "quantize.mode": "dynamic", "quantize.max_accuracy_drop": None, node.name: True}
    )
    candidate = space.candidate(values)
    figures = bench.build(candidate, folder / "proxy-dynamic")
    graph = onnx.load(figures["params_path"]).graph
    ops = {n.op_type for n in graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops  # dynamic INT8
    kept = space.layers[node.name].members[0]
    assert any(n.name == kept and n.op_type in ("MatMul", "Gemm") for n in graph.node)  # kept in float
    assert figures["float"]["macs"] < bench.baseline["macs"]  # the FFN lost half its hidden units
    int4 = bench.build(space.candidate(space.fill({"quantize.mode": "int4"})), folder / "proxy-int4")
    assert int4["int4"]["changed"] > 0 and int4["size_bytes"] < int4["float"]["size_bytes"]
    assert "MatMulNBits" in {n.op_type for n in onnx.load(int4["params_path"]).graph.node}


def test_proxy_stages_see_the_baseline_as_the_distillation_teacher(encoder):
    _folder, bench, _analysis = encoder
    assert bench.stage_context("distill", 3).baseline.module is bench.module
