"""Cell networks: the DARTS supernet (mixed operations) and discrete networks.

Macro skeleton (the digits recipe piloted in ``papers/nas.md``): a 3×3 stem conv with
``channels`` channels + BN, ``n_cells`` stride-1 cells, then BN-ReLU-global-average-pool-
linear. Every edge of a supernet cell is a mixed operation ``ō(x) = Σ_o w_o · o(x)``
(DARTS Eq. 2) whose weights ``w`` come from :meth:`Supernet.mixing_weights`: the per-edge
softmax of α (shared by all cells, as in DARTS), one-hot on edges already discretized and
zero on edges removed by topology selection. ``forward(x, weights=...)`` takes the weights
as an argument, so DARTS-PT can evaluate many perturbed weight sets in one ``vmap``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.core.errors import ConfigError
from metalab.nas.fanout import FanoutPlan
from metalab.nas.ops import make_op
from metalab.nas.space import Cell, SearchSpace, Topology, live_edges

__all__ = ["CellNetwork", "Supernet", "discrete_network"]


class _CellModule(nn.Module):
    """One cell: ``edge_ops[e]`` lists the candidate operations on edge ``e`` (maybe none)."""

    def __init__(
        self,
        topology: Topology,
        edge_ops: Sequence[Sequence[str]],
        channels: int,
        in_channels: Sequence[int],
        *,
        affine: bool,
        track: bool,
    ) -> None:
        super().__init__()
        self.topology = topology
        self.edge_ops = [list(ops) for ops in edge_ops]
        self.preprocess = nn.ModuleList(
            nn.Identity()
            if c == channels and topology.n_inputs == 1
            else nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(c, channels, 1, bias=False),
                nn.BatchNorm2d(channels, affine=affine, track_running_stats=track),
            )
            for c in in_channels
        )
        self.edges = nn.ModuleList(
            nn.ModuleList(
                nn.Identity() if op == "none" else make_op(op, channels, affine=affine, track=track)
                for op in ops
            )
            for ops in self.edge_ops
        )
        self.fanout = FanoutPlan(
            topology.edges, self.edge_ops, self.edges, topology.n_inputs, topology.n_nodes
        )

    def forward(
        self, inputs: Sequence[Tensor], weights: Tensor | None, per_edge: bool = False
    ) -> Tensor:
        states = [pre(x) for pre, x in zip(self.preprocess, inputs, strict=True)]
        if weights is None or per_edge:
            return self._output(self.per_edge_states(states, weights))
        # a supernet: each node's outgoing edges share work (same result, fewer kernels)
        return self._output(self.fanout.states(states, weights))

    def per_edge_states(self, inputs: list[Tensor], weights: Tensor | None) -> list[Tensor]:
        """All node states, each edge's operations applied one by one (DARTS Eq. 2).

        ``weights`` ``[E, O]`` mixes the operations (``None``: a discrete cell, sum them).
        A supernet's forward computes the same by :class:`FanoutPlan`.
        """
        states = list(inputs)
        for j in self.topology.intermediate:
            total: Tensor | None = None
            for e in self.topology.in_edges(j):
                source = states[self.topology.edges[e][0]]
                ops = cast(nn.ModuleList, self.edges[e])
                for o, (name, op) in enumerate(zip(self.edge_ops[e], ops, strict=True)):
                    if name == "none":  # contributes w · 0
                        continue
                    term = op(source) if weights is None else weights[e, o] * op(source)
                    total = term if total is None else total + term
            states.append(torch.zeros_like(states[0]) if total is None else total)
        return states

    def _output(self, states: list[Tensor]) -> Tensor:
        if self.topology.concat_output:
            return torch.cat(states[self.topology.n_inputs :], dim=1)
        return states[-1]


class CellNetwork(nn.Module):
    """Stem → ``n_cells`` cells sharing one edge-op layout → BN-ReLU-pool-linear head."""

    def __init__(
        self,
        topology: Topology,
        edge_ops: Sequence[Sequence[str]],
        *,
        channels: int,
        n_cells: int,
        num_classes: int,
        in_channels: int = 1,
        affine: bool = True,
        track: bool = True,
    ) -> None:
        super().__init__()
        if channels < 1 or n_cells < 1:
            raise ConfigError(f"need channels >= 1 and n_cells >= 1, got {channels}, {n_cells}")
        self.topology = topology
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels, affine=affine, track_running_stats=track),
        )
        width = channels * (topology.n_nodes if topology.concat_output else 1)
        cells = []
        prev = [channels] * topology.n_inputs
        for _ in range(n_cells):
            cells.append(
                _CellModule(topology, edge_ops, channels, prev, affine=affine, track=track)
            )
            prev = ([*prev, width])[-topology.n_inputs :]
        self.cells = nn.ModuleList(cells)
        self.head_bn = nn.BatchNorm2d(width, affine=affine, track_running_stats=track)
        self.classifier = nn.Linear(width, num_classes)

    def forward(
        self, x: Tensor, weights: Tensor | None = None, *, per_edge: bool = False
    ) -> Tensor:
        """Logits for images ``x`` (``[B, C, H, W]``); ``weights`` mixes a supernet's edges.

        ``per_edge=True`` applies every edge's operations one by one instead of sharing
        work across a node's outgoing edges: the same function, the slower reference.
        """
        s = self.stem(x)
        states = [s] * self.topology.n_inputs
        for cell in self.cells:
            states = [*states, cell(states, weights, per_edge)][-self.topology.n_inputs :]
        out = F.relu(self.head_bn(states[-1]))
        return self.classifier(out.mean(dim=(2, 3)))


def discrete_network(
    space: SearchSpace, cell: Cell, *, channels: int, n_cells: int, num_classes: int
) -> CellNetwork:
    """The network of one discrete cell (``none``, dead and dropped edges are absent)."""
    space.validate(cell)
    chosen = live_edges(cell, space.topology)
    edge_ops = [[chosen[edge]] if edge in chosen else [] for edge in space.edges]
    return CellNetwork(
        space.topology, edge_ops, channels=channels, n_cells=n_cells, num_classes=num_classes
    )


class Supernet(CellNetwork):
    """DARTS supernet of ``space``: every edge mixes every candidate op by softmax(α).

    Batch norms are ``affine=False`` without running statistics (DARTS search models), so
    the supernet holds no buffers and always normalizes with batch statistics.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        channels: int,
        n_cells: int,
        num_classes: int,
        generator: torch.Generator,
        alpha_init_scale: float = 1e-3,
    ) -> None:
        edge_ops = [list(space.ops)] * len(space.edges)
        super().__init__(
            space.topology,
            edge_ops,
            channels=channels,
            n_cells=n_cells,
            num_classes=num_classes,
            affine=False,
            track=False,
        )
        self.space = space
        shape = (len(space.edges), len(space.ops))
        self.alpha = nn.Parameter(alpha_init_scale * torch.randn(shape, generator=generator))
        #: edge → op index for edges already discretized (one-hot mixing weights).
        self.decided: dict[int, int] = {}
        #: edges removed by topology selection (zero mixing weights).
        self.removed: set[int] = set()

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters (α)."""
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        """The network weights (everything but α)."""
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def mixing_weights(self) -> Tensor:
        """Per-edge mixing weights ``[E, O]``: softmax(α), one-hot when decided, 0 when removed."""
        weights = F.softmax(self.alpha, dim=-1)
        if self.decided or self.removed:
            override = torch.ones_like(weights[:, :1])
            fixed = torch.zeros_like(weights)
            for edge, op in self.decided.items():
                override[edge] = 0.0
                fixed[edge, op] = 1.0
            for edge in self.removed:
                override[edge] = 0.0
                fixed[edge] = 0.0
            weights = weights * override + fixed
        return weights

    def forward(
        self, x: Tensor, weights: Tensor | None = None, *, per_edge: bool = False
    ) -> Tensor:
        """Logits with ``weights`` (default: :meth:`mixing_weights`)."""
        mixing = self.mixing_weights() if weights is None else weights
        return super().forward(x, mixing, per_edge=per_edge)

    def selection_state(self) -> dict[str, list[int]]:
        """The discretization decisions, JSON-able (for checkpoints)."""
        return {
            "decided_edges": sorted(self.decided),
            "decided_ops": [self.decided[e] for e in sorted(self.decided)],
            "removed": sorted(self.removed),
        }

    def load_selection_state(self, state: dict[str, list[int]]) -> None:
        """Restore :meth:`selection_state`."""
        self.decided = dict(zip(state["decided_edges"], state["decided_ops"], strict=True))
        self.removed = set(state["removed"])
