"""torchrun support: process-group set-up and the few collectives the bench needs.

Without torchrun (WORLD_SIZE unset or 1) every helper is the identity, so the training loop
reads the same either way. gloo is used for CPU runs and NCCL for CUDA runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(use_cuda: bool) -> Dist:
    """Join the torchrun job described by the environment (once), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank=rank, world=world, local_rank=local_rank)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum over ranks (fp64)."""
    if not d.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def average_gradients_(params: list[torch.Tensor], d: Dist) -> None:
    """Average the gradients of `params` over ranks, in place (for parameters that no
    DDP/FSDP wrapper reduces). A missing gradient counts as zeros."""
    if not d.enabled or not params:
        return
    grads = torch.stack([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
    reduced = grads.to(_comm_device())
    dist.all_reduce(reduced)
    reduced = (reduced / d.world).to(grads.device)
    for p, g in zip(params, reduced, strict=True):
        p.grad = g.to(p.dtype).reshape(p.shape).clone()


def gather_states(state: torch.Tensor, d: Dist) -> list[torch.Tensor]:
    """Every rank's uint8 state tensor (same size on each rank), on CPU, in rank order."""
    if not d.enabled:
        return [state.cpu()]
    local = state.to(_comm_device())
    parts = [torch.empty_like(local) for _ in range(d.world)]
    dist.all_gather(parts, local)
    return [p.cpu() for p in parts]


def broadcast_text(text: str, d: Dist, max_bytes: int = 4096) -> str:
    """Rank 0's `text` on every rank (e.g. a freshly named output directory)."""
    if not d.enabled:
        return text
    buffer = torch.zeros(max_bytes, dtype=torch.uint8, device=_comm_device())
    if d.is_main:
        raw = text.encode()
        if len(raw) > max_bytes:
            raise ValueError(f"text longer than {max_bytes} bytes cannot be broadcast")
        buffer[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    dist.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist()).rstrip(b"\0").decode()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
