"""The recipe format (version 1) as pydantic models.

Stage configs come from the runner registry and are joined into one
discriminated union on ``type``, so a third-party runner's options are
validated exactly like a built-in's.
"""

from __future__ import annotations

import functools
import operator
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

DTYPES = ("float32", "float16", "int64", "int32", "bool")
BUILTIN_DATA_SOURCES = ("digits", "random")
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_factory(value: str) -> str:
    if not _FACTORY_RE.match(value):
        raise ValueError(f"must look like 'module:callable' (got '{value}')")
    return value


class InputSpec(Strict):
    name: str = Field(description="Input name, as the ONNX graph input.", min_length=1)
    shape: list[int | str] = Field(
        description=(
            "Dimensions; a name (e.g. batch, seq) marks a dynamic dimension. The dim named batch is the batch "
            "axis wherever it sits (e.g. [2, batch, 128]); without one, the first axis is. [] is a scalar."
        ),
    )
    dtype: Literal["float32", "float16", "int64", "int32", "bool"] = Field("float32", description="Element type.")
    range: tuple[float, float] | None = Field(
        None, description="Value range for generated data, e.g. [0, 1000] for token ids."
    )
    value: float | int | bool | list[Any] | None = Field(
        None,
        description=(
            "A constant fed as it is with every batch, never batched (e.g. a sample rate); "
            "its shape and dtype must match shape and dtype."
        ),
    )

    @field_validator("shape")
    @classmethod
    def _positive_dims(cls, shape: list[int | str]) -> list[int | str]:
        for dim in shape:
            if isinstance(dim, int) and dim <= 0:
                raise ValueError(f"dimensions must be positive (got {dim})")
            if isinstance(dim, str) and not dim.isidentifier():
                raise ValueError(f"a named dimension must be an identifier (got '{dim}')")
        return shape

    @field_validator("value")
    @classmethod
    def _value_fits(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or "shape" not in info.data or "dtype" not in info.data:
            return value
        check_constant(value, info.data["shape"], info.data["dtype"])
        return value

    @property
    def batch_axis(self) -> int | None:
        """The axis samples are stacked on: the dim named ``batch``, else the first; None for a constant."""
        if self.value is not None or not self.shape:
            return None
        return self.shape.index("batch") if "batch" in self.shape else 0


def value_shape(value: Any) -> list[int] | None:
    """Shape of a scalar or a nested list; None when the nesting is ragged."""
    if not isinstance(value, list):
        return []
    inner = [value_shape(v) for v in value]
    if any(s is None or s != inner[0] for s in inner):
        return None
    return [len(value), *(inner[0] if inner else [])]


def leaves(value: Any) -> list[Any]:
    return [leaf for v in value for leaf in leaves(v)] if isinstance(value, list) else [value]


def check_constant(value: Any, shape: list[int | str], dtype: str) -> None:
    """A constant input's ``value`` must have the input's shape and element type."""
    named = [d for d in shape if isinstance(d, str)]
    if named:
        raise ValueError(f"a constant input has a fixed shape; shape names {named[0]!r}")
    found = value_shape(value)
    if found is None:
        raise ValueError("the nested lists are ragged")
    if found != shape:
        raise ValueError(f"has shape {found}, but shape is {shape}")
    wrong = {
        "bool": lambda v: not isinstance(v, bool),
        "int64": lambda v: isinstance(v, bool) or not isinstance(v, int),
        "int32": lambda v: isinstance(v, bool) or not isinstance(v, int) or not -(2**31) <= v < 2**31,
    }.get(dtype, lambda v: isinstance(v, bool) or not isinstance(v, (int, float)))
    bad = next((v for v in leaves(value) if wrong(v)), None)
    if bad is not None:
        raise ValueError(f"{bad!r} does not fit dtype {dtype}")


class ModelRef(Strict):
    """A model: a torch factory (with kwargs and an optional checkpoint) or an ONNX file."""

    factory: str | None = Field(None, description="'module:callable' building a torch.nn.Module.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the factory.")
    checkpoint: str | None = Field(
        None, description="state_dict to load: .pt/.pth (loaded weights_only) or .safetensors."
    )
    onnx: str | None = Field(None, description="An ONNX file.")

    @field_validator("factory")
    @classmethod
    def _factory(cls, value: str | None) -> str | None:
        return None if value is None else check_factory(value)

    @model_validator(mode="after")
    def _one_source(self) -> ModelRef:
        if bool(self.factory) == bool(self.onnx):
            raise ValueError("give exactly one of 'factory' or 'onnx'")
        if self.onnx and self.checkpoint:
            raise ValueError("'checkpoint' applies to 'factory' models, not to 'onnx'")
        return self


class ModelSource(ModelRef):
    """The recipe's model, with the inputs it takes."""

    onnx: str | None = Field(None, description="An ONNX file, for ONNX-only pipelines.")
    inputs: list[InputSpec] = Field(default_factory=list, description="Model inputs; required for torch models.")
    dims: dict[str, int] = Field(
        default_factory=dict,
        description="Sizes for named dims other than batch when making example inputs (e.g. {seq: 32}).",
    )

    @model_validator(mode="after")
    def _inputs(self) -> ModelSource:
        if self.factory and not self.inputs:
            raise ValueError("'inputs' is required with 'factory' (names, shapes and dtypes of the model inputs)")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names must be unique (got {names})")
        return self


class NpzSource(Strict):
    npz: str = Field(description=".npz file with arrays named like the inputs and optional 'labels'.")


class FactorySource(Strict):
    factory: str = Field(description="'module:callable' returning a torch Dataset of (inputs, label).")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("factory")
    @classmethod
    def _factory(cls, value: str) -> str:
        return check_factory(value)


class DataSpec(Strict):
    source: Literal["digits", "random"] | NpzSource | FactorySource = Field(
        "digits", description="digits | random | {npz: file.npz} | {factory: 'module:callable'}."
    )
    image_size: int | None = Field(None, gt=0, le=512, description="digits only: resize the 8×8 images.")
    batch_size: int = Field(64, gt=0, le=65536, description="Batch size for training and evaluation.")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction held out for validation.")
    calibration_samples: int = Field(512, gt=0, description="Most training samples set aside for calibration.")
    samples: int = Field(512, gt=0, le=1_000_000, description="random only: number of samples.")
    num_classes: int = Field(10, gt=1, description="random only: label range.")

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in BUILTIN_DATA_SOURCES:
                raise ValueError(
                    f"unknown data source '{value}' (built-ins: {', '.join(BUILTIN_DATA_SOURCES)}; "
                    "or {npz: file.npz} or {factory: 'module:callable'})"
                )
            return value
        if isinstance(value, dict):
            if "npz" in value:
                return NpzSource.model_validate(value)
            if "factory" in value:
                return FactorySource.model_validate(value)
        raise ValueError("must be digits, random, {npz: file.npz} or {factory: 'module:callable'}")


class EvaluateSpec(Strict):
    metric: Literal["accuracy", "top5", "fidelity", "factory"] = Field(
        "accuracy", description="accuracy | top5 | fidelity (agreement with baseline) | factory."
    )
    factory: str | None = Field(None, description="metric: factory — 'module:callable(outputs, labels) -> float'.")
    max_samples: int | None = Field(None, gt=0, description="Evaluate on at most this many samples.")
    output_kind: Literal["auto", "classes", "embedding", "detection", "dense", "regression", "tensor"] = Field(
        "auto",
        description=(
            "What the model outputs. classes: judged by accuracy or top-1 agreement; any other kind by cosine "
            "(mean and worst sample) and SQNR against the float model. auto: read from the output's shape, name "
            "and values."
        ),
    )

    @model_validator(mode="after")
    def _factory_needed(self) -> EvaluateSpec:
        if self.metric == "factory" and not self.factory:
            raise ValueError("metric 'factory' needs 'factory: module:callable'")
        if self.factory:
            check_factory(self.factory)
        return self


class ReportSpec(Strict):
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1,
        description="ONNX Runtime execution providers to measure on.",
    )
    batch_sizes: list[Annotated[int, Field(gt=0, le=65536)]] = Field(
        default_factory=lambda: [1, 32], min_length=1, description="Batch sizes to measure latency at."
    )
    warmup: int = Field(10, ge=0, le=10_000, description="Warm-up runs before timing.")
    repeat: int = Field(
        100,
        gt=0,
        le=100_000,
        description="Rounds of a sitting (each runs every model once) before it may stop on its interval; its time budget may stop it sooner.",
    )
    threads: int | None = Field(
        None, gt=0, le=1024, description="Intra-op threads (default: CPUs available to this process)."
    )
    max_seconds: float = Field(
        60.0, gt=0, le=86_400, description="Time budget of one sitting (one provider × batch size)."
    )
    interval: float = Field(
        0.03,
        gt=0,
        le=1,
        description="A sitting repeats rounds until every speedup's interval is within ± this fraction of it.",
    )
    statistic: Literal["min", "p10", "p25", "median"] = Field(
        "min",
        description=(
            "The latency estimate speedups divide. min: the fastest run of each model over many fresh sessions; "
            "contention on a shared machine only ever slows a run down, and slows INT8 more than float."
        ),
    )


class GatesSpec(Strict):
    max_accuracy_drop: float | None = Field(None, ge=0, le=1, description="Baseline minus final metric (0.01 = 1 pt).")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="Final metric at least this.")
    min_speedup: float | None = Field(None, gt=0, description="Baseline p50 / final p50.")
    max_size_ratio: float | None = Field(None, gt=0, description="Final size / baseline size.")
    max_latency_ms: float | None = Field(None, gt=0, description="Final p50 in milliseconds.")
    max_macs_ratio: float | None = Field(None, gt=0, description="Final MACs / baseline MACs.")
    max_nonzero_params_ratio: float | None = Field(
        None, gt=0, description="Final nonzero parameters / baseline parameters (unstructured sparsity)."
    )
    max_compressed_size_ratio: float | None = Field(
        None, gt=0, description="Final zipped size / baseline zipped size (unstructured sparsity)."
    )
    at: str | None = Field(
        None,
        description="'<provider>@<batch>' the latency gates read (default: first provider, largest batch).",
    )
    confidence: float | None = Field(
        None,
        ge=0.5,
        lt=1,
        description=(
            "min_speedup passes only when the whole interval at this confidence (e.g. 0.95) clears the limit; "
            "default: the estimate decides, and a gate whose interval straddles the limit is marked uncertain."
        ),
    )

    @field_validator("at")
    @classmethod
    def _at(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^\w+@\d+$", value):
            raise ValueError(f"must look like 'CPUExecutionProvider@32' (got '{value}')")
        return value


def build_recipe_model(stage_configs: list[type[BaseModel]]) -> type[BaseModel]:
    """A ``Recipe`` model whose ``stages`` accept every registered stage type."""
    if len(stage_configs) == 1:
        stage_union: Any = stage_configs[0]
    else:
        stage_union = Annotated[functools.reduce(operator.or_, stage_configs), Field(discriminator="type")]
    return create_model(
        "Recipe",
        __base__=RecipeBase,
        stages=(list[stage_union], Field(default_factory=list, description="Stages, run in order.")),
    )


class RecipeBase(Strict):
    version: Literal[1] = Field(description="Recipe format version (1).")
    name: str = Field(
        description="Name of the run; names the output folder.",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    )
    seed: int = Field(0, ge=0, description="Seed for data splits, initialisation and training.")
    model: ModelSource
    data: DataSpec = Field(default_factory=DataSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    output: str | None = Field(None, description="Output folder (default: out/<name>).")

    _source_path: Path | None = PrivateAttr(None)
