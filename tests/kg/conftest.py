"""Fixtures of the kg tests: a hand-made graph whose query answers are enumerated by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

# train ⊂ valid ⊂ test; relations p, q, r (query ids: p=0, p^-1=1, q=2, q^-1=3, r=4, r^-1=5).
# Entities a-g carry the hand-worked example queries; h-m are a gadget in which a 3in query
# (h r ·) ∧ (i r ·) ∧ ¬(j r ·) gains answer m and loses answer l on the test graph.
HAND_TRAIN = [
    ("a", "p", "b"),
    ("b", "p", "c"),
    ("a", "q", "c"),
    ("c", "q", "d"),
    ("e", "p", "b"),
    ("b", "q", "f"),
    ("h", "r", "k"),
    ("h", "r", "l"),
    ("i", "r", "k"),
    ("i", "r", "l"),
    ("i", "r", "m"),
    ("j", "r", "k"),
]
HAND_VALID = [("d", "p", "g")]
HAND_TEST = [
    ("c", "p", "e"),
    ("b", "q", "d"),
    ("e", "q", "g"),
    ("a", "q", "f"),
    ("h", "r", "m"),
    ("j", "r", "l"),
]


def write_graph_folder(folder: Path, suffix: str = ".txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", HAND_TRAIN), ("valid", HAND_VALID), ("test", HAND_TEST)):
        (folder / f"{name}{suffix}").write_text("".join("\t".join(r) + "\n" for r in rows))
    return folder


@pytest.fixture
def hand_folder(tmp_path: Path) -> Path:
    return write_graph_folder(tmp_path / "hand")


@pytest.fixture
def hand_graph(hand_folder: Path):
    from metalab.kg import load_graph

    return load_graph(hand_folder)


@pytest.fixture(scope="session")
def nations():
    from metalab.kg import load_graph

    return load_graph("nations")


@pytest.fixture(scope="session")
def tiny_predictor(nations):
    """A small ComplEx-N3 model on Nations (2 epochs, dim 8): fast, not accurate."""
    import torch

    from metalab.kg import PredictorConfig, train_link_predictor

    config = PredictorConfig(dim=8, epochs=2, batch_size=500)
    return train_link_predictor(
        nations, config, generator=torch.Generator().manual_seed(0), num_threads=1
    )
