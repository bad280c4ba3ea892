import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.nas.space import (
    Cell,
    canonical_key,
    live_edges,
    make_space,
    space_names,
    space_resolver,
)

NB201_CELL = (
    "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|"
)


@pytest.mark.parametrize(
    ("name", "cells", "distinct"),
    [("skip-conv3", 64, 64), ("nb201-4op", 4096, 1948), ("nb201", 15625, 8765)],
)
def test_distinct_cell_counts_match_the_paper_notes(name, cells, distinct):
    space = make_space(name)
    assert space.num_cells == cells
    assert len(space.distinct_cells()) == distinct


def test_every_registered_space_builds_and_parses_a_cell():
    assert (
        set(space_names())
        == {cls.name for cls in space_resolver}
        == {
            "nb201",
            "nb201-4op",
            "skip-conv3",
            "darts",
        }
    )
    for name in space_names():
        space = make_space(name)
        choices = [len(space.ops) - 1] * len(space.edges)
        alive = None
        if space.keep_inputs is not None:  # keep the first two in-edges of each node
            alive = [i < 2 for (i, _) in space.edges]
        cell = space.cell_from_choices(choices, alive)
        assert space.parse(cell.to_string()) == cell


def test_cell_string_round_trip_and_nb201_layout():
    space = make_space("nb201")
    cell = space.parse(NB201_CELL)
    assert cell.to_string() == NB201_CELL
    assert cell.nodes[2] == (("nor_conv_1x1", 0), ("avg_pool_3x3", 1), ("nor_conv_3x3", 2))
    assert space.edges == [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("|conv~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|", UnknownNameError),
        ("nor_conv_3x3~0", ConfigError),
        ("|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|", ConfigError),
        ("|none~0|+|none~0|none~1|", ConfigError),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", ConfigError),
        ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", ConfigError),
    ],
)
def test_bad_cell_strings_are_config_errors(text, error):
    with pytest.raises(error):
        make_space("nb201").parse(text)


def test_unknown_space_suggests_a_name():
    with pytest.raises(UnknownNameError, match="nb201"):
        make_space("nb210")


def test_darts_cells_keep_two_inputs_per_node():
    space = make_space("darts")
    with pytest.raises(ConfigError, match="needs 2 inputs"):
        space.parse("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|a~0|b~1|+|c~0|d~1|")
    with pytest.raises(ConfigError, match="too large"):
        next(space.all_cells())


OPS4 = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
space4 = make_space("nb201-4op")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(OPS4), min_size=6, max_size=6), st.sampled_from(OPS4))
def test_edges_out_of_a_zero_node_do_not_matter(ops, other):
    ops = list(ops)
    ops[0] = "none"  # node 1 has a single in-edge: node 1 is zero
    a = space4.cell_from_choices([OPS4.index(o) for o in ops])
    ops[2] = other  # edge 1 -> 2 starts at the zero node
    b = space4.cell_from_choices([OPS4.index(o) for o in ops])
    assert canonical_key(a, space4.topology) == canonical_key(b, space4.topology)
    assert (1, 2) not in live_edges(b, space4.topology)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(OPS4), st.sampled_from(OPS4), st.sampled_from(OPS4))
def test_sums_commute_when_two_nodes_compute_the_same_thing(op_a, op_b, op03):
    # node 1 = conv3(x0), node 2 = conv3(x0) (edge 1->2 none): nodes 1 and 2 are equivalent,
    # so the ops on edges 1->3 and 2->3 may be swapped.
    def cell(e13, e23):
        text = f"|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|{op03}~0|{e13}~1|{e23}~2|"
        return space4.parse(text)

    assert space4.canonical(cell(op_a, op_b)) == space4.canonical(cell(op_b, op_a))


def test_different_functions_get_different_keys():
    a = space4.parse("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_1x1~2|")
    b = space4.parse("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|nor_conv_1x1~1|none~2|")
    assert space4.canonical(a) != space4.canonical(b)
    zero = space4.cell_from_choices([0] * 6)
    assert space4.canonical(zero) == "0"


def test_malformed_cell_from_string():
    with pytest.raises(ConfigError):
        Cell.from_string("|skip_connect~x|")
