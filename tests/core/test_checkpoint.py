import json
import random
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from metalab.core import checkpoint
from metalab.core.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
)
from metalab.core.errors import MetalabError


def _touch_marker(path):
    """Stands in for os.system: the side effect a malicious checkpoint would run on load."""
    Path(path).write_text("code ran")
    return 0


class Payload:
    """An object whose unpickling calls :func:`_touch_marker` (the classic __reduce__ exploit)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch_marker, (self.marker,))


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------- atomic writes
def test_atomic_write_bytes_writes_and_overwrites(tmp_path):
    target = tmp_path / "sub" / "dir" / "file.bin"
    atomic_write_bytes(target, b"one")
    assert target.read_bytes() == b"one"
    atomic_write_bytes(str(target), b"two, longer")
    assert target.read_bytes() == b"two, longer"
    assert _leftovers(target.parent) == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_failed_replace_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(checkpoint.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    save_checkpoint(target, {"step": 1})

    def interrupted_fsync(fd):
        raise KeyboardInterrupt  # a BaseException, as when the user hits Ctrl-C mid-write

    monkeypatch.setattr(checkpoint.os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(target) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_atomic_write_json(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"t": torch.tensor([1, 2]), "p": tmp_path, "s": torch.tensor(0.5)})
    assert json.loads(target.read_text()) == {"t": [1, 2], "p": str(tmp_path), "s": 0.5}
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text())["t"] == [1, 2]
    assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------- round trips
def test_round_trip_nested_state(tmp_path):
    state = {
        "step": 7,
        "lr": 0.5,
        "name": "pes",
        "flag": True,
        "none": None,
        "weights": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
        "ints": torch.arange(5, dtype=torch.int64),
        "nested": {
            "a": [torch.ones(2), {"b": torch.zeros(1, dtype=torch.float64)}],
            "c": [1, 2.5, "x"],
        },
        "pair": (torch.tensor(1.0), 3),
        "ordered": OrderedDict(z=1, y=2),
    }
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert set(loaded) == set(state)
    assert loaded["step"] == 7
    assert loaded["lr"] == 0.5
    assert loaded["name"] == "pes"
    assert loaded["flag"] is True
    assert loaded["none"] is None
    assert torch.equal(loaded["weights"], state["weights"])
    assert loaded["ints"].dtype == torch.int64
    assert torch.equal(loaded["nested"]["a"][0], torch.ones(2))
    assert loaded["nested"]["a"][1]["b"].dtype == torch.float64
    assert loaded["nested"]["c"] == [1, 2.5, "x"]
    assert isinstance(loaded["pair"], tuple)
    assert torch.equal(loaded["pair"][0], torch.tensor(1.0))
    assert loaded["ordered"] == {"z": 1, "y": 2}
    assert _leftovers(tmp_path) == []


def test_saved_tensors_are_detached_and_on_cpu(tmp_path, monkeypatch):
    seen = {}
    real_save = torch.save

    def spying_save(obj, buffer):
        seen.update(obj)
        real_save(obj, buffer)

    monkeypatch.setattr(checkpoint.torch, "save", spying_save)
    weight = torch.ones(3, requires_grad=True)
    save_checkpoint(tmp_path / "c.pt", {"w": weight * 2, "nested": [{"v": weight}]})
    assert seen["w"].device.type == "cpu"
    assert not seen["w"].requires_grad
    assert not seen["nested"][0]["v"].requires_grad
    monkeypatch.undo()
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["w"].device.type == "cpu"
    assert torch.equal(loaded["w"], torch.full((3,), 2.0))


def test_to_cpu_moves_tensors(monkeypatch):
    moved = []

    class FakeCudaTensor(torch.Tensor):
        def cpu(self, *args, **kwargs):
            moved.append(True)
            return torch.Tensor.cpu(self, *args, **kwargs).as_subclass(torch.Tensor)

    tensor = torch.ones(2).as_subclass(FakeCudaTensor)
    result = checkpoint._to_cpu({"a": [tensor], "b": (tensor,)})
    assert len(moved) == 2
    assert type(result["a"][0]) is torch.Tensor
    assert isinstance(result["b"], tuple)


# ----------------------------------------------------------------- refusing bad files
def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.ones(1), "evil": Payload(marker)}, path)

    with pytest.raises(MetalabError, match="cannot load checkpoint") as refused:
        load_checkpoint(path)
    assert "never unpickled" in str(refused.value) and "weights_only" not in str(refused.value)
    assert not marker.exists()

    # Control: the payload is live, so the refusal above is what kept the marker away.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_corrupt_file_is_a_metalab_error(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(random.Random(0).randbytes(256))  # fixed bytes: no flaky message
    with pytest.raises(MetalabError, match=r"cannot load checkpoint .*: not a torch checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(MetalabError, match="is a folder, not a file"):
        load_checkpoint(tmp_path)

    good = tmp_path / "good.pt"
    save_checkpoint(good, {"w": torch.randn(100)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(MetalabError, match=r"truncated\.pt"):
        load_checkpoint(truncated)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(MetalabError):
        load_checkpoint(empty)


def test_missing_file_is_a_metalab_error(tmp_path):
    with pytest.raises(MetalabError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_non_dict_checkpoint_is_a_metalab_error(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.ones(1)], path)
    with pytest.raises(MetalabError, match="does not hold a dict"):
        load_checkpoint(path)
