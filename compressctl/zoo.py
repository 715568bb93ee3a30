"""Built-in example models, used by recipes, demos and tests.

Each builder is a plain ``factory:`` target (``compressctl.zoo:digits_resnet``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def digits_cnn(num_classes: int = 10, width: int = 32) -> nn.Module:
    """A small CNN for 8×8 digits. Input ``[batch, 1, 8, 8]``."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs with a residual add."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class DigitsResNet(nn.Module):
    """A 3-stage residual CNN for 32×32 digits (≈ 48 M MACs per image at width 32).

    Large enough that CPU latency is compute-bound, so compression shows up in
    the measured latency rather than vanishing in per-op overhead.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 4 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def digits_resnet(num_classes: int = 10, width: int = 32) -> nn.Module:
    """Residual CNN for digits resized to 32×32. Input ``[batch, 1, 32, 32]``."""
    return DigitsResNet(num_classes=num_classes, width=width)


class TinyTransformer(nn.Module):
    """A token classifier on ``nn.TransformerEncoder``. Input: int64 token ids ``[batch, seq]``.

    Output: ``[batch, num_classes]`` logits from the mean-pooled encoder states.
    """

    def __init__(
        self,
        vocab_size: int = 1000,
        d_model: int = 128,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 512,
        max_len: int = 128,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        x = self.embed(input_ids) + self.pos[:, :seq_len]
        x = self.norm(self.encoder(x))
        return self.head(x.mean(dim=1))


def tiny_transformer(**kwargs) -> nn.Module:
    """Token classifier built on ``nn.TransformerEncoder`` (int64 ``input_ids``)."""
    return TinyTransformer(**kwargs)


class TokenBandTask:
    """A learnable synthetic token-classification set: the label is the vocabulary band
    (``vocab_size / num_classes`` ids wide) that a share of each sequence's tokens comes from.

    Map-style dataset of ``(input_ids[seq], label)``, for ``data.source.factory``.
    """

    def __init__(
        self,
        samples: int = 2048,
        seq: int = 32,
        vocab_size: int = 1000,
        num_classes: int = 10,
        signal: float = 0.3,
        seed: int = 0,
    ) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)
        band = vocab_size // num_classes
        self.labels = rng.integers(0, num_classes, samples).astype(np.int64)
        ids = rng.integers(0, vocab_size, (samples, seq))
        in_band = rng.random((samples, seq)) < signal
        band_ids = self.labels[:, None] * band + rng.integers(0, band, (samples, seq))
        self.ids = np.where(in_band, band_ids, ids).astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple:
        return self.ids[index], int(self.labels[index])


def token_band_task(**kwargs) -> TokenBandTask:
    """Synthetic token classification for ``tiny_transformer`` (see ``TokenBandTask``)."""
    return TokenBandTask(**kwargs)


# --- a BERT-style sentence encoder --------------------------------------------------------------


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.hidden, self.num_heads = hidden, heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), x.size(1), self.num_heads, self.hidden // self.num_heads).permute(0, 2, 1, 3)

    def forward(self, states: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        query = self.heads(self.query(states))
        key = self.heads(self.key(states))
        value = self.heads(self.value(states))
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.hidden // self.num_heads)
        probs = torch.softmax(scores + additive_mask, dim=-1)
        context = torch.matmul(probs, value).permute(0, 2, 1, 3).contiguous()
        return context.view(context.size(0), context.size(1), self.hidden)


class DenseNorm(nn.Module):
    """Dense → residual add → LayerNorm (BERT's "output" blocks)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.self = SelfAttention(hidden, heads)
        self.output = DenseNorm(hidden, hidden)

    def forward(self, states: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(states, additive_mask), states)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(x))


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int) -> None:
        super().__init__()
        self.attention = Attention(hidden, heads)
        self.intermediate = Intermediate(hidden, intermediate)
        self.output = DenseNorm(intermediate, hidden)

    def forward(self, states: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(states, additive_mask)
        return self.output(self.intermediate(attended), attended)


class Encoder(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, layers: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(hidden, heads, intermediate) for _ in range(layers))


class Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(positions).unsqueeze(0))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, : input_ids.size(1)]
        token_types = torch.zeros_like(input_ids)
        summed = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.LayerNorm(summed + self.token_type_embeddings(token_types))


class Pooler(nn.Module):
    """Unused by mean pooling; kept so Hugging Face checkpoints load strictly."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)


class SentenceEncoder(nn.Module):
    """BERT encoder → masked mean pooling → L2 normalisation (sentence-transformers' recipe).

    Parameter names are Hugging Face's, so a BERT checkpoint (``model.safetensors``)
    loads strictly through ``checkpoint:``. Attention is written as ONNX Runtime's
    transformer optimizer recognises it after the TorchScript exporter: Q/K/V as
    MatMul+Add → Reshape → Transpose, scores divided by √d, an additive mask
    ``(1 - mask) * -10000``, Softmax, MatMul.
    """

    def __init__(
        self,
        vocab: int = 1000,
        hidden: int = 64,
        heads: int = 4,
        layers: int = 2,
        intermediate: int = 256,
        positions: int = 128,
    ) -> None:
        super().__init__()
        self.embeddings = Embeddings(vocab, hidden, positions)
        self.encoder = Encoder(hidden, heads, intermediate, layers)
        self.pooler = Pooler(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.embeddings(input_ids)
        mask = attention_mask.unsqueeze(1).unsqueeze(2).to(states.dtype)
        additive_mask = (1.0 - mask) * -10000.0
        for layer in self.encoder.layer:
            states = layer(states, additive_mask)
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def sentence_encoder(**kwargs) -> nn.Module:
    """BERT-style encoder with mean pooling (int64 ``input_ids`` and ``attention_mask``)."""
    return SentenceEncoder(**kwargs).eval()
