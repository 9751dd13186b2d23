"""A tiny stand-in for normlab.models' GPT and ViT, used only when that package is absent.

It has the same call signature (`forward(x, targets) -> (logits, loss)`) and the same head
names (`lm_head`, `head`), and builds its norm from the config, so the bench's loop, data,
checkpoints and reports can be tested on their own.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn
from torch.nn import functional as F

import normlab


class StandIn(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m = cfg.model
        self.kind = m.kind
        if m.kind == "gpt":
            self.embed = nn.Embedding(256, m.dim)
            nn.init.normal_(self.embed.weight, std=0.02)
            self.pos = nn.Parameter(torch.zeros(cfg.data.seq_len, m.dim))
        else:
            self.embed = nn.Linear(m.patch_size * m.patch_size, m.dim)
            self.patch = m.patch_size
        self.norm = normlab.make_norm(cfg.norm.name, m.dim, **cfg.norm.kwargs)
        self.mix = nn.Linear(m.dim, m.dim)
        self.drop = nn.Dropout(m.dropout)
        if m.kind == "gpt":
            self.lm_head = nn.Linear(m.dim, 256, bias=False)
            if m.tie_embeddings:
                self.lm_head.weight = self.embed.weight
        else:
            self.head = nn.Linear(m.dim, 10)

    def forward(self, x, targets=None):
        if self.kind == "gpt":
            h = self.embed(x) + self.pos[: x.shape[1]]
            h = h + self.drop(self.mix(self.norm(h)).cumsum(1) / torch.arange(
                1, x.shape[1] + 1, device=x.device).unsqueeze(-1))  # causal mixing
            logits = self.lm_head(h)
        else:
            p = F.unfold(x, self.patch, stride=self.patch).transpose(1, 2)  # (B, N, p*p)
            h = self.embed(p)
            h = h + self.mix(self.norm(h))
            logits = self.head(h.mean(1))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten())
        return logits, loss


def real_models_available() -> bool:
    return importlib.util.find_spec("normlab.models") is not None


def build(cfg):
    return StandIn(cfg)
