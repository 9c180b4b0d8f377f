"""k2's Muon and QK-Clip on DeepSpeed ZeRO stages 1 and 2.

ZeRO-1/2 hand the client optimizer one flat fp32 partition per parameter group (DeepSpeed's
`DeepSpeedZeroOptimizer`): gradients reach it averaged over ranks and clipped as *raw* gradients, and after the step
DeepSpeed copies the partition into the model's weights and all-gathers them. Two things then need the layout that
DeepSpeed keeps for each group (parameter order, offsets with alignment padding, partition size, process group):

* `bind_zero_partitions` tells `Muon` which matrices its flat partitions hold, so Newton-Schulz sees whole matrices;
* `master_weight_hook` makes QK-Clip scale this rank's fp32 master slice of a clipped weight along with the weight
  itself, otherwise the next step would copy the pre-clip master values back.

DeepSpeed's own Muon path is not used: it orthogonalises inside the gradient reduction, so its gradient clipping acts
on the orthogonalised update (tests/test_train_zero.py shows the shrinkage), and its update scale differs from K2's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from k2core.optim import Muon
from k2core.optim.flat_partition import FlatPartition
from k2core.optim.qk_clip import RowScaleHook


def _group_partition(zero_optimizer: Any, index: int) -> FlatPartition:
    params = zero_optimizer.round_robin_bit16_groups[index]
    group = zero_optimizer.real_dp_process_group[index]
    return FlatPartition(
        shapes=tuple(p.shape for p in params),
        offsets=tuple(int(o) for o in zero_optimizer.round_robin_bit16_offsets[index]),
        size=int(zero_optimizer.partition_size[index]),
        rank=dist.get_rank(group=group),
        world=dist.get_world_size(group=group),
        process_group=group,
    )


def _check_zero_optimizer(zero_optimizer: Any, muon: Muon) -> None:
    if getattr(zero_optimizer, "optimizer", None) is not muon:
        raise TypeError(f"expected DeepSpeed's ZeRO-1/2 optimizer wrapping this Muon, got {type(zero_optimizer)!r}: "
                        "pass engine.optimizer of an engine built with zero_optimization.stage 1 or 2")
    if getattr(zero_optimizer, "cpu_offload", False):
        raise ValueError("ZeRO offload_optimizer is not supported with k2's Muon: DeepSpeed's offload path "
                         "orthogonalises before clipping; remove offload_optimizer from the DeepSpeed config")


def bind_zero_partitions(zero_optimizer: Any, muon: Muon) -> dict[str, int]:
    """Bind every Muon group's flat partition to its matrix layout; returns counts of groups and matrices bound.

    `zero_optimizer` is `engine.optimizer` of a ZeRO-1/2 engine built around `muon`; group i of the engine is
    group i of `muon`, since DeepSpeed builds its groups from the client optimizer's.
    """
    _check_zero_optimizer(zero_optimizer, muon)
    partitions: dict[torch.Tensor, FlatPartition] = {}
    matrices = 0
    for index, group in enumerate(muon.param_groups):
        if not group["use_muon"]:
            continue
        partition = _group_partition(zero_optimizer, index)
        partitions[zero_optimizer.single_partition_of_fp32_groups[index]] = partition
        matrices += len(partition.shapes)
    muon.bind_partitions(partitions)
    return {"groups": len(partitions), "matrices": matrices}


def master_weight_hook(zero_optimizer: Any) -> RowScaleHook:
    """A QK-Clip hook that applies a weight's row scaling to this rank's share of its fp32 master copy."""
    where: dict[int, tuple[int, int]] = {}  # id(param) -> (group index, parameter index in the group's layout)
    partitions = []
    for index, params in enumerate(zero_optimizer.round_robin_bit16_groups):
        partitions.append(_group_partition(zero_optimizer, index))
        for position, param in enumerate(params):
            where[id(param)] = (index, position)

    def scale_master(weight: nn.Parameter, row_scale: torch.Tensor) -> None:
        if id(weight) not in where:
            raise KeyError(f"weight of shape {tuple(weight.shape)} is not in any ZeRO parameter group")
        index, position = where[id(weight)]
        partition = partitions[index]
        master = zero_optimizer.single_partition_of_fp32_groups[index]
        for piece, elements, local in partition.local_pieces():
            if piece != position:
                continue
            factors = row_scale.to(master.device, torch.float32).repeat_interleave(weight[0].numel())[elements]
            master.data[local] = master.data[local] * factors

    return scale_master
