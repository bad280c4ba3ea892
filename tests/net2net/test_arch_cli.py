"""The safe model-file format and ``metalab net2net grow``."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from metalab.cli.main import cli
from metalab.core.checkpoint import save_checkpoint
from metalab.core.errors import ConfigError, MetalabError, UnknownNameError
from metalab.net2net import (
    build_model,
    deepen,
    describe_model,
    load_model,
    mlp,
    parse_widen,
    residual_cnn,
    save_model,
    small_cnn,
    widen,
)
from tests.net2net.conftest import give_statistics


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (mlp(6, [5, 4], 3, norm="layer", dropout=0.1), (6,)),
        (small_cnn(1, [3, 4], 5, image_size=8, hidden=6), (1, 8, 8)),
        (residual_cnn(2, 4, 3, 5, blocks=2), (2, 6, 6)),
    ],
)
def test_models_round_trip_through_the_file_format_grown_or_not(tmp_path, model, shape):
    model = give_statistics(model, shape, seed=0)
    first = next(
        n
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d)) and "stem" not in n
    )
    grown, _ = deepen(model, first)
    for net in (model, grown):
        save_model(tmp_path / "m.pt", net, input_shape=shape)
        loaded, loaded_shape = load_model(tmp_path / "m.pt")
        x = torch.randn(4, *shape)
        assert loaded_shape == list(shape)
        torch.testing.assert_close(loaded.eval()(x), net.eval()(x))
        assert json.loads(json.dumps(describe_model(net))) == describe_model(loaded)


def test_only_whitelisted_layers_are_described_or_built():
    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(MetalabError, match="cannot describe a Custom"):
        describe_model(nn.Sequential(nn.Linear(2, 2), Custom()))
    with pytest.raises(UnknownNameError, match=r"unknown layer type 'os\.system'"):
        build_model({"type": "os.system", "args": {}})
    with pytest.raises(ConfigError, match="cannot build Linear"):
        build_model({"type": "Linear", "args": {"in_features": 2, "bogus": 1}})
    with pytest.raises(ConfigError, match="children"):
        build_model({"type": "Sequential", "children": "nope"})


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(MetalabError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "other.pt", {"weights": torch.ones(2)})
    with pytest.raises(MetalabError, match=r"is not a metalab\.net2net\.model file"):
        load_model(tmp_path / "other.pt")
    torch.save(
        {"model": nn.Linear(2, 2)}, tmp_path / "pickled.pt"
    )  # a pickled module: never loaded
    with pytest.raises(MetalabError, match="cannot load checkpoint"):
        load_model(tmp_path / "pickled.pt")
    save_model(tmp_path / "m.pt", mlp(3, [4], 2), input_shape=(3,))
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["state_dict"]["fc1.weight"] = torch.ones(5, 3)
    save_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(MetalabError, match="weights do not fit"):
        load_model(tmp_path / "bad.pt")


def test_parse_widen():
    assert parse_widen("block1.body.conv1=12") == ("block1.body.conv1", 12)
    for bad in ("fc1", "fc1=", "=3", "fc1=-2", "fc1=x"):
        with pytest.raises(ConfigError, match="LAYER=WIDTH"):
            parse_widen(bad)


def test_cli_grow_prints_the_preservation_error_and_writes_a_loadable_file(tmp_path):
    model = give_statistics(small_cnn(1, [3, 4], 5, image_size=8, hidden=6), (1, 8, 8), seed=1)
    save_model(tmp_path / "m.pt", model, input_shape=(1, 8, 8))
    result = CliRunner().invoke(
        cli,
        [
            "net2net",
            "grow",
            str(tmp_path / "m.pt"),
            "--widen",
            "conv2=9",
            "--widen",
            "fc=10",
            "--deepen-after",
            "conv1",
            "--out",
            str(tmp_path / "g.pt"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "widened conv2 4 -> 9" in result.output and "inserted identity" in result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("preservation error"))
    error32, error64 = (float(part.split()[0]) for part in line.split(": ")[1].split(", "))
    assert error32 < 1e-5 and error64 < 1e-12
    grown, _ = load_model(tmp_path / "g.pt")
    assert grown.get_submodule("conv2").out_channels == 9
    described = CliRunner().invoke(cli, ["net2net", "describe", str(tmp_path / "g.pt")])
    assert "conv2: Conv2d 3 -> 9 channels" in described.output
    assert "act1.1: Conv2d 3 -> 3 channels" in described.output


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--widen", "fc9=4"], "unknown layer 'fc9'"),
        (["--widen", "fc1"], "LAYER=WIDTH"),
        (["--deepen-after", "out"], "before any activation"),
        ([], "nothing to do"),
        (["--widen", "fc1=8", "--noise", "-1"], "noise must be >= 0"),
        (["--widen", "fc1=8", "--device", "cuda:7"], "cuda"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, args, match):
    save_model(tmp_path / "m.pt", mlp(3, [4], 2), input_shape=(3,))
    result = CliRunner().invoke(
        cli, ["net2net", "grow", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o.pt"), *args]
    )
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0


def test_cli_refuses_missing_and_unsafe_files(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pt")
    for path in (tmp_path / "missing.pt", tmp_path / "pickled.pt"):
        result = CliRunner().invoke(
            cli, ["net2net", "grow", str(path), "--widen", "a=3", "--out", str(tmp_path / "o.pt")]
        )
        assert result.exit_code == 2 and result.output.startswith("Error: ")


def test_widen_reports_are_json_serializable():
    _, report = widen(mlp(3, [4], 2), "fc1", 6, generator=torch.Generator())
    json.dumps(report.to_dict())


def test_save_model_names_swapped_arguments(tmp_path):
    with pytest.raises(ConfigError, match=r"order is save_model\(path, model") as info:
        save_model(mlp(3, [4], 2), tmp_path / "m.pt", input_shape=(3,))  # type: ignore[arg-type]
    assert "\n" not in str(info.value) and not (tmp_path / "m.pt").exists()
    with pytest.raises(ConfigError, match=r"needs an nn\.Module as model, got a dict"):
        save_model(tmp_path / "m.pt", {}, input_shape=(3,))  # type: ignore[arg-type]
