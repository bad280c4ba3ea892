"""The learned-optimizer weights file: round trip, and one-line errors for bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from metalab.core.errors import ConfigError
from metalab.lopt import weights as weights_module
from metalab.lopt.arch_hierarchical import HierarchicalArch
from metalab.lopt.weights import FORMAT, load_weights, make_provenance, save_weights


def _theta(dim: int) -> torch.Tensor:
    return torch.randn(dim, generator=torch.Generator().manual_seed(0))


def test_round_trip(tmp_path: Path):
    arch = HierarchicalArch(lstm=8, context=2)
    theta = _theta(arch.theta_dim)
    prov = make_provenance(
        command="metalab lopt meta-train --steps 3", steps=3, estimator="pes", tasks=["a", "b"]
    )
    path = save_weights(
        tmp_path / "sub" / "w.pt",
        theta,
        arch="hierarchical",
        options={"lstm": 8, "context": 2},
        provenance=prov,
    )
    loaded = load_weights(path)
    assert torch.equal(loaded.theta, theta) and loaded.theta.dtype == torch.float32
    assert loaded.arch == "hierarchical" and loaded.options == {"lstm": 8, "context": 2}
    assert loaded.provenance["steps"] == 3 and loaded.provenance["tasks"] == ["a", "b"]
    assert loaded.provenance["date"].startswith("20")
    assert loaded.build_arch().theta_dim == arch.theta_dim
    assert not list(path.parent.glob("*.tmp"))


def test_missing_file_and_missing_default(tmp_path: Path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        load_weights(tmp_path / "nope.pt")
    monkeypatch.setattr(weights_module, "DEFAULT_WEIGHTS_PATH", tmp_path / "default.pt")
    with pytest.raises(ConfigError, match=r"default learned optimizer .* meta-train"):
        load_weights()


def test_corrupt_files_are_one_line_errors(tmp_path: Path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a zip or pickle" * 10)
    good = save_weights(tmp_path / "good.pt", _theta(1762), arch="mlp")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    for path in (garbage, truncated):
        with pytest.raises(ConfigError, match="corrupt or not a weights file") as err:
            load_weights(path)
        assert "\n" not in str(err.value)


class _Bomb:
    """Unpickling this would create a file (a stand-in for running arbitrary code)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_objects_that_are_not_plain_data_are_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    for name, payload in [
        (
            "in_dict.pt",
            {"format": FORMAT, "theta": _theta(1762), "arch": "mlp", "x": _Bomb(marker)},
        ),
        ("bare.pt", _Bomb(marker)),
    ]:
        torch.save(payload, tmp_path / name)
        with pytest.raises(ConfigError, match="may not hold"):
            load_weights(tmp_path / name)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Bomb(marker)))
    with pytest.raises(ConfigError):
        load_weights(raw)
    assert not marker.exists()


def test_foreign_and_mismatched_files(tmp_path: Path):
    torch.save({"theta": _theta(5)}, tmp_path / "foreign.pt")
    with pytest.raises(ConfigError, match="not a metalab learned-optimizer weights file"):
        load_weights(tmp_path / "foreign.pt")
    base = {"format": FORMAT, "version": 1, "options": {}, "provenance": {}}
    torch.save({**base, "theta": _theta(100), "arch": "mlp"}, tmp_path / "small.pt")
    with pytest.raises(ConfigError, match=r"has 100 weights but .*'mlp'.* needs 1762"):
        load_weights(tmp_path / "small.pt")
    torch.save({**base, "theta": _theta(1762), "arch": "mpl"}, tmp_path / "typo.pt")
    with pytest.raises(ConfigError, match="did you mean mlp"):
        load_weights(tmp_path / "typo.pt")
    torch.save({**base, "arch": "mlp"}, tmp_path / "no_theta.pt")
    with pytest.raises(ConfigError, match="damaged"):
        load_weights(tmp_path / "no_theta.pt")


def test_save_checks_its_inputs(tmp_path: Path):
    with pytest.raises(ConfigError, match="needs 1762"):
        save_weights(tmp_path / "w.pt", _theta(10), arch="mlp")
    with pytest.raises(ConfigError, match="not a plain value"):
        save_weights(tmp_path / "w.pt", _theta(1762), arch="mlp", provenance={"f": object()})
    with pytest.raises(ConfigError, match="non-finite"):
        save_weights(tmp_path / "w.pt", torch.full((1762,), float("nan")), arch="mlp")
    assert not (tmp_path / "w.pt").exists()


def test_text_file_and_bad_options_are_one_line_errors(tmp_path):
    from metalab.lopt.arch_registry import make_arch

    text = tmp_path / "notes.txt"
    text.write_text("hello world")
    with pytest.raises(ConfigError, match="corrupt or not a weights file"):
        load_weights(text)
    for name, options in [("mlp", {"hidden": "abc"}), ("hierarchical", {"context": 0})]:
        with pytest.raises(ConfigError, match="must be an integer >= 1"):
            make_arch(name, **options)
