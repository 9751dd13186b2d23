"""Where a run executes, set up once per process: its place in a torchrun job, its device and
precision, and how the model is wrapped (plain, DDP, FSDP2) and its state gathered.

    rt = Runtime.start(cfg)           # joins the torchrun job (once), picks the device
    wrapped = rt.wrap(model, cfg, replicated)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from normlab.bench import checkpoint
from normlab.bench import distributed as D
from normlab.bench.config import RunConfig


def resolve_device(name: str, d: D.Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available; "
                             "use device=cpu or device=auto")
        return torch.device("cuda", d.local_rank if d.enabled else (device.index or 0))
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device (it uses a loss scaler); use "
                         "bf16 or fp32 on CPU")
    return name


@dataclass(frozen=True)
class Runtime:
    """This process's place in the job and the device its runs use."""

    dist: D.Dist
    device: torch.device

    @classmethod
    def start(cls, cfg: RunConfig) -> Runtime:
        """Join the torchrun job described by the environment (or run alone) on cfg.device."""
        wants_cuda = resolve_device(cfg.device, D.Dist()).type == "cuda"
        d = D.setup(use_cuda=wants_cuda)
        return cls(d, resolve_device(cfg.device, d))

    def fsdp(self, cfg: RunConfig) -> bool:
        return self.dist.enabled and cfg.train.parallel == "fsdp"

    def replicated_params(self, model: nn.Module, cfg: RunConfig) -> list[nn.Parameter]:
        """Parameters that FSDP2 leaves whole on every rank: the 0-d ones (DyT's α, scalar
        gates), which `fully_shard` cannot shard; the loop averages their gradients itself."""
        return [p for p in model.parameters() if p.dim() == 0] if self.fsdp(cfg) else []

    def wrap(self, model: nn.Module, cfg: RunConfig,
             replicated: list[nn.Parameter]) -> nn.Module:
        """The module the loop calls: plain, DDP, or FSDP2-sharded in place."""
        if not self.dist.enabled:
            return model
        if cfg.train.parallel == "fsdp":
            from torch.distributed.fsdp import fully_shard

            ignored = set(replicated)
            for block in getattr(model, "blocks", []):
                fully_shard(block, ignored_params=ignored)
            return fully_shard(model, ignored_params=ignored)
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def state_dicts(self, model: nn.Module, optimizer, cfg: RunConfig):
        """Full (unsharded, CPU) model and optimizer state dicts, on every rank."""
        if self.fsdp(cfg):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            return get_state_dict(model, optimizer,
                                  options=StateDictOptions(full_state_dict=True,
                                                           cpu_offload=True))
        return model.state_dict(), optimizer.state_dict()

    def load_state_dicts(self, model: nn.Module, optimizer, ckpt: checkpoint.Checkpoint,
                         cfg: RunConfig) -> None:
        if self.fsdp(cfg):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(model, optimizer, model_state_dict=ckpt.model,
                           optim_state_dict=ckpt.optimizer,
                           options=StateDictOptions(full_state_dict=True))
            return
        model.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.optimizer)
