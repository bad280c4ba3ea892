"""Filtered ranking of the BetaE protocol against a hand-computed example."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metalab.core.errors import ConfigError
from metalab.kg import filtered_ranks, metrics_by_structure, query_metrics, rank_answers


def test_hand_computed_filtered_ranks_and_metrics() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.7, 0.5, 0.1], [0.2, 0.8, 0.3, 0.9, 0.4]])
    easy, hard = [[0], []], [[2, 3], [0]]
    ranks = rank_answers(scores, easy, hard)
    # query 0: entity 2 (0.7) — 0 (easy) and 3 (hard) are filtered; 1 (0.5) and 4 (0.1) are lower
    #          entity 3 (0.5) — ties with entity 1: realistic rank 1 + 0 + 1/2 = 1.5
    # query 1: entity 0 (0.2) — all four others score higher: rank 5
    assert ranks.ranks.tolist() == [1.0, 1.5, 5.0]
    assert ranks.query.tolist() == [0, 0, 1] and ranks.entity.tolist() == [2, 3, 0]
    per_query = query_metrics(ranks)
    assert per_query["mrr"].tolist() == pytest.approx([(1 + 1 / 1.5) / 2, 0.2])
    assert per_query["hits@1"].tolist() == [0.5, 0.0]
    assert per_query["hits@3"].tolist() == [1.0, 0.0]
    assert per_query["hits@10"].tolist() == [1.0, 1.0]
    table = metrics_by_structure(["2p", "2p"], per_query)
    assert table["2p"]["mrr"] == pytest.approx(((1 + 1 / 1.5) / 2 + 0.2) / 2)
    assert table["2p"]["hits@1"] == 0.25 and table["2p"]["queries"] == 2


def test_unfiltered_entities_count_and_the_target_never_counts_against_itself() -> None:
    scores = torch.tensor([[0.5, 0.5, 0.5]])
    no_filter = torch.zeros(1, 3, dtype=torch.bool)
    # two other entities tie with the target: rank 1 + 0 + 2/2 = 2
    assert filtered_ranks(scores, torch.tensor([0]), torch.tensor([1]), no_filter).tolist() == [2.0]


def test_queries_without_hard_answers_are_skipped_per_structure() -> None:
    scores = torch.tensor([[0.1, 0.9], [0.9, 0.1]])
    per_query = query_metrics(rank_answers(scores, [[], []], [[1], []]))
    assert per_query["mrr"][0] == 1.0 and torch.isnan(per_query["mrr"][1])
    table = metrics_by_structure(["1p", "1p"], per_query)
    assert table["1p"]["mrr"] == 1.0 and table["1p"]["queries"] == 1


def test_mismatched_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        rank_answers(torch.zeros(2, 3), [[0]], [[1]])
    with pytest.raises(ConfigError, match="answer ids"):
        rank_answers(torch.zeros(1, 3), [[5]], [[1]])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 12))
def test_sorting_and_comparing_count_the_same_ranks(seed: int, per_row: int) -> None:
    from metalab.kg.evaluation import _count_by_comparison, _count_by_search

    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (6, 9), generator=gen).float()  # many ties
    filt = torch.rand(6, 9, generator=gen) < 0.3
    rows = torch.randint(0, 6, (6 * per_row,), generator=gen)
    targets = torch.randint(0, 9, (6 * per_row,), generator=gen)
    masked = scores.masked_fill(filt, float("-inf"))
    own = scores[rows, targets]
    for step in (1, 4, 100):
        a = _count_by_comparison(masked, rows, own, step)
        b = _count_by_search(masked, rows, own, step)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ranks = filtered_ranks(scores, rows, targets, filt)
    for i in range(len(rows)):  # the definition, one target at a time
        row, value, keep = scores[rows[i]], own[i], ~filt[rows[i]]
        keep[targets[i]] = False
        expected = 1 + int(((row > value) & keep).sum()) + 0.5 * int(((row == value) & keep).sum())
        assert ranks[i].item() == expected
