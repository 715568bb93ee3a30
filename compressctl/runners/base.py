"""The runner contract: a strict config model plus one ``run`` method, and what ``run`` may use.

A runner never mutates its input artifact, writes only inside
``context.stage_dir`` and takes its randomness from ``context.seed``. Heavy
libraries (torch, onnxruntime) are imported inside ``run``, so that listing
runners or validating a recipe stays fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from compressctl.artifact import Artifact

ArtifactKind = Literal["torch", "onnx", "any"]

#: Replays one recorded structural edit on a freshly built module: ``replay(module, edit) -> module``.
EditReplay = Callable[[Any, dict[str, Any]], Any]
#: Exports a torch artifact to an ONNX path (checked against torch); returns what the check found.
ExportFn = Callable[..., dict[str, Any]]
#: Builds an artifact from a recipe model source (a teacher, a student).
BuildModelFn = Callable[[Any], "Artifact"]
ProgressFn = Callable[..., None]


def no_progress(*args: Any, **kwargs: Any) -> None:
    return None


@dataclass
class StageContext:
    """What a runner may use: its folder, seed, data, baseline, settings and two helpers.

    ``export(artifact, path, config=None)`` exports a torch artifact the way
    the recipe's export stage does; ``build_model(source)`` builds a model
    from a recipe model source (``factory``/``checkpoint`` or ``onnx``).
    """

    index: int  # 1-based position in the plan; stage seeds are seed + index
    name: str
    stage_dir: Path
    seed: int
    data: Any  # the recipe's data bundle (train / val / calibration splits)
    inputs: list[Any]  # the model's input specs
    dims: dict[str, int]  # sizes of the named input dimensions
    batch_size: int  # the recipe's data.batch_size
    evaluate: Any  # the recipe's evaluate section (metric, output kind, sample cap)
    report: Any  # the recipe's report section (batch sizes, warm-up, interval, statistic)
    provider: str  # the execution provider stages measure on
    threads: int  # ONNX Runtime intra-op threads
    export: ExportFn
    build_model: BuildModelFn
    baseline: Artifact | None = None  # the model entering the first compressing stage, once known
    progress: ProgressFn = no_progress
    details: dict[str, Any] = field(default_factory=dict)  # what the stage did, for the report


def searched(**tag: Any) -> dict[str, Any]:
    """``json_schema_extra`` of a config field that ``compressctl advise`` may search (its search tag).

    ``choices=[...]`` (categorical) or ``range=[low, high], step=s`` (a float grid);
    ``per="layer_group" | "layer" | "node"``: one dimension per prunable layer group,
    per decomposable conv or per quantized node (a dict or list field: its entries);
    ``when={"field": [values]}``: only when another field of the
    stage has one of those values; ``optional=True``: ``None`` joins the choices and
    leaves the stage out; ``one_of="name"``: fields sharing the name form one
    dimension (each choice sets one of them); ``models="torch" | "onnx"``: only for
    torch models or only for ONNX-only ones; ``needs={"choice": "OpType"}``: that choice
    only for models whose ONNX graph has a node of that op type with a constant weight
    (dynamic INT8 and int4 act on MatMuls), batch norms for ``BatchNormalization``
    (``bn_scale`` ranks channels by them), or a prunable group narrowing an ``nn.Linear`` for ``Linear``
    (``reconstruct`` re-solves those). See ``compressctl.advise.space``.
    """
    return {"search": tag}


class StageConfig(BaseModel):
    """Base of every stage's options. Subclasses declare ``type: Literal[...]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


class Runner(ABC):
    """A stage implementation. Subclasses set the class attributes and ``run``."""

    type: ClassVar[str]
    config_model: ClassVar[type[StageConfig]]
    consumes: ClassVar[ArtifactKind] = "torch"
    produces: ClassVar[Literal["torch", "onnx", "same"]] = "torch"
    summary: ClassVar[str] = ""
    #: Whether the stage changes the model. ``train`` does not compress, so the
    #: baseline is taken after it.
    compresses: ClassVar[bool] = True
    #: How to replay the structural edits this runner records (``Artifact.with_module``),
    #: by edit ``op``: a cached torch stage is rebuilt by replaying them on a fresh source model.
    edit_replays: ClassVar[Mapping[str, EditReplay]] = {}

    @abstractmethod
    def run(self, artifact: Artifact, config: Any, context: StageContext) -> Artifact:
        """Return a new artifact made from ``artifact`` by this stage."""

    def output_kind(self, input_kind: str) -> str:
        return input_kind if self.produces == "same" else self.produces
