"""``Segments``: built from sizes or from shapes alike, and refusing layouts that do not add up."""

from __future__ import annotations

import pytest
import torch

from metalab.core.errors import ConfigError
from metalab.lopt import Segments
from metalab.lopt.mlp_lopt import Segments as ReExported

CPU = torch.device("cpu")


def test_sizes_alone_give_the_same_segments_as_from_shapes():
    shapes = [(2, 3), (4,), (1, 1, 5)]
    built = Segments.from_shapes(shapes, CPU)
    for derived in (
        Segments(sizes=torch.tensor([6, 4, 5])),
        Segments(built.index, built.sizes),  # index given, bounds derived
        Segments(sizes=torch.tensor([6, 4, 5], dtype=torch.int32)),
    ):
        assert derived == built and hash(derived) == hash(built)
        assert derived.bounds == built.bounds == ((0, 6), (6, 10), (10, 15))
        assert torch.equal(derived.index, built.index)
    assert ReExported is Segments
    assert Segments(sizes=torch.tensor([6, 4])) != built
    features = torch.randn(3, 15)
    torch.testing.assert_close(Segments(sizes=built.sizes).rms(features), built.rms(features))


def test_empty_and_zero_sized_layouts():
    empty = Segments(sizes=torch.zeros(0, dtype=torch.long))
    assert empty.bounds == () and empty.index.shape == (0,)
    assert Segments(sizes=torch.tensor([0, 2])) == Segments.from_shapes([(0,), (2,)], CPU)


def test_from_shapes_reads_no_device_value():
    """On the meta device nothing can be read back, so from_shapes proves it reads nothing."""
    meta = Segments.from_shapes([(2,), (3,)], torch.device("meta"))
    assert meta.bounds == ((0, 2), (2, 5)) and meta.index.is_meta
    with pytest.raises(ConfigError, match="meta device; pass bounds= or use from_shapes"):
        Segments(sizes=meta.sizes)
    assert Segments(sizes=meta.sizes, bounds=meta.bounds).bounds == meta.bounds


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "sizes must be a 1-D integer tensor, got NoneType"),
        ({"sizes": [2, 3]}, "sizes must be a 1-D integer tensor, got list"),
        ({"sizes": torch.tensor([2.0, 3.0])}, r"got a tensor of shape \(2,\) and dtype"),
        ({"sizes": torch.tensor([[2, 3]])}, r"got a tensor of shape \(1, 2\)"),
        ({"sizes": torch.tensor([2, -1])}, r"sizes must be >= 0, got \[2, -1\]"),
        ({"sizes": torch.tensor([2, 3]), "bounds": ((0, 2),)}, "2 sizes but 1 bounds"),
        ({"sizes": torch.tensor([2, 3]), "bounds": ((0, 2), (3, 5))}, "contiguous"),
        ({"sizes": torch.tensor([2, 3]), "bounds": ((0, 2), 5)}, "contiguous"),
        (
            {"sizes": torch.tensor([2, 3]), "bounds": ((0, 2), (2, 4))},
            r"bounds \[\(0, 2\), \(2, 4\)\] hold \[2, 2\] entries but sizes are \[2, 3\]",
        ),
        ({"sizes": torch.tensor([2, 3]), "index": torch.zeros(4, dtype=torch.long)}, "5 entries"),
        ({"sizes": torch.tensor([2, 3]), "index": torch.zeros(5)}, "integer tensor"),
    ],
)
def test_bad_layouts_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        Segments(**kwargs)
    assert "\n" not in str(err.value)


def test_from_shapes_refuses_negative_sizes():
    with pytest.raises(ConfigError, match=r"shapes must have sizes >= 0, got \[\(2,\), \(-1,\)\]"):
        Segments.from_shapes([(2,), (-1,)], CPU)
