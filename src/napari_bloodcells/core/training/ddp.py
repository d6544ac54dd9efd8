"""Training on several processes with DistributedDataParallel, as started by ``torchrun``.

``torchrun --nproc-per-node N -m napari_bloodcells train ...`` starts N copies
of the command with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set.
:func:`from_environment` joins them into one process group (NCCL on GPUs,
gloo on the CPU) and :func:`~napari_bloodcells.core.training.loop.train` then:

- gives every process its share of each batch (the same global batches as
  one process, drawn from the same seeded order) and averages the gradients
  with DDP;
- evaluates a share of the dev images on each process and sums the
  confusion matrices and losses, so every process sees the same scores and
  keeps the same best model;
- stops every process at the same batch when any one is asked to stop;
- saves checkpoints and reports on rank 0 only, recording ``world_size``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from napari_bloodcells.errors import ConfigError


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a ``torchrun`` job.

    Attributes
    ----------
    rank, local_rank, world_size : int
    device : torch.device
        ``cuda:LOCAL_RANK`` with NCCL, else the CPU with gloo.
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process prints, saves and reports (rank 0)."""
        return self.rank == 0

    def share(self, items: list[int]) -> list[int]:
        """This rank's part of a global batch; never empty (DDP needs every rank to step)."""
        mine = items[self.rank :: self.world_size]
        return mine or items[:1]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (all ranks get the same answer)."""
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks (returned on its own device)."""
        moved = tensor.to(self.device, copy=True)
        dist.all_reduce(moved)
        return moved.to(tensor.device)

    def close(self) -> None:
        """Leave the process group."""
        if dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: str = "auto") -> ProcessGroup | None:
    """Join the ``torchrun`` process group described by the environment, if any.

    Returns ``None`` in a plain single-process run (no ``WORLD_SIZE`` above 1).

    Raises
    ------
    ConfigError
        If the processes cannot join (a rendezvous that fails, say), or the
        device asks for a GPU that is not there.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but this machine has no CUDA GPU.")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen, backend = torch.device("cuda", local_rank), "nccl"
    else:
        chosen, backend = torch.device("cpu"), "gloo"
    try:
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"Could not join the {world_size} training processes ({type(exc).__name__}); start "
            "them with torchrun --nproc-per-node N -m napari_bloodcells train ..."
        ) from exc
    return ProcessGroup(rank, local_rank, world_size, chosen)
