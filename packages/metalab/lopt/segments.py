"""The tensor layout of a flat parameter vector: which entries belong to which tensor.

Learned optimizers normalize features per tensor (Metz et al. 2019/2020), so every arch
step gets a :class:`Segments` next to its flat ``[P, N]`` parameters. The per-tensor loops
slice with host integers (``bounds``), so a step never reads a device value to find them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from metalab.core.errors import ConfigError

__all__ = ["Segments"]


@dataclass(frozen=True, init=False, eq=False)
class Segments:
    """Which entries of a flat parameter vector belong to which tensor.

    ``Segments(sizes=torch.tensor([6, 3]))`` derives ``index`` and ``bounds``;
    :meth:`from_shapes` builds the same from tensor shapes without reading any device
    value. Two segments are equal when they lay out the same entries on the same device.

    Attributes:
        index: ``[N]`` tensor id of each entry (on ``sizes``' device).
        sizes: ``[S]`` number of entries per tensor.
        bounds: ``(start, stop)`` of each tensor's entries, host integers (the per-tensor
            loops slice with them, so no step reads a device value to find them).
    """

    index: Tensor
    sizes: Tensor
    bounds: tuple[tuple[int, int], ...] = field(repr=False)

    def __init__(
        self,
        index: Tensor | None = None,
        sizes: Tensor | None = None,
        bounds: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        """Check the layout; derive ``bounds`` from ``sizes`` and ``index`` from both.

        Deriving ``bounds`` reads ``sizes`` back to the host once (a device-to-host copy
        when ``sizes`` is on a GPU); pass ``bounds`` or use :meth:`from_shapes` to avoid it.
        Given ``bounds`` are checked against CPU ``sizes``; on a GPU only their number is.

        Raises:
            ConfigError: ``sizes`` missing or not a 1-D integer tensor of counts ``>= 0``,
                or ``index``/``bounds`` that do not describe ``sizes``' layout (the
                bounds' lengths are compared with CPU ``sizes`` only, see above).
        """
        if not isinstance(sizes, Tensor) or sizes.dim() != 1 or not _is_integer(sizes):
            got = (
                f"a tensor of shape {tuple(sizes.shape)} and dtype {sizes.dtype}"
                if isinstance(sizes, Tensor)
                else type(sizes).__name__
            )
            raise ConfigError(f"Segments sizes must be a 1-D integer tensor, got {got}")
        spans = _derived_bounds(sizes) if bounds is None else _checked_bounds(bounds, sizes)
        total = spans[-1][1] if spans else 0
        if index is None:
            ids = torch.arange(sizes.shape[0], device=sizes.device)
            index = torch.repeat_interleave(ids, sizes, output_size=total)
        elif (
            not isinstance(index, Tensor)
            or index.shape != (total,)
            or not _is_integer(index)
            or index.device != sizes.device
        ):
            raise ConfigError(
                f"Segments index must be a 1-D integer tensor of the {total} entries on "
                f"{sizes.device}, got {_describe(index)}"
            )
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "bounds", spans)

    @classmethod
    def from_shapes(cls, shapes: list[tuple[int, ...]], device: torch.device) -> Segments:
        """Segments of the flat concatenation of tensors with these shapes.

        Sizes and bounds are computed on the host from the shapes, so no device value is
        read back; the layout is consistent by construction, so ``__init__``'s checks are
        skipped. Building ``sizes`` on a GPU is still a host-to-device copy, which PyTorch
        makes blocking (the host waits for the current stream), so callers that step
        often should reuse their segments rather than rebuild them every step.
        """
        counts = [math.prod(s) for s in shapes]
        if any(n < 0 for n in counts):
            raise ConfigError(f"Segments shapes must have sizes >= 0, got {list(shapes)}")
        sizes = torch.tensor(counts, device=device, dtype=torch.int64)
        spans = _spans(counts)
        total = spans[-1][1] if spans else 0
        index = torch.repeat_interleave(
            torch.arange(len(counts), device=device), sizes, output_size=total
        )
        built = cls.__new__(cls)  # consistent by construction: skip __init__'s checks
        object.__setattr__(built, "index", index)
        object.__setattr__(built, "sizes", sizes)
        object.__setattr__(built, "bounds", spans)
        return built

    def __eq__(self, other: object) -> bool:
        """Same bounds, device and tensor ids (a device comparison, so it may synchronize)."""
        if not isinstance(other, Segments):
            return NotImplemented
        return (
            self.bounds == other.bounds
            and self.index.device == other.index.device
            and torch.equal(self.index, other.index)
            and torch.equal(self.sizes, other.sizes)
        )

    def __hash__(self) -> int:
        """Hash of the host layout (equal segments have equal bounds and device)."""
        return hash((self.bounds, str(self.index.device)))

    def mean_square(self, features: Tensor, dim: int = -1) -> Tensor:
        """Per-tensor mean of ``features²`` along ``dim`` (length N): that dim becomes ``S``."""
        return torch.cat(
            [
                torch.linalg.vector_norm(features.narrow(dim, a, b - a), dim=dim, keepdim=True)
                .square()
                .div(b - a)
                for a, b in self.bounds
            ],
            dim=dim,
        )

    def rms(self, features: Tensor, dim: int = -1) -> Tensor:
        """Per-tensor RMS of ``features`` along ``dim`` (length N): that dim becomes ``S``."""
        return self.mean_square(features, dim).add(1e-12).sqrt()

    def normalize(self, features: Tensor, dim: int = -1) -> Tensor:
        """``features`` divided by their per-tensor RMS along ``dim`` (differentiable)."""
        inv = torch.rsqrt(self.mean_square(features, dim) + 1e-12)
        return features * inv.repeat_interleave(
            self.sizes, dim=dim, output_size=features.shape[dim]
        )

    def normalize_(self, features: Tensor, dim: int = -1) -> Tensor:
        """In-place :meth:`normalize` (one reduction and one scaling pass per tensor, no copy).

        Not for tensors that autograd must differentiate through.
        """
        for a, b in self.bounds:
            piece = features.narrow(dim, a, b - a)
            norm = torch.linalg.vector_norm(piece, dim=dim, keepdim=True)
            piece.mul_(norm.square_().div_(b - a).add_(1e-12).rsqrt_())
        return features


def _is_integer(value: Tensor) -> bool:
    return not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)}, dtype {value.dtype} on {value.device}"
    return type(value).__name__


def _derived_bounds(sizes: Tensor) -> tuple[tuple[int, int], ...]:
    """``(start, stop)`` per tensor from ``sizes`` (read back to the host once)."""
    if sizes.is_meta:
        raise ConfigError(
            "Segments cannot read sizes on the meta device; pass bounds= or use from_shapes"
        )
    counts = [int(n) for n in sizes.tolist()]
    if any(n < 0 for n in counts):
        raise ConfigError(f"Segments sizes must be >= 0, got {counts}")
    return _spans(counts)


def _spans(counts: list[int]) -> tuple[tuple[int, int], ...]:
    """``(start, stop)`` of consecutive blocks of ``counts`` entries."""
    stops = list(itertools.accumulate(counts))
    return tuple(zip([0, *stops][: len(stops)], stops, strict=True))


def _checked_bounds(bounds: Sequence[object], sizes: Tensor) -> tuple[tuple[int, int], ...]:
    """``bounds`` as a tuple if they are ``len(sizes)`` contiguous spans starting at 0.

    Their lengths are compared with ``sizes`` when ``sizes`` is on the CPU (a wrong span
    would otherwise surface as a raw error, or a wrong layout, deep inside a step); on
    other devices only their number is (comparing values would read ``sizes`` back from
    the device, which ``bounds`` exist to avoid).
    """
    spans: list[tuple[int, int]] = []
    for span in bounds:
        pair = tuple(span) if isinstance(span, Sequence) else ()
        stop = spans[-1][1] if spans else 0
        ok = len(pair) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
        if not ok or pair[0] != stop or pair[1] < pair[0]:
            raise ConfigError(
                "Segments bounds must be contiguous (start, stop) integer pairs from 0, "
                f"got {list(bounds)!r}"
            )
        spans.append((int(pair[0]), int(pair[1])))
    if len(spans) != sizes.shape[0]:
        raise ConfigError(
            f"Segments has {sizes.shape[0]} sizes but {len(spans)} bounds; they must match"
        )
    if sizes.device.type == "cpu":
        counts = [int(n) for n in sizes.tolist()]
        lengths = [b - a for a, b in spans]
        if counts != lengths:
            raise ConfigError(
                f"Segments bounds {spans} hold {lengths} entries but sizes are {counts}; "
                "they must match"
            )
    return tuple(spans)
