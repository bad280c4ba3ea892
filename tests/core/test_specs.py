import pytest

from metalab.core.errors import ConfigError, ExperimentFileError, UnknownNameError
from metalab.core.specs import (
    Check,
    apply_overrides,
    discover_specs,
    find_spec,
    load_spec,
    parse_assignment,
    resolve_params,
)
from tests.support.specs import TOY, write_toy


def test_load_spec_reads_every_field(tmp_path):
    spec = load_spec(write_toy(tmp_path))
    assert spec.name == "toy-gd"
    assert spec.seed == 7
    assert spec.params["steps"] == 20
    assert spec.quick == {"steps": 30}
    assert spec.checks == (
        Check("x_final", "approx", 3.0, 0.01),
        Check("loss_final", "lt", 1e-3, 0.0),
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace('claim = "gradient descent reaches the target"\n', ""),
            "missing field 'claim'",
        ),
        (lambda t: t.replace('op = "lt"', 'op = "about"'), "field 'op' is 'about'"),
        (lambda t: t.replace("tol = {tol}\n", ""), "missing field 'tol'"),
        (lambda t: "colour = 3\n" + t, "unknown field 'colour'"),
        (
            lambda t: t.replace("[quick]\nsteps = 30", "[quick]\nstepz = 30"),
            "[quick] unknown parameter 'stepz'",
        ),
        (
            lambda t: t.replace("[quick]\nsteps = 30", '[quick]\nsteps = "many"'),
            "parameter 'steps' is int",
        ),
        (
            lambda t: t.replace(
                'runner = "tests.support.toy_runner:{runner}"', 'runner = "nocolon"'
            ),
            "runner",
        ),
        (
            lambda t: t + "\n[[checks]]\nmetric = 'x'\nop = 'lt'\nvalue = 'high'\n",
            "field 'value' must be a number",
        ),
        (lambda t: t.replace("name = ", "name == "), "invalid TOML"),
    ],
)
def test_malformed_files_name_file_and_field(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit(TOY).format(name="bad", runner="gradient_descent", tol=0.01))
    with pytest.raises(ExperimentFileError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_theory_spec_requires_its_derivation(tmp_path):
    path = write_toy(tmp_path, "rate-check")
    with pytest.raises(ExperimentFileError, match=r"rate-check\.md does not exist"):
        load_spec(path, kind="theory")
    (tmp_path / "rate-check.md").write_text("# derivation\n")
    assert load_spec(path, kind="theory").derivation == tmp_path / "rate-check.md"


def test_discovery_recurses_and_rejects_duplicate_names(tmp_path, monkeypatch):
    write_toy(tmp_path / "a", "first")
    write_toy(tmp_path / "b" / "deep", "second")
    monkeypatch.setenv("METALAB_EXPERIMENTS", str(tmp_path))
    assert list(discover_specs()) == ["first", "second"]
    write_toy(tmp_path / "c", "first")
    with pytest.raises(ExperimentFileError, match="already used by"):
        discover_specs()


def test_unknown_name_suggests_closest(toy_experiments):
    with pytest.raises(UnknownNameError, match="did you mean toy-gd"):
        find_spec("toy-dg")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lr=1e-3", ("lr", 1e-3)),
        ("steps = 5", ("steps", 5)),
        ("flag=true", ("flag", True)),
        ('method="pes"', ("method", "pes")),
        ("method=pes", ("method", "pes")),
        ("sizes=[1, 2]", ("sizes", [1, 2])),
        ("a.b=2", ("a.b", 2)),
    ],
)
def test_parse_assignment_reads_toml_values(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=3", "x=[1,", "x="])
def test_parse_assignment_rejects_malformed(text):
    with pytest.raises(ConfigError):
        parse_assignment(text)


def test_overrides_must_exist_and_keep_their_type():
    params = {"lr": 0.1, "steps": 10, "flag": False, "name": "a", "inner": {"k": 1}}
    assert apply_overrides(params, {"lr": 1, "inner.k": 3}) == {
        **params,
        "lr": 1.0,
        "inner": {"k": 3},
    }
    assert params["inner"] == {"k": 1}, "overrides must not mutate the spec's params"
    with pytest.raises(ConfigError, match="did you mean lr"):
        apply_overrides(params, {"lrr": 0.2})
    with pytest.raises(ConfigError, match=r"did you mean inner\.k"):
        apply_overrides(params, {"inner.kk": 0.2})
    for key, value in [("steps", 1.5), ("flag", 1), ("steps", True), ("name", 3), ("inner", 3)]:
        with pytest.raises(ConfigError, match=f"parameter '{key}'"):
            apply_overrides(params, {key: value})


def test_resolve_params_layers_quick_smoke_and_set(tmp_path):
    spec = load_spec(write_toy(tmp_path))
    assert resolve_params(spec)["steps"] == 20
    assert resolve_params(spec, quick=True)["steps"] == 30
    assert resolve_params(spec, smoke=True)["steps"] == 2
    assert resolve_params(spec, quick=True, overrides={"steps": 4})["steps"] == 4


@pytest.mark.parametrize(
    ("check", "measured", "passes"),
    [
        (Check("m", "approx", 1.0, 0.1), 1.05, True),
        (Check("m", "approx", 1.0, 0.1), 1.2, False),
        (Check("m", "lt", 1.0), 1.0, False),
        (Check("m", "le", 1.0), 1.0, True),
        (Check("m", "gt", 1.0), 2, True),
        (Check("m", "ge", 1.0), 0.5, False),
        (Check("m", "ge", 0.0), float("nan"), False),
        (Check("m", "ge", 0.0), None, False),
        (Check("m", "ge", 0.0), "text", False),
    ],
)
def test_check_semantics(check, measured, passes):
    assert check.passes(measured) is passes
