"""``prune``: structured pruning through every coupling, sparse masks, schedules, cache replay, a recipe run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from compressctl.artifact import Artifact, load_torch, save_torch
from compressctl.data import load_data
from compressctl.errors import UserError
from compressctl.inputs import example_inputs
from compressctl.onnxio import check_export, export_module, first_tensor
from compressctl.recipe.models import DataSpec, InputSpec
from compressctl.registry import registry
from compressctl.runners.base import StageContext
from compressctl.runners.prune import PruneConfig, PruneRunner, sparsity_keeper
from compressctl.zoo import digits_cnn, tiny_transformer
from tests.conftest import tiny_recipe, write_recipe
from tests.runners import prune_models
from tests.runners.cache_replay import rerun_replays_the_stage
from tests.runners.contexts import stage_context

IMAGE = [InputSpec(name="x", shape=["batch", 1, 8, 8])]
TOKENS = [InputSpec(name="input_ids", shape=["batch", 16], dtype="int64", range=(0, 50))]
DIGITS = load_data(DataSpec(source="digits"), IMAGE, seed=0)
NO_FILES = Path("/nonexistent/prune-writes-no-files")  # the prune runner writes nothing: any write fails


def small_transformer() -> nn.Module:
    torch.manual_seed(0)
    return tiny_transformer(vocab_size=50, d_model=32, nhead=4, num_layers=1, dim_feedforward=64, max_len=16)


def seeded(factory: Any) -> Any:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return factory().eval()

    return build


def prune(build: Any, inputs: list[InputSpec], **options: Any) -> tuple[nn.Module, nn.Module, Artifact, StageContext]:
    original = build()
    context = stage_context(inputs, DIGITS, NO_FILES)
    result = PruneRunner().run(Artifact.from_module(original), PruneConfig(**options), context)
    return original, result.module, result, context


def export_round_trip(module: nn.Module, inputs: list[InputSpec], folder: Path) -> None:
    """The pruned model exports to ONNX and ONNX Runtime agrees with torch."""
    example = example_inputs(inputs, {}, batch=2)
    path = folder / "model.onnx"
    # the TorchScript exporter cannot export nn.TransformerEncoderLayer's fused inference path
    export_module(module, inputs, example, path, dynamo=inputs is TOKENS)
    feeds = [t.numpy() for t in example_inputs(inputs, {}, batch=3)]
    check_export(module, path, feeds, [i.name for i in inputs], rtol=1e-3, atol=1e-4)


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


COUPLED = {
    "residual": (seeded(prune_models.residual_net), IMAGE),
    "concat": (seeded(prune_models.concat_net), IMAGE),
    "depthwise": (seeded(prune_models.depthwise_net), IMAGE),
    "grouped": (seeded(prune_models.grouped_net), IMAGE),
    "transformer": (small_transformer, TOKENS),
}


def check_coupling(name: str, model: nn.Module) -> None:
    if name == "residual":
        assert model.stem[0].out_channels == model.body[1].out_channels == model.body[0][0].in_channels < 16
    elif name == "concat":
        assert model.fuse[0].in_channels == model.left[0].out_channels + model.right[0].out_channels < 24
    elif name == "depthwise":
        dw = model.block[3]
        assert dw.groups == dw.in_channels == dw.out_channels == model.block[0].out_channels < 64
        assert model.block[6].out_channels == model.stem[0].out_channels
    elif name == "grouped":
        conv = model.grouped[0]
        assert conv.groups == 4 and conv.in_channels % 4 == 0 and conv.out_channels % 4 == 0 and conv.out_channels < 32
    else:
        layer = model.encoder.layers[0]
        attention = layer.self_attn
        assert attention.embed_dim % attention.num_heads == 0 and attention.embed_dim < 32
        assert attention.head_dim * attention.num_heads == attention.embed_dim
        assert model.embed.embedding_dim == model.norm.normalized_shape[0] == attention.embed_dim
        assert model.pos.shape[-1] == attention.embed_dim and layer.linear1.out_features < 64


@pytest.mark.parametrize("name", list(COUPLED))
def test_structured_pruning_shrinks_coupled_layers_exports_and_survives_the_cache(name: str, tmp_path: Path) -> None:
    build, inputs = COUPLED[name]
    original, pruned, artifact, context = prune(build, inputs, amount=0.5)
    check_coupling(name, pruned)
    assert params(pruned) < 0.6 * params(original)
    example = example_inputs(inputs, {}, batch=3)
    with torch.no_grad():
        out = first_tensor(pruned(*example))
        assert out.shape == first_tensor(original(*example)).shape
    channels = context.details["channels"]
    assert any(c["out"][1] < c["out"][0] for c in channels.values())
    export_round_trip(pruned, inputs, tmp_path)
    # a cached stage rebuilds the pruned structure from a fresh source model
    save_torch(artifact, tmp_path)
    restored = load_torch(tmp_path, build, registry.replay_edit).module
    with torch.no_grad():
        torch.testing.assert_close(first_tensor(restored(*example)), out)


def runs_exports_and_replays(build: Any, pruned: nn.Module, artifact: Artifact, inputs: list, folder: Path) -> None:
    """The pruned classifier gives [3, 10] logits, exports, and a fresh model replays it from the cache."""
    example = example_inputs(inputs, {}, batch=3)
    with torch.no_grad():
        out = first_tensor(pruned(*example))
    assert out.shape == (3, 10)
    export_round_trip(pruned, inputs, folder)
    save_torch(artifact, folder)
    with torch.no_grad():
        torch.testing.assert_close(first_tensor(load_torch(folder, build, registry.replay_edit).module(*example)), out)


@pytest.mark.parametrize("factory", ["hf_resnet", pytest.param("hf_mobilenet_v2", marks=pytest.mark.slow)])
def test_structured_pruning_of_hugging_face_architectures(factory: str, tmp_path: Path) -> None:
    """Architectures nobody here wrote, passed in as a factory, prune, export and replay from the cache."""
    build = seeded(getattr(prune_models, factory))
    original, pruned, artifact, _ = prune(build, IMAGE, amount=0.5)
    assert params(pruned) < 0.5 * params(original)
    runs_exports_and_replays(build, pruned, artifact, IMAGE, tmp_path)


@pytest.mark.parametrize("heads", [0.0, 0.5])
def test_attention_heads_of_a_hugging_face_encoder(heads: float, tmp_path: Path) -> None:
    """BERT's q/k/v layers stay grouped per head; ``heads`` removes whole heads, 0 narrows every head."""
    build = seeded(prune_models.hf_bert)
    original, pruned, artifact, _ = prune(build, TOKENS, amount=0.25, attention_heads=heads)
    for layer in pruned.bert.encoder.layer:
        attention = layer.attention.self
        if heads:
            assert attention.num_attention_heads == 2 and attention.attention_head_size == 8
        else:
            assert attention.num_attention_heads == 4 and attention.attention_head_size < 8
        assert attention.query.out_features == attention.key.out_features == attention.value.out_features
        assert attention.all_head_size == attention.num_attention_heads * attention.attention_head_size
        assert layer.attention.output.dense.in_features == attention.all_head_size
    assert params(pruned) < 0.65 * params(original)
    runs_exports_and_replays(build, pruned, artifact, TOKENS, tmp_path)


def test_removing_heads_of_fused_attention_is_refused_with_the_reason() -> None:
    with pytest.raises(UserError, match="nn.MultiheadAttention fuses"):
        prune(small_transformer, TOKENS, amount=0.25, attention_heads=0.5)


def test_head_is_kept_and_ignore_round_to_and_layer_amounts_apply() -> None:
    build = seeded(prune_models.grouped_net)
    _, model, _, context = prune(build, IMAGE, amount=0.5, ignore=["mix.*"], layer_amounts={"stem.0": 0.25})
    assert model.head.fc.out_features == 10
    assert model.mix[0].out_channels == 32  # ignored
    assert model.stem[0].out_channels == 24  # its own amount
    assert model.grouped[0].out_channels == 16
    assert "head.fc" in context.details["ignored"] and "mix.0" in context.details["ignored"]
    _, global_ranked, _, _ = prune(build, IMAGE, amount=0.5, scope="global")
    assert global_ranked.head.fc.out_features == 10 and params(global_ranked) < 0.6 * params(build())
    _, rounded, _, _ = prune(seeded(lambda: prune_models.ResidualNet(width=24)), IMAGE, amount=0.5, round_to=8)
    assert rounded.stem[0].out_channels == 8  # 12 rounded down to a multiple of 8


@pytest.mark.parametrize("importance", ["l2", "taylor", "bn_scale", "random"])
def test_every_importance_prunes_the_same_amount(importance: str) -> None:
    _, model, _, _ = prune(seeded(prune_models.residual_net), IMAGE, amount=0.5, importance=importance)
    assert model.stem[0].out_channels == 8


def test_bn_scale_removes_the_channels_whose_scale_was_driven_to_zero() -> None:
    model = seeded(prune_models.concat_net)()
    with torch.no_grad():
        model.left[1].weight[:8] = 1e-4  # what sparsity_regularization does to unneeded channels
        model.left[1].weight[8:] = 1.0
    result = PruneRunner().run(
        Artifact.from_module(model),
        PruneConfig(amount=0.25, importance="bn_scale"),
        stage_context(IMAGE, DIGITS, NO_FILES),
    )
    kept = result.module.left[1].weight.detach()
    assert kept.numel() == 12 and int((kept == 1.0).sum()) == 8


@pytest.mark.parametrize(
    "schedule",
    [
        {"iterations": 2, "schedule": {"epochs": 1, "lr": 0.005}},
        {"schedule": {"kind": "gradual", "epochs": 2, "ramp_end": 1.0, "lr": 0.005}},
    ],
    ids=["iterations", "gradual"],
)
def test_structured_schedules_fine_tune_between_steps_and_reach_the_target(schedule: dict) -> None:
    build = seeded(lambda: digits_cnn(width=16))
    _, model, _, context = prune(build, IMAGE, amount=0.5, **schedule)
    steps = context.details["steps"]
    assert [s["step"] for s in steps] == [1, 2] and steps[0]["params"] > steps[1]["params"]
    assert steps[-1]["val_accuracy"] > 0.5
    assert model[0].out_channels == 8


def test_unstructured_global_magnitude_and_masks_survive_fine_tuning() -> None:
    build = seeded(lambda: digits_cnn(width=16))
    _, model, artifact, context = prune(build, IMAGE, method="unstructured", amount=0.8, schedule={"epochs": 1})
    assert context.details["weight_sparsity"] == pytest.approx(0.8, abs=0.01)
    assert model[-1].weight.ne(0).all()  # the head is kept dense by default
    assert artifact.edits[-1]["op"] == "sparse" and "0.weight" in artifact.edits[-1]["tensors"]
    # a later finetune stage keeps the zeros: train with the keeper hook and check
    zeros = model[3].weight == 0
    keep = sparsity_keeper(model, artifact.edits)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for inputs, labels in DIGITS.train.batches(64):
        loss = nn.functional.cross_entropy(model(torch.from_numpy(inputs[0])), torch.from_numpy(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        keep()
    assert bool((model[3].weight[zeros] == 0).all())


def test_gradual_schedule_ramps_to_the_target_while_fine_tuning() -> None:
    build = seeded(lambda: digits_cnn(width=16))
    _, model, _, context = prune(
        build, IMAGE, method="unstructured", amount=0.7, scope="layer",
        schedule={"kind": "gradual", "epochs": 2, "update_every": 5, "lr": 0.005},
    )  # fmt: skip
    for conv in (model[0], model[3], model[7]):
        assert float((conv.weight == 0).float().mean()) == pytest.approx(0.7, abs=0.01)
    assert context.details["mask_updates"] > 1


def test_nm_keeps_n_of_every_m_input_weights() -> None:
    build = seeded(lambda: digits_cnn(width=16))
    _, model, _, context = prune(build, IMAGE, method="nm")
    conv = model[3].weight.detach()  # [32, 16, 3, 3]: groups of 4 along the 16 inputs
    groups = conv.movedim(1, -1).reshape(-1, 4)
    assert bool(((groups != 0).sum(dim=1) <= 2).all()) and float((groups == 0).float().mean()) == pytest.approx(0.5)
    assert model[0].weight.ne(0).all()  # one input channel: no group of 4, left dense
    assert context.details["weight_sparsity"] == pytest.approx(0.5, abs=0.01)


def test_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="n must be smaller than m"):
        PruneConfig(method="nm", n=4, m=4)
    with pytest.raises(ValidationError, match="gradual"):
        PruneConfig(method="nm", schedule={"kind": "gradual", "epochs": 2})
    with pytest.raises(ValidationError, match="layer_amounts"):
        PruneConfig(layer_amounts={"fc": 1.5})
    with pytest.raises(ValidationError, match="apply to method structured"):
        PruneConfig(method="unstructured", importance="taylor")
    with pytest.raises(ValidationError):
        PruneConfig(amount=1.0)


def test_recipe_prunes_fine_tunes_keeps_zeros_and_reuses_the_cache(cli, tmp_path: Path) -> None:
    recipe = tiny_recipe(
        stages=[
            {"type": "train", "epochs": 1, "lr": 0.01},
            {"type": "prune", "method": "structured", "amount": 0.5},
            {"type": "prune", "method": "unstructured", "amount": 0.6},
            {"type": "finetune", "epochs": 1, "lr": 0.002},
            {"type": "export", "dynamo": False},
        ],
        gates={"max_macs_ratio": 0.5, "max_nonzero_params_ratio": 0.2},
    )
    path = write_recipe(tmp_path, recipe)
    out = tmp_path / "out"
    result = cli("apply", path, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    models = {m["name"]: m for m in report["models"]}
    base, structured, final = models["baseline"], models["02-prune"], models["final"]
    assert structured["macs"] < 0.5 * base["macs"] and structured["params"] < 0.5 * base["params"]
    assert final["nonzero_params"] <= models["03-prune"]["nonzero_params"] < 0.2 * base["params"]  # finetune kept zeros
    details = {s["name"]: s["details"] for s in report["stages"]}
    assert details["02-prune"]["channels"]["0"]["out"] == [16, 8]
    assert {g["name"] for g in report["gates"]} >= {"max_macs_ratio", "max_nonzero_params_ratio"}
    rerun_replays_the_stage(cli, path, out, "04-finetune", "05-export")
