"""The optimize stage, and the quantize stage's defaults on a transformer encoder: fusion
first, dynamic INT8 among the candidates, the fused float model as a candidate, and the
repair of a fast but unfaithful candidate — on a tiny real BERT-style model."""

from __future__ import annotations

from pathlib import Path

from compressctl.pipeline import apply
from compressctl.recipe import load_recipe
from tests.conftest import write_recipe

ENCODER = {
    "factory": "compressctl.zoo:sentence_encoder",
    "kwargs": {"vocab": 500, "hidden": 64, "heads": 4, "layers": 2, "intermediate": 256, "positions": 32},
    "inputs": [
        {"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64", "range": [0, 500]},
        {"name": "attention_mask", "shape": ["batch", "seq"], "dtype": "int64", "range": [1, 2]},
    ],
    "dims": {"seq": 16},
}


def encoder_recipe(stages: list[dict]) -> dict:
    return {
        "version": 1,
        "name": "encoder",
        "seed": 0,
        "model": ENCODER,
        "data": {"source": "random", "samples": 192, "batch_size": 32},
        "evaluate": {"metric": "fidelity", "output_kind": "embedding"},
        "stages": stages,
        "report": {"providers": ["CPUExecutionProvider"], "batch_sizes": [4], "warmup": 1, "repeat": 3},
    }


def run(tmp_path: Path, recipe: dict) -> dict:
    return apply(load_recipe(write_recipe(tmp_path, recipe)), tmp_path / "out")


def details(report: dict, stage_type: str) -> dict:
    return next(s["details"] for s in report["stages"] if s["type"] == stage_type)


def test_optimize_stage_fuses_an_exported_encoder(tmp_path: Path) -> None:
    report = run(tmp_path, encoder_recipe([{"type": "export", "opset": 17}, {"type": "optimize"}]))
    fused = details(report, "optimize")
    assert fused["model_type"] == "bert" and fused["missing"] == []
    assert fused["fused"]["Attention"] == 2
    final = next(m for m in report["models"] if m["name"] == "final")
    assert final["output_kind"] == "embedding"
    assert final["metrics"]["cosine_min"] > 0.9999  # fusion changes the graph, not the function


def test_optimize_stage_warns_when_attention_did_not_fuse(tmp_path: Path, caplog) -> None:
    run(tmp_path, encoder_recipe([{"type": "export", "opset": 18, "dynamo": True}, {"type": "optimize"}]))
    assert any("fused no Attention" in r.getMessage() for r in caplog.records)


def test_quantize_defaults_fuse_an_encoder_and_try_dynamic_int8(tmp_path: Path) -> None:
    quantize = {"type": "quantize", "select_repeat": 3, "select_seconds": 5}
    report = run(tmp_path, encoder_recipe([{"type": "export", "opset": 17}, quantize]))
    stage = details(report, "quantize")
    assert stage["mode"] == "auto" and stage["fusion"]["fused"]["Attention"] == 2
    names = [c["candidate"] for c in stage["candidates"]]
    assert names[:2] == ["float", "float_fused"]
    assert {"dynamic_wint8", "dynamic_wuint8", "dynamic_wint8_unfused", "qdq_auint8_wint8"} <= set(names)
    assert stage["judged_by"] == "cosine_min"
    chosen = next(c for c in stage["candidates"] if c["candidate"] == stage["chosen"])
    assert chosen["judged_by"] >= 1.0 - 0.01 - 1e-9  # a faithful pick, whichever it is
