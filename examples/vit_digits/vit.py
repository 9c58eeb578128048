"""A small Vision Transformer, written here and named in ``sweep.yaml`` as ``vit:build``.

Nothing in it knows fpzo_ray: it is a plain ``nn.Module``. Every ``nn.Linear`` weight (the
patch embedding, the attention's query/key/value and output projections, the MLPs, the head)
is prunable by the package's rule; the positional embedding and the class token are listed
in ``prunable_parameters`` so that the saliencies may prune them too.
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with separate query, key and value projections."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, heads, T, D / heads)
            return t.view(batch, tokens, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        weights = torch.softmax(q @ k.transpose(-2, -1) / (dim // self.heads) ** 0.5, dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.out(mixed)


class Block(nn.Module):
    """Pre-norm transformer block: attention and a GELU MLP, each with a residual."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Patches -> linear embedding + class token + positions -> blocks -> head."""

    prunable_parameters = ("positions",)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        patch: int = 4,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        if height % patch or width % patch or dim % heads:
            raise ValueError(f"patch {patch} must divide {height}x{width}, heads {heads} dim {dim}")
        self.patch = patch
        num_patches = (height // patch) * (width // patch)
        self.embed = nn.Linear(channels * patch * patch, dim)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.positions = nn.Parameter(0.02 * torch.randn(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch
        patches = images.unfold(2, p, p).unfold(3, p, p)  # (B, C, H/p, W/p, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)  # (B, N, C p p)
        tokens = self.embed(patches)
        token = self.class_token.expand(tokens.shape[0], -1, -1)
        x = self.blocks(torch.cat([token, tokens], dim=1) + self.positions)
        return self.head(self.norm(x[:, 0]))


def build(input_shape: tuple[int, ...], num_classes: int, **options: int) -> VisionTransformer:
    """What ``model.target: vit:build`` calls; ``model.args`` become ``options``."""
    return VisionTransformer(tuple(input_shape), num_classes, **options)
