"""Data-parallel training across processes and machines with torch.distributed (started by ``torchrun``).

``torchrun --nproc_per_node P [--nnodes M --node_rank K --rdzv_endpoint HOST:PORT] -m inference.ml train ...``
sets RANK / WORLD_SIZE / LOCAL_RANK; ``init`` joins the group (gloo on CPUs, NCCL on GPUs, one GPU per
process). Every process trains the same recipe on its share of each batch (the global batch stays
``batch_size``; DistributedDataParallel averages the gradients), reading its rows of the shared image
cache; rank 0 decodes the cache and chooses the image size first, writes the checkpoints and, alone,
evaluates and writes the artefact. Without WORLD_SIZE > 1 nothing here changes a run.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def requested() -> bool:
    """True when started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group when torchrun asked for one; returns the device of this process
    (on CUDA the GPU of its LOCAL_RANK)."""
    if not requested() or active():
        return _local_device(device) if active() else device
    if device.type == "cuda":
        device = _local_device(device)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _local_device(device: torch.device) -> torch.device:
    if device.type != "cuda":
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    if active():
        dist.barrier()


def shard(batch_rows, r: int | None = None, n: int | None = None):
    """This process's share of one global batch: every n-th photo from position r."""
    r = rank() if r is None else r
    n = world_size() if n is None else n
    return batch_rows[r::n]


def wrap(model: torch.nn.Module, device: torch.device):
    """The model as DistributedDataParallel (its parameters broadcast from rank 0), or itself."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def finish() -> None:
    if active():
        dist.destroy_process_group()
