"""Several processes training as one, under ``torchrun``: the process group (NCCL on
GPUs, gloo on CPUs), BatchNorm synchronised across processes (so that N processes with
a global batch normalise as one process does), and the collectives of the metrics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from .config import ConfigError


@dataclass
class Dist:
    """This process's place in the run: rank, number of processes, device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as tdist

            tdist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as tdist

            tdist.all_reduce(t)
        return t

    def all_gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """The ranks' tensors concatenated along dim 0, in rank order."""
        if self.world == 1:
            return t
        import torch.distributed as tdist

        parts = [torch.empty_like(t) for _ in range(self.world)]
        tdist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def gather_objects(self, obj) -> list:
        if self.world == 1:
            return [obj]
        import torch.distributed as tdist

        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out


def world_from_env() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(text)
    except ValueError:
        world = 0
    if world < 1:
        raise ConfigError(f"WORLD_SIZE={text!r} must be a positive integer")
    return world


def init_distributed(device_spec: Optional[str]) -> Dist:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs), or a
    one-process run."""
    from hirilib.runtime import resolve_device

    world = world_from_env()
    if world == 1:
        return Dist(device=resolve_device(device_spec))
    import torch.distributed as tdist

    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world} is set but {', '.join(missing)} is not: start several "
            "processes with torchrun (torchrun --standalone --nproc_per_node=N -m "
            "hirilib train ...), or unset WORLD_SIZE for one process"
        )
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    base = resolve_device(device_spec)
    if base.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend)
    return Dist(rank, world, local, device)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum of the processes' gradients (each
    process's output feeds every process's loss)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as tdist

        t = t.clone()
        if tdist.is_available() and tdist.is_initialized():
            tdist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        import torch.distributed as tdist

        g = g.clone()
        if tdist.is_available() and tdist.is_initialized():
            tdist.all_reduce(g)
        return g


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch: each
    process's per-channel sums are all-reduced (differentiably, so the gradient is the
    one-process gradient), for any backend (torch's ``SyncBatchNorm`` runs on GPUs
    only).  In eval mode it is BatchNorm.

        mean = sum_r S1_r / N,  var = sum_r sum (x - mean)^2 / N  over N = sum_r n_r
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm takes (B, C, ...), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        n = torch.full((1,), float(x.numel() // x.shape[1]), device=x.device)
        s1n = all_reduce(torch.cat([xf.sum(dims), n]))  # (C + 1,)
        total = s1n[-1]
        mean = s1n[:-1] / total
        sq = all_reduce(((xf - mean.view(shape)) ** 2).sum(dims))
        var = sq / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / self.num_batches_tracked.item()
                )
                unbiased = var * total / (total - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` normalised over the global batch: torch's
    ``SyncBatchNorm`` on GPUs, :class:`GlobalBatchNorm` elsewhere (gloo on CPUs).  The
    state-dict keys stay the same."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, GlobalBatchNorm
        ):
            new = GlobalBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            ).to(device)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(model, name, new)
        else:
            sync_batchnorm(child, device)
    return model
