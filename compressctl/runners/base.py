"""The runner contract: a strict config model plus one ``run`` method.

A runner never mutates its input artifact, writes only inside
``context.stage_dir`` and takes its randomness from ``context.seed``. Heavy
libraries (torch, onnxruntime) are imported inside ``run``, so that listing
runners or validating a recipe stays fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from compressctl.artifact import Artifact
    from compressctl.pipeline import StageContext

ArtifactKind = Literal["torch", "onnx", "any"]


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

    @abstractmethod
    def run(self, artifact: Artifact, config: Any, context: StageContext) -> Artifact:
        """Return a new artifact made from ``artifact`` by this stage."""

    def output_kind(self, input_kind: str) -> str:
        return input_kind if self.produces == "same" else self.produces
