import re

from click.testing import CliRunner

from metalab.lopt.cli import lopt


def test_list_names_everything():
    result = CliRunner().invoke(lopt, ["list"])
    assert result.exit_code == 0
    assert "pes" in result.output and "toy-regression" in result.output


def test_estimate_prints_mean_and_standard_error():
    args = [
        "estimate",
        "--system",
        "linear-quadratic",
        "--estimator",
        "pes",
        "--pairs",
        "10",
        "--sigma",
        "0.1",
        "-K",
        "4",
        "--repeats",
        "5",
        "--windows",
        "3",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(lopt, args)
    assert result.exit_code == 0, result.output
    lines = re.findall(r"dθ\[(\d)\] = +(-?[\d.e+-]+) ± ([\d.e+-]+)", result.output)
    assert [int(i) for i, _, _ in lines] == [0, 1, 2]
    assert all(float(err) > 0 for _, _, err in lines)


def test_estimate_is_reproducible_with_a_seed():
    args = [
        "estimate",
        "--system",
        "toy-regression",
        "--pairs",
        "4",
        "--repeats",
        "2",
        "--windows",
        "1",
        "--seed",
        "3",
    ]
    first, second = CliRunner().invoke(lopt, args), CliRunner().invoke(lopt, args)
    assert first.exit_code == 0 and first.output == second.output


def _root_error(args):
    from metalab.cli.main import cli

    return CliRunner().invoke(cli, ["lopt", *args])


def test_bad_input_is_one_line_and_exit_2():
    for args, message in [
        (["estimate", "--system", "toy-regresion"], "did you mean toy-regression"),
        (["estimate", "--estimator", "pse"], "did you mean pes"),
        (["estimate", "--estimator", "tbptt", "--sigma", "0.1"], "does not take sigma"),
        (["estimate", "--theta", "1,x"], "--theta must be"),
        (["estimate", "--theta", "1,2,3"], "must have 2 values"),
        (["estimate", "--pairs", "0"], "pairs >= 1"),
        (["estimate", "--device", "cuda:7"], ""),
    ]:
        result = _root_error(args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        assert message in result.output, (args, result.output)
