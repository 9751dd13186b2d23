"""Hyper-connections: n residual streams whose mixing around each sublayer is learned.

    hc = HyperConnection(64, streams=4, dynamic=True, layer=0)
    h, rest, beta = hc.read(H, mask)          # H: (B, T, n, D) -> the sublayer's input (B, T, D)
    H = hc.write(F(h), rest, beta)            # back to (B, T, n, D)

`Block` builds one per sublayer when its `Placement.hyper` is set; `run_stack` expands the
embedded tokens into n streams before the first block and sums them after the last.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from normlab.norms import make_norm

DYNAMIC_SCALE_INIT = 0.01


class HyperConnection(nn.Module):
    """One hyper-connection layer around a sublayer F, for n streams of width D.

        α = [A_m | A_r] ∈ R^{n×(n+1)},  B ∈ R^n                       (static, SHC)
        α += s_α·tanh(H̄ W_α),  B += s_β·tanh(H̄ W_β),  H̄ = LayerNorm(H) per stream   (DHC)
        [h; H_r] = αᵀ H  ((n+1) × D),  H' = B ⊗ F(h) + H_r

    Init: A_m = e_{layer mod n}, A_r = I_n, B = 1; W_α ∈ R^{D×(n+1)} and W_β ∈ R^D zero,
    s_α = s_β = 0.01, the LayerNorm affine (1, 0). With n = 1 the static layer is exactly the
    plain residual x + F(x), and a dynamic one is at init. In DHC each stream's row of α and
    entry of B depends on that stream's own H̄ row.

    Paper: "Hyper-Connections" (Zhu, Huang, Zeng, Wu, Cheng, Zhou, ICLR 2025), Algorithm 1 and
    its PyTorch pseudo-code (no official code was released; the spec follows the paper).

    Args:
        dim: D.
        streams: n ≥ 1.
        dynamic: add the input-dependent weights.
        layer: k, the index that places A_m's 1 (k mod n).
    """

    def __init__(self, dim: int, streams: int, *, dynamic: bool, layer: int) -> None:
        super().__init__()
        self.streams, self.layer = streams, layer
        self.static_alpha = nn.Parameter(torch.empty(streams, streams + 1))
        self.static_beta = nn.Parameter(torch.empty(streams))
        self.norm = self.alpha_fn = self.beta_fn = self.alpha_scale = self.beta_scale = None
        if dynamic:
            self.norm = make_norm("layernorm", dim)
            self.alpha_fn = nn.Parameter(torch.empty(dim, streams + 1))
            self.beta_fn = nn.Parameter(torch.empty(dim))
            self.alpha_scale = nn.Parameter(torch.empty(()))
            self.beta_scale = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The init above (the norm's affine included)."""
        n = self.streams
        self.static_alpha.zero_()
        self.static_alpha[self.layer % n, 0] = 1.0
        self.static_alpha[:, 1:] = torch.eye(n)
        self.static_beta.fill_(1.0)
        if self.norm is not None:
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)
            self.alpha_fn.zero_()
            self.beta_fn.zero_()
            self.alpha_scale.fill_(DYNAMIC_SCALE_INIT)
            self.beta_scale.fill_(DYNAMIC_SCALE_INIT)

    def weights(self, streams: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """α (n, n+1) and B (n,), or per token (B, T, n, n+1) and (B, T, n) when dynamic."""
        if self.norm is None:
            return self.static_alpha, self.static_beta
        normed = self.norm(streams, _stream_mask(mask, streams))  # (B, T, n, D)
        alpha = self.alpha_scale * torch.tanh(normed @ self.alpha_fn) + self.static_alpha
        beta = self.beta_scale * torch.tanh(normed @ self.beta_fn) + self.static_beta
        return alpha, beta

    def read(self, streams: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(the sublayer's input h (B, T, D), the mixed residual streams A_rᵀH (B, T, n, D), B)
        from the streams H (B, T, n, D)."""
        if streams.dim() < 2 or streams.shape[-2] != self.streams:
            raise ValueError(
                f"HyperConnection: expected {self.streams} streams in dim -2 of the hidden "
                f"state (..., n, D), got shape {tuple(streams.shape)}"
            )
        alpha, beta = self.weights(streams, mask)
        mixed = alpha.transpose(-1, -2).to(streams.dtype) @ streams  # (B, T, n+1, D)
        return mixed[..., 0, :], mixed[..., 1:, :], beta

    @staticmethod
    def write(output: Tensor, rest: Tensor, beta: Tensor) -> Tensor:
        """H' = B ⊗ F(h) + A_rᵀH: the sublayer's output (B, T, D) added to every stream."""
        return beta.to(output.dtype)[..., None] * output[..., None, :] + rest

    def extra_repr(self) -> str:
        return f"streams={self.streams}, dynamic={self.norm is not None}, layer={self.layer}"


def _stream_mask(mask: Tensor | None, streams: Tensor) -> Tensor | None:
    return None if mask is None else mask[..., None].expand(streams.shape[:-1])


def run_stack(blocks: Iterable[nn.Module], x: Tensor, mask: Tensor | None,
              streams: int | None) -> Tensor:
    """x (B, T, D) through `blocks`; with hyper-connections (`streams` = n) the blocks see n
    copies of x, (B, T, n, D), and their outputs are summed over the streams."""
    if streams is not None:
        x = x.unsqueeze(-2).expand(*x.shape[:-1], streams, x.shape[-1])
    for block in blocks:
        x = block(x, mask)
    return x if streams is None else x.sum(-2)
