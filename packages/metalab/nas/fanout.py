"""A supernet cell's forward pass, one node's outgoing edges at a time.

Every edge leaving a node reads the same tensor, so their candidate operations can share
work: ``skip_connect`` and the parameter-free pools run once per node instead of once per
edge, and the ReLU-Conv-BN operations (NAS-Bench-201's ``nor_conv_*``) of all outgoing
edges become one ReLU, one convolution over their concatenated kernels and one batch norm
over the concatenated channels. This is exact: a supernet's batch norms (no affine
parameters, batch statistics) normalize each channel on its own, so normalizing the
concatenation normalizes each edge's output, and every node still sums its terms in the
per-edge order. Only float rounding inside the larger convolution can differ. Parameters
stay per edge and per operation, as DARTS defines them; what shrinks is the number of
small kernels and autograd nodes, which dominate a DARTS step on small images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FanoutPlan", "fusable"]


def fusable(op: nn.Module) -> bool:
    """True for ReLU → dense bias-free Conv2d → BatchNorm without affine or running stats."""
    if not isinstance(op, nn.Sequential) or len(op) != 3:
        return False
    relu, conv, bn = op
    return (
        isinstance(relu, nn.ReLU)
        and isinstance(conv, nn.Conv2d)
        and conv.bias is None
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(bn, nn.BatchNorm2d)
        and not bn.affine
        and not bn.track_running_stats
    )


@dataclass(frozen=True)
class _Group:
    """One operation on several edges leaving a node: ``(edge, op index)`` per use."""

    uses: list[tuple[int, int]]
    ops: list[nn.Module]
    kind: str  # "shared" (parameter-free), "fused" (ReLU-Conv-BN), "each"


class FanoutPlan:
    """How a cell's forward groups the operations on each node's outgoing edges.

    Built once per cell (the operations and their structure do not change; parameter
    values may, e.g. under ``functional_call``, since the plan holds modules, not tensors).
    """

    def __init__(
        self,
        edges: Sequence[tuple[int, int]],
        edge_ops: Sequence[Sequence[str]],
        modules: nn.ModuleList,
        n_inputs: int,
        n_nodes: int,
    ) -> None:
        self.edges = list(edges)
        self.n_inputs = n_inputs
        self.groups: list[list[_Group]] = []
        for node in range(n_inputs + n_nodes):
            uses: dict[str, list[tuple[int, int]]] = {}
            for edge, (source, _) in enumerate(edges):
                for op, name in enumerate(edge_ops[edge] if source == node else []):
                    if name != "none":  # contributes w · 0
                        uses.setdefault(name, []).append((edge, op))
            self.groups.append(
                [_group(pairs, [modules[e][o] for e, o in pairs]) for pairs in uses.values()]  # type: ignore[index]
            )

    def states(self, inputs: Sequence[Tensor], weights: Tensor) -> list[Tensor]:
        """Every node state: ``inputs``, then the intermediate nodes.

        Node ``j`` is ``Σ_{e into j} Σ_o weights[e, o] · op_{e,o}(state of e's source)``
        (DARTS Eq. 2), summed in edge then operation order as the per-edge forward sums it;
        a node that no edge reaches is zero.
        """
        states = list(inputs)
        totals: dict[int, Tensor] = {}
        for node, groups in enumerate(self.groups):
            if node >= self.n_inputs:
                states.append(totals[node] if node in totals else torch.zeros_like(states[0]))
            terms: dict[tuple[int, int], Tensor] = {}
            for group in groups:
                terms.update(zip(group.uses, _weighted(group, states[node], weights), strict=True))
            for edge, op in sorted(terms):
                target, term = self.edges[edge][1], terms[(edge, op)]
                totals[target] = totals[target] + term if target in totals else term
        return states


def _group(uses: list[tuple[int, int]], ops: list[nn.Module]) -> _Group:
    first = ops[0]
    if not any(True for _ in first.parameters()) and not any(True for _ in first.buffers()):
        return _Group(uses, ops, "shared")  # skip_connect, pools: one function on each edge
    if len(ops) > 1 and all(fusable(op) for op in ops) and len({_shape(op) for op in ops}) == 1:
        return _Group(uses, ops, "fused")
    return _Group(uses, ops, "each")


def _shape(op: nn.Module) -> tuple:
    conv, norm = op[1], op[2]  # type: ignore[index]
    return (conv.in_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, norm.eps)


def _weighted(group: _Group, x: Tensor, weights: Tensor) -> list[Tensor]:
    """``weights[e, o] · op(x)`` for each use of the group's operation."""
    w = [weights[edge, op] for edge, op in group.uses]
    if group.kind == "shared":
        y = group.ops[0](x)
        return [wi * y for wi in w]
    if group.kind == "each":
        return [wi * op(x) for wi, op in zip(w, group.ops, strict=True)]
    convs: list[nn.Conv2d] = [op[1] for op in group.ops]  # type: ignore[index]
    first, norm = convs[0], group.ops[0][2]  # type: ignore[index]
    kernel = torch.cat([conv.weight for conv in convs])
    y = F.conv2d(F.relu(x), kernel, None, first.stride, first.padding, first.dilation)
    y = F.batch_norm(y, None, None, training=True, eps=norm.eps)
    return [wi * part for wi, part in zip(w, y.split(first.out_channels, dim=1), strict=True)]
