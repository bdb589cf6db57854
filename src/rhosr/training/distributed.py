"""The data-parallel world of a training run (``torchrun``) and its device.

Under ``torchrun`` (env ``WORLD_SIZE`` > 1) every rank runs the same training; the
molecules of each optimizer step are dealt out to the ranks and the summed gradients
all-reduced (:meth:`World.all_reduce_grads`), so N ranks compute the update of one
process.  Without ``torchrun`` :class:`World` is a world of one and every collective a
no-op.  Rank 0 logs and writes the checkpoints.  The device is
:func:`rhosr.nn.device.resolve_device` of the ``device`` option (CUDA rank r: ``cuda:r``
of its node).
"""

from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist

from rhosr.nn.device import resolve_device


class World:
    """This process's rank among ``world`` processes, its device and the collectives."""

    def __init__(self, device_pref="auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0")) if self.world > 1 else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0")) if self.world > 1 else 0
        device = resolve_device(device_pref)
        if device.type == "cuda" and self.world > 1:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.enabled = self.world > 1
        self.owned = False
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owned = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def _tensor(self, values, dtype=torch.float64):
        dev = self.device if self.device.type == "cuda" else torch.device("cpu")
        return torch.tensor(values, dtype=dtype, device=dev)

    def sum(self, values) -> list[float]:
        """The sum over the ranks of each of ``values``."""
        if not self.enabled:
            return list(values)
        t = self._tensor(list(values))
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, values) -> list[float]:
        """Rank 0's ``values``."""
        if not self.enabled:
            return list(values)
        t = self._tensor(list(values))
        dist.broadcast(t, 0)
        return t.tolist()

    def all_reduce_grads(self, params) -> None:
        """Sum the gradients of ``params`` over the ranks (one flat all-reduce)."""
        if not self.enabled:
            return
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        i = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[i:i + n].view_as(g))
            i += n

    def broadcast_module(self, module) -> None:
        """Rank 0's parameters and buffers of ``module`` on every rank."""
        if not self.enabled:
            return
        for t in module.state_dict().values():
            dist.broadcast(t.data if hasattr(t, "data") else t, 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_equal(self, text: str) -> bool:
        """Whether every rank holds the same ``text`` (compared by hash)."""
        if not self.enabled:
            return True
        digest = int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)
        t = self._tensor([digest], dtype=torch.int64)
        lo, hi = t.clone(), t.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        return int(lo.item()) == int(hi.item())

    def close(self) -> None:
        if self.enabled and self.owned:
            dist.destroy_process_group()
