"""Tiny models with the couplings structured pruning must keep consistent.

Each takes ``[batch, 1, 8, 8]`` images and returns ``[batch, 10]`` logits.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Head(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class ResidualNet(nn.Module):
    """A residual add: both branches must lose the same channels."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = _conv_bn(1, width)
        self.body = nn.Sequential(_conv_bn(width, width), nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width))
        self.head = Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.relu(x + self.body(x)))


class ConcatNet(nn.Module):
    """A channel concatenation followed by a conv that reads both halves."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.left = _conv_bn(1, width)
        self.right = _conv_bn(1, width // 2)
        self.fuse = _conv_bn(width + width // 2, width)
        self.head = Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fuse(torch.cat([self.left(x), self.right(x)], dim=1)))


class DepthwiseNet(nn.Module):
    """MobileNet-style inverted residual: expand, depthwise 3×3, project, add."""

    def __init__(self, width: int = 16, expand: int = 4) -> None:
        super().__init__()
        hidden = width * expand
        self.stem = _conv_bn(1, width)
        self.block = nn.Sequential(
            nn.Conv2d(width, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, width, 1, bias=False), nn.BatchNorm2d(width),
        )  # fmt: skip
        self.head = Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(x + self.block(x))


class GroupedNet(nn.Module):
    """A grouped conv (4 groups): every group must keep the same width."""

    def __init__(self, width: int = 32, groups: int = 4) -> None:
        super().__init__()
        self.stem = _conv_bn(1, width)
        self.grouped = _conv_bn(width, width, groups=groups)
        self.mix = _conv_bn(width, width)
        self.head = Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.grouped(self.stem(x))))


def residual_net() -> nn.Module:
    return ResidualNet()


def concat_net() -> nn.Module:
    return ConcatNet()


def depthwise_net() -> nn.Module:
    return DepthwiseNet()


def grouped_net() -> nn.Module:
    return GroupedNet()


def hf_resnet() -> nn.Module:
    """Hugging Face's ResNet (basic blocks), built from a config: no download."""
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=1, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10
    )
    return ResNetForImageClassification(config)


def hf_mobilenet_v2() -> nn.Module:
    """Hugging Face's MobileNetV2 (inverted residuals, depthwise convs), built from a config."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    return MobileNetV2ForImageClassification(
        MobileNetV2Config(num_channels=1, image_size=8, depth_multiplier=0.35, finegrained_output=False, num_labels=10)
    )


class HfBertClassifier(nn.Module):
    """Hugging Face's BERT encoder (separate query/key/value layers) with a token-classifier head."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=16,
        )
        self.bert = BertModel(config, add_pooling_layer=False)
        self.fc = nn.Linear(32, 10)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bert(input_ids=input_ids).last_hidden_state[:, 0])


def hf_bert() -> nn.Module:
    return HfBertClassifier()
