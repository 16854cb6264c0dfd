"""The process group of an atlas build: one process needs nothing, ``torchrun`` gets ranks.

:func:`setup` reads the ``torchrun`` environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``...) and initialises ``torch.distributed`` when there is more than one process
(gloo on CPU, nccl on CUDA) unless a group is already initialised; a single process gets a
:class:`Group` of one and never touches ``torch.distributed``. Objects (the finished parts of
the build) travel through a gloo group even when the tensors go through nccl.

Examples
--------
>>> g = Group.single()
>>> g.rank, g.world, g.gather(["a"]), g.broadcast({"x": 1})
(0, 1, [['a']], {'x': 1})
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Group", "setup", "world_from_env"]


def world_from_env() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from the ``torchrun`` environment (0, 1, 0 alone)."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


@dataclass
class Group:
    """The ranks of a build: ``rank`` of ``world`` processes, and ``objects`` (a gloo process
    group for Python objects; None for a single process)."""

    rank: int = 0
    world: int = 1
    objects: Any = None
    owned: bool = False

    @classmethod
    def single(cls) -> Group:
        """One process, no ``torch.distributed``."""
        return cls()

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the output."""
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on rank 0 (an empty list on the others)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world if self.rank == 0 else []
        dist.gather_object(obj, out if self.rank == 0 else None, dst=0, group=self.objects)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self.objects)
        return box[0]

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier(group=self.objects)

    def close(self) -> None:
        """Destroy the process group when :func:`setup` made it."""
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False


def setup(device: str | None = None) -> Group:
    """The :class:`Group` of this process: ``torch.distributed`` initialised from the
    ``torchrun`` environment when ``WORLD_SIZE`` > 1 (gloo for CPU, nccl for CUDA ``device``),
    or reused when already initialised; a single process gets :meth:`Group.single`."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed
        return Group.single()
    owned = False
    if not (dist.is_available() and dist.is_initialized()):
        _, world, _ = world_from_env()
        if world <= 1:
            return Group.single()
        if not dist.is_available():  # pragma: no cover
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        cuda = device is not None and str(device).startswith("cuda")
        if cuda:
            import torch

            torch.cuda.set_device(world_from_env()[2])  # one GPU per local rank
        dist.init_process_group("nccl" if cuda else "gloo")
        owned = True
    world = dist.get_world_size()
    if world == 1:
        return Group(0, 1, None, owned)
    objects = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return Group(dist.get_rank(), world, objects, owned)
