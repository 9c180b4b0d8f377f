"""torch.distributed setup for single-process runs and for the deepspeed launcher."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_process_group() -> None:
    """Join the launcher's group (env vars set) or start a one-process group on a free loopback port.

    gloo on CPU (the accelerator the tests and tiny profiles use), nccl when CUDA is present.
    """
    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "RANK" not in os.environ or "MASTER_PORT" not in os.environ:
        # One process: an in-process store, no rendezvous port. A port picked free and bound a moment later can be
        # taken in between (an outgoing connection's ephemeral port, another server), failing with EADDRINUSE.
        # The variables are still set for DeepSpeed, which reads them (and would otherwise try MPI discovery).
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_loopback_port()), RANK="0",
                          LOCAL_RANK="0", WORLD_SIZE="1")
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        return
    dist.init_process_group(backend, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))


def build_deepspeed_comm_op() -> None:
    """Build DeepSpeed's CPU shared-memory collective op (if this accelerator has it) under k2's build lock.

    `deepspeed.initialize` JIT-builds it through torch, whose plain `lock` file a process killed mid-build leaves
    behind, so every later run would wait forever. Built here first, under `exclusive_build`, a dead builder's lock
    is cleared; DeepSpeed then finds the op already loaded in this process.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from torch.utils.cpp_extension import _get_build_directory

    from k2core.kernels.build import exclusive_build

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return
    with exclusive_build(Path(_get_build_directory(builder.name, verbose=False))):
        builder.load(verbose=False)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of data-parallel ranks."""
    return dist.get_rank(), dist.get_world_size()
