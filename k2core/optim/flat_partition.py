"""Where Muon's matrices sit inside a ZeRO-1/2 flat partition, so Muon can train partitioned optimizer state exactly.

ZeRO stages 1 and 2 flatten each parameter group into one buffer, split it into equal slices, one per data-parallel
rank, and hand the optimizer only this rank's slice (a 1-D tensor whose gradient is already averaged over ranks and
clipped as a raw gradient). Momentum is elementwise, so it stays partitioned; Newton-Schulz needs whole matrices, so
the Nesterov direction is all-gathered, each matrix that overlaps this rank's slice is orthogonalised, and only the
overlapping elements are applied: the Distributed Muon of Moonlight (§2.3), exact up to the reduction order of the
gradients. A `FlatPartition` describes one group's layout; it is built from the engine's bookkeeping by
`k2core.train.zero` and knows nothing of DeepSpeed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class FlatPartition:
    """This rank's slice [rank * size, (rank + 1) * size) of a group's flat buffer; parameter i (of `shapes[i]`)
    occupies [offsets[i], offsets[i] + numel) of the whole buffer, every rank's slices concatenated in rank order."""

    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    size: int
    rank: int
    world: int
    process_group: Any = None

    def __post_init__(self) -> None:
        if len(self.shapes) != len(self.offsets):
            raise ValueError(f"{len(self.shapes)} shapes but {len(self.offsets)} offsets")
        end = max((o + s.numel() for s, o in zip(self.shapes, self.offsets)), default=0)
        if end > self.size * self.world:
            raise ValueError(f"parameters end at element {end}, past the {self.world} x {self.size} flat buffer")
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside a world of {self.world}")

    @property
    def start(self) -> int:
        """First element of the whole buffer held by this rank."""
        return self.rank * self.size

    def gather(self, local: Tensor) -> Tensor:
        """Every rank's `local` slice, concatenated into the whole flat buffer (identity for one rank)."""
        if local.numel() != self.size:
            raise ValueError(f"local slice has {local.numel()} elements, the partition {self.size}")
        if self.world == 1:
            return local
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local.contiguous(), group=self.process_group)
        return torch.cat(parts)

    def local_pieces(self) -> Iterator[tuple[int, slice, slice]]:
        """(parameter index, its flattened elements held here, where they sit in the local slice) per overlap."""
        for index, (shape, offset) in enumerate(zip(self.shapes, self.offsets)):
            low = max(offset, self.start)
            high = min(offset + shape.numel(), self.start + self.size)
            if low < high:
                yield index, slice(low - offset, high - offset), slice(low - self.start, high - self.start)

    def whole(self, flat: Tensor, index: int) -> Tensor:
        """Parameter `index` viewed in its own shape inside the whole flat buffer `flat`."""
        offset, shape = self.offsets[index], self.shapes[index]
        return flat[offset:offset + shape.numel()].view(shape)
