import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metalab.cli.main import cli
from metalab.core.errors import ConfigError, MetalabError
from metalab.nas.bench import TrainRecipe, build_table, merge_tables, train_cell
from metalab.nas.space import make_space
from metalab.nas.table import TABLE_FORMAT, BenchTable, load_table, shipped_table_path

CONV = "nor_conv_3x3"
ALL_CONV = f"|{CONV}~0|+|{CONV}~0|{CONV}~1|+|{CONV}~0|{CONV}~1|{CONV}~2|"
SKIP = "skip_connect"
ALL_SKIP = f"|{SKIP}~0|+|{SKIP}~0|{SKIP}~1|+|{SKIP}~0|{SKIP}~1|{SKIP}~2|"


@pytest.fixture(scope="module")
def shipped():
    return load_table("skip-conv3")


def test_shipped_skip_conv3_table_is_complete_with_two_seeds(shipped):
    raw = json.loads(shipped_table_path("skip-conv3").read_text())
    assert raw["format"] == TABLE_FORMAT and raw["complete"] and raw["num_distinct"] == 64
    assert len(raw["seeds"]) >= 2 and "metalab nas bench build" in raw["command"]
    assert len(shipped.seed_accuracies) == 64 and shipped.num_ranked == 64
    assert all(len(v) == len(raw["seeds"]) for v in shipped.seed_accuracies.values())
    assert shipped.rank(shipped.best_cell()) == 1
    # the ground truth is bimodal: convolution-rich cells near the top, all-skip near the bottom
    assert shipped.accuracy(ALL_CONV) > 0.95 > 0.6 > shipped.accuracy(ALL_SKIP)
    assert shipped.rank(ALL_SKIP) > 56
    ranks = [shipped.rank(c) for c in shipped.seed_accuracies]
    accs = [shipped.accuracy(c) for c in shipped.seed_accuracies]
    assert np.all(np.diff(np.asarray(accs)[np.argsort(ranks)]) <= 1e-12)  # ranks sort accuracy


def test_shipped_nb201_4op_table_covers_every_cell_with_two_seeds():
    raw = json.loads(shipped_table_path("nb201-4op").read_text())
    table = load_table("nb201-4op")
    assert raw["complete"] and raw["num_cells"] == 4096 and raw["num_distinct"] == 1948
    assert len(table.seed_accuracies) == 1948 and table.num_ranked == 4096
    assert all(len(v) == 2 for v in table.seed_accuracies.values())
    space = make_space("nb201-4op")
    none = space.ops.index("none")
    # no path from input to output (edges into node 3 all `none`): chance-level accuracy
    dead = space.cell_from_choices([0, 0, 0, none, none, none])
    assert table.accuracy(dead) < 0.2
    assert table.accuracy(ALL_CONV) > 0.95 and table.rank(table.best_cell()) == 1
    assert 0.95 < float(np.median([table.accuracy(c) for c in table.seed_accuracies])) < 0.99


def test_flat_export_format_and_lookup_by_equivalence(tmp_path):
    space4 = "nb201-4op"
    a = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
    b = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|nor_conv_1x1~2|"
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"space": space4, "accuracies": {a: [0.9, 0.8]}}))
    table = BenchTable.load(path)
    assert table.accuracy(b) == pytest.approx(0.85)  # b is a but with nodes 1, 2 swapped
    with pytest.raises(ConfigError, match="not in the table"):
        table.accuracy(make_space(space4).cell_from_choices([3] * 6))


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("x.pth", b"\x80\x04", "pickled"),
        ("x.json", b"{not json", "not valid JSON"),
        ("x.json", b'{"space": "skip-conv3"}', "unknown table format"),
        ("x.json", b'{"space": "nope", "accuracies": {}}', "unknown search space"),
    ],
)
def test_bad_table_files_are_one_line_errors(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MetalabError, match=match):
        BenchTable.load(path)


def test_build_is_resumable_and_trains_each_distinct_cell_once(tmp_path):
    space = make_space("nb201-4op")
    recipe = TrainRecipe(epochs=1, channels=2, n_cells=1)
    a = space.parse("|nor_conv_1x1~0|+|nor_conv_1x1~0|none~1|+|none~0|skip_connect~1|none~2|")
    a_twin = space.parse("|nor_conv_1x1~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|skip_connect~2|")
    b = space.cell_from_choices([0] * 6)
    out = tmp_path / "t.json"
    first = build_table(space, out, recipe=recipe, seeds=[0, 1], cells=[a, a_twin])
    assert len(first.seed_accuracies) == 1 and not first.complete
    rep = space.distinct_cells()[space.canonical(a)].to_string()
    seconds_a = json.loads(out.read_text())["results"][rep]["seconds"]
    again = build_table(space, out, recipe=recipe, seeds=[0, 1], cells=[a, b])
    assert len(again.seed_accuracies) == 2
    before = json.loads(out.read_text())
    assert rep in before["results"] and len(before["results"]) == 2
    assert before["results"][rep]["seconds"] == seconds_a  # not trained again
    assert again.accuracy(b) == pytest.approx(
        train_cell(space, b, recipe=recipe, seed=0).test_acc / 2
        + train_cell(space, b, recipe=recipe, seed=1).test_acc / 2
    )
    differs = r"another recipe \(channels 2 vs 8, n_cells 1 vs 2, epochs 1 vs 2\);"
    with pytest.raises(ConfigError, match=differs):
        build_table(space, out, recipe=TrainRecipe(epochs=2), seeds=[0, 1], cells=[a])
    with pytest.raises(ConfigError, match=">= 2"):
        build_table(space, tmp_path / "u.json", recipe=recipe, seeds=[0], cells=[a])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"epochs": 0}, "recipe.epochs must be >= 1, got 0"),
        ({"channels": 0}, "recipe.channels must be >= 1"),
        ({"lr": float("nan")}, "recipe.lr must be a finite number > 0"),
        ({"momentum": 1.0}, r"recipe.momentum must be in \[0, 1\)"),
        ({"weight_decay": -1e-4}, "recipe.weight_decay must be >= 0"),
    ],
)
def test_a_recipe_that_cannot_train_is_refused(change, match):
    with pytest.raises(ConfigError, match=match):
        TrainRecipe(**change)


def test_train_cell_is_deterministic_per_seed():
    space = make_space("skip-conv3")
    cell = space.parse(ALL_SKIP)
    recipe = TrainRecipe(epochs=2, channels=2, n_cells=1)
    r0 = train_cell(space, cell, recipe=recipe, seed=0)
    assert r0.test_acc == train_cell(space, cell, recipe=recipe, seed=0).test_acc
    assert 0.0 <= r0.test_acc <= 1.0


def test_cli_bench_show_and_lookup():
    result = CliRunner().invoke(cli, ["nas", "bench", "show", "skip-conv3", "--cell", ALL_CONV])
    assert result.exit_code == 0, result.output
    assert "rank" in result.output and "/64" in result.output
    result = CliRunner().invoke(cli, ["nas", "bench", "show", "--json"])
    assert json.loads(result.output)["cells_ranked"] == 4096  # the default: nb201-4op


def test_cli_search_magnitude_reports_ground_truth():
    args = ["nas", "search", "--space", "skip-conv3", "--selection", "magnitude", "--epochs"]
    args += ["1", "--channels", "2", "--cells", "1", "--device", "cpu", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert 1 <= out["gt_rank"] <= 64 and out["gt_accuracy"] == pytest.approx(
        load_table("skip-conv3").accuracy(out["cell"])
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["nas", "search", "--space", "nb210"], "unknown search space 'nb210'"),
        (["nas", "search", "--selection", "magnitude", "--fixed-alpha"], "fixed-alpha"),
        (["nas", "search", "--selection", "gradient"], "unknown selection rule"),
        (["nas", "search", "--device", "cuda:7"], "device"),
        (["nas", "bench", "show", "nb201"], "no ground-truth table ships"),
        (["nas", "bench", "build", "--seeds", "0"], ">= 2"),
        (["nas", "bench", "build", "--seeds", "a,b"], "comma-separated"),
    ],
)
def test_cli_errors_are_one_line(args, match):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and match in result.output
    assert "Traceback" not in result.output


def test_merge_combines_partial_builds_and_refuses_mismatches(tmp_path):
    space = make_space("nb201-4op")
    recipe = TrainRecipe(epochs=1, channels=2, n_cells=1)
    a = space.cell_from_choices([0, 0, 0, 2, 0, 0])
    b = space.cell_from_choices([0] * 6)
    build_table(space, tmp_path / "a.json", recipe=recipe, seeds=[0, 1], cells=[a])
    build_table(space, tmp_path / "b.json", recipe=recipe, seeds=[0, 1], cells=[b])
    merged = merge_tables([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "m.json")
    assert len(merged.seed_accuracies) == 2 and not merged.complete
    assert merged.accuracy(b) == BenchTable.load(tmp_path / "b.json").accuracy(b)
    other = TrainRecipe(epochs=2, channels=2, n_cells=1)
    build_table(space, tmp_path / "c.json", recipe=other, seeds=[0, 1], cells=[b])
    with pytest.raises(ConfigError, match="another recipe"):
        merge_tables([tmp_path / "a.json", tmp_path / "c.json"], tmp_path / "n.json")
    with pytest.raises(ConfigError, match="shard"):
        build_table(space, tmp_path / "d.json", recipe=recipe, shard=(2, 2))


def test_cli_rejects_a_bad_shard():
    result = CliRunner().invoke(cli, ["nas", "bench", "build", "--shard", "x"])
    assert result.exit_code == 2 and "K/N" in result.output


def test_workers_build_the_table_one_process_builds(tmp_path):
    space = make_space("skip-conv3")
    recipe = TrainRecipe(epochs=1, channels=2, n_cells=1)
    cells = [space.cell_from_choices([i % 2, 1, 0, 1, i // 2 % 2, 0]) for i in range(4)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: the same float rounding
    try:
        alone = build_table(space, tmp_path / "a.json", recipe=recipe, seeds=[0, 1], cells=cells)
    finally:
        torch.set_num_threads(threads)
    side_by_side = build_table(
        space, tmp_path / "b.json", recipe=recipe, seeds=[0, 1], cells=cells, workers=2
    )
    assert side_by_side.seed_accuracies == alone.seed_accuracies
    assert len(alone.seed_accuracies) == 4
    files = [json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json")]
    assert list(files[1]["results"]) == list(files[0]["results"])  # the space's cell order
    stopped = build_table(
        space, tmp_path / "c.json", recipe=recipe, seeds=[0, 1], workers=2, max_seconds=0.0
    )
    assert stopped.seed_accuracies == {} and not stopped.complete


def test_cli_rejects_negative_workers():
    result = CliRunner().invoke(cli, ["nas", "bench", "build", "--workers", "-1"])
    assert result.exit_code == 2 and "--workers must be >= 0" in result.output


def test_per_seed_accuracies_follow_the_build_seeds_whatever_order_they_were_stored_in():
    raw = json.loads(shipped_table_path("skip-conv3").read_text())
    cell, entry = next(iter(raw["results"].items()))
    entry["test_acc"] = {"1": 0.25, "0": 0.75}  # seed 1 finished first in another worker
    table = BenchTable.from_dict(raw)
    assert raw["seeds"][:2] == [0, 1] and table.seed_accuracies[cell] == [0.75, 0.25]


def test_a_table_whose_seeds_field_is_not_a_list_still_loads():
    raw = json.loads(shipped_table_path("skip-conv3").read_text())
    raw["seeds"] = 2
    assert len(BenchTable.from_dict(raw).seed_accuracies) == 64


def test_cli_a_dead_worker_is_one_line(monkeypatch):
    from metalab.core.parallel import WorkerDied
    from metalab.nas import bench

    def dies(*args, **kwargs):
        raise WorkerDied("a worker process ended without a result while item(s) ['x'] ran")

    monkeypatch.setattr(bench, "build_table", dies)
    result = CliRunner().invoke(cli, ["nas", "bench", "build", "--space", "skip-conv3"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: a worker process ended without a result")
