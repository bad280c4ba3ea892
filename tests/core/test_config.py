from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import pytest

from metalab.core.config import (
    at_least,
    build_config,
    config_to_dict,
    fraction,
    non_negative,
    nonempty,
    positive,
)
from metalab.core.errors import ConfigError, MetalabError


@dataclass
class Inner:
    width: int
    scale: float = 1.0


@dataclass
class Config:
    learning_rate: float
    steps: int
    method: Literal["pes", "es", "tbptt"] = "pes"
    inner: Inner = field(default_factory=lambda: Inner(width=4))
    widths: list[int] = field(default_factory=list)
    shape: tuple[int, ...] = (1,)
    pair: tuple[int, str] = (0, "a")
    note: Optional[str] = None  # noqa: UP045 - the typing.Optional spelling is what we test
    limit: int | None = None
    verbose: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    anything: Any = None
    level: Literal[0, 1] = 0
    counter: int = field(default=0, init=False)


def build(**values):
    return build_config(Config, {"learning_rate": 0.1, "steps": 10, **values})


def test_minimal_config_uses_defaults():
    config = build()
    assert config == Config(learning_rate=0.1, steps=10)
    assert config.inner == Inner(width=4)
    assert config.method == "pes"


def test_full_config_builds_every_field():
    config = build(
        method="es",
        inner={"width": 8, "scale": 2},
        widths=[1, 2, 3],
        shape=[4, 5],
        pair=[3, "x"],
        note="hi",
        limit=5,
        verbose=True,
        extra={"a": 1},
        anything=[1, "b"],
        level=1,
    )
    assert config.method == "es"
    assert config.inner == Inner(width=8, scale=2.0)
    assert isinstance(config.inner.scale, float)
    assert config.widths == [1, 2, 3]
    assert config.shape == (4, 5)
    assert config.pair == (3, "x")
    assert (config.note, config.limit, config.verbose) == ("hi", 5, True)
    assert config.extra == {"a": 1}
    assert config.anything == [1, "b"]
    assert config.level == 1


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError) as info:
        build(learning_rat=0.2)
    message = str(info.value)
    assert "unknown key params.learning_rat" in message
    assert "; did you mean learning_rate" in message  # the closest name comes first


def test_unknown_key_without_a_close_one_lists_valid_keys():
    with pytest.raises(
        ConfigError, match=r"unknown key params\.zzz; valid keys: learning_rate, steps"
    ):
        build(zzz=1)


def test_init_false_fields_are_not_settable():
    with pytest.raises(ConfigError, match=r"unknown key params\.counter"):
        build(counter=3)


def test_missing_key():
    with pytest.raises(ConfigError, match=r"missing key params\.steps"):
        build_config(Config, {"learning_rate": 0.1})


def test_where_names_the_table():
    with pytest.raises(ConfigError, match=r"missing key quick\.learning_rate"):
        build_config(Config, {"steps": 1}, where="quick")


def test_int_is_accepted_for_float():
    config = build_config(Config, {"learning_rate": 1, "steps": 10})
    assert config.learning_rate == 1.0
    assert isinstance(config.learning_rate, float)


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"steps": True}, r"params\.steps must be int, got bool True"),
        ({"steps": 1.5}, r"params\.steps must be int, got float 1\.5"),
        ({"steps": "10"}, r"params\.steps must be int, got str '10'"),
        ({"learning_rate": True}, r"params\.learning_rate must be float, got bool"),
        ({"learning_rate": "0.1"}, r"params\.learning_rate must be float"),
        ({"verbose": 1}, r"params\.verbose must be bool, got int 1"),
        ({"note": 3}, r"params\.note must be"),
        ({"limit": "5"}, r"params\.limit must be"),
        ({"limit": 2.0}, r"params\.limit must be"),
        ({"extra": [1]}, r"params\.extra must be dict"),
    ],
)
def test_wrong_scalar_types(values, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build(**values)


def test_literal():
    assert build(method="tbptt").method == "tbptt"
    with pytest.raises(ConfigError) as info:
        build(method="pess")
    assert "params.method must be one of 'pes', 'es', 'tbptt', got 'pess'" in str(info.value)


@pytest.mark.parametrize("value", [True, False, 1.0, "1"])
def test_literal_does_not_confuse_bools_floats_and_strings_with_ints(value):
    with pytest.raises(ConfigError, match=r"params\.level must be one of 0, 1"):
        build(level=value)


def test_nested_dataclass():
    assert build(inner={"width": 3}).inner == Inner(width=3, scale=1.0)
    with pytest.raises(ConfigError, match=r"missing key params\.inner\.width"):
        build(inner={"scale": 2.0})
    with pytest.raises(
        ConfigError, match=r"unknown key params\.inner\.widht; did you mean width\?"
    ):
        build(inner={"widht": 3})
    with pytest.raises(ConfigError, match=r"params\.inner\.width must be int, got bool"):
        build(inner={"width": False})
    with pytest.raises(ConfigError, match=r"params\.inner must be Inner, got int 3"):
        build(inner=3)


def test_list_of_int():
    assert build(widths=[]).widths == []
    assert build(widths=(4, 8)).widths == [4, 8]
    with pytest.raises(ConfigError, match=r"params\.widths\[1\] must be int, got str 'b'"):
        build(widths=[1, "b"])
    with pytest.raises(ConfigError, match=r"params\.widths\[0\] must be int, got bool"):
        build(widths=[True])
    with pytest.raises(ConfigError, match=r"params\.widths must be list"):
        build(widths=5)
    with pytest.raises(ConfigError, match=r"params\.widths must be list"):
        build(widths="12")


def test_tuples():
    assert build(shape=[]).shape == ()
    assert build(shape=[1, 2, 3]).shape == (1, 2, 3)
    with pytest.raises(ConfigError, match=r"params\.shape\[2\] must be int"):
        build(shape=[1, 2, 3.5])
    with pytest.raises(ConfigError, match=r"params\.pair\[1\] must be str, got int 2"):
        build(pair=[1, 2])
    with pytest.raises(ConfigError, match=r"params\.pair must have 2 items, got 3"):
        build(pair=[1, "a", "b"])


def test_optional():
    assert build(note=None).note is None
    assert build(note="x").note == "x"
    assert build(limit=None).limit is None
    assert build(limit=7).limit == 7


def test_errors_are_metalab_errors():
    with pytest.raises(MetalabError):
        build(bogus=1)


def test_not_a_dataclass():
    with pytest.raises(TypeError, match="not a dataclass"):
        build_config(dict, {})


def test_config_to_dict_round_trips():
    config = build(inner={"width": 2}, widths=[1], note="n")
    plain = config_to_dict(config)
    assert plain["inner"] == {"width": 2, "scale": 1.0}
    assert plain["widths"] == [1]
    plain.pop("counter")
    assert build_config(Config, plain) == config


@dataclass
class Bounded:
    steps: int = at_least(1, 10)
    lr: float = positive(0.1)
    momentum: float = fraction(0.9)
    noise: float = non_negative(0.0)
    widths: list[int] = nonempty(lambda: [8], ge=1)
    clip: float | None = None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"steps": 0}, r"params\.steps must be >= 1, got 0"),
        ({"lr": 0}, r"params\.lr must be > 0, got 0"),
        ({"momentum": 1.5}, r"params\.momentum must be <= 1, got 1.5"),
        ({"noise": -0.01}, r"params\.noise must be >= 0, got -0.01"),
        ({"widths": []}, r"params\.widths must not be empty"),
        ({"widths": [8, 0]}, r"params\.widths\[1\] must be >= 1, got 0"),
        ({"lr": float("inf")}, r"params\.lr must be a finite number, got inf"),
        ({"momentum": float("nan")}, r"params\.momentum must be a finite number"),
        ({"clip": float("nan")}, r"params\.clip must be a finite number, got nan"),
    ],
)
def test_bounds_and_finiteness_are_checked(values, message):
    with pytest.raises(ConfigError, match=message):
        build_config(Bounded, values)


def test_values_on_the_bounds_are_accepted():
    config = build_config(
        Bounded, {"steps": 1, "momentum": 1, "noise": 0, "widths": [1], "clip": 2}
    )
    assert (config.steps, config.momentum, config.noise, config.widths) == (1, 1.0, 0.0, [1])
    assert build_config(Bounded, {}).widths == [8]
