import io
import sys

import pytest

from metalab.core.progress import PROGRESS_ENV, progress, progress_enabled

# pytest's output capture swaps sys.stderr between the setup and call phases, so every
# test redirects stderr itself, in its body, instead of in a fixture.


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)


def _redirect(monkeypatch, stream):
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_disabled_when_stderr_is_not_a_tty(monkeypatch):
    pipe = _redirect(monkeypatch, io.StringIO())
    assert progress_enabled() is False
    assert list(progress(range(5), desc="work")) == [0, 1, 2, 3, 4]
    assert pipe.getvalue() == ""


def test_enabled_on_a_terminal(monkeypatch):
    terminal = _redirect(monkeypatch, FakeTerminal())
    assert progress_enabled() is True
    assert list(progress(iter("abc"), desc="letters", total=3)) == ["a", "b", "c"]
    assert "letters" in terminal.getvalue()


def test_env_forces_it_on(monkeypatch):
    pipe = _redirect(monkeypatch, io.StringIO())
    monkeypatch.setenv(PROGRESS_ENV, "1")
    assert progress_enabled() is True
    assert list(progress(range(4), desc="forced")) == [0, 1, 2, 3]
    assert "forced" in pipe.getvalue()


def test_env_forces_it_off(monkeypatch):
    terminal = _redirect(monkeypatch, FakeTerminal())
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert progress_enabled() is False
    assert list(progress(range(3), desc="quiet")) == [0, 1, 2]
    assert terminal.getvalue() == ""


@pytest.mark.parametrize("value", ["", "yes", "true", "2"])
def test_other_env_values_fall_back_to_tty_detection(monkeypatch, value):
    monkeypatch.setenv(PROGRESS_ENV, value)
    _redirect(monkeypatch, io.StringIO())
    assert progress_enabled() is False
    _redirect(monkeypatch, FakeTerminal())
    assert progress_enabled() is True


@pytest.mark.parametrize("forced", ["0", "1"])
def test_yields_every_item_of_a_generator(monkeypatch, forced):
    monkeypatch.setenv(PROGRESS_ENV, forced)
    _redirect(monkeypatch, io.StringIO())

    def items():
        yield from ({"i": i} for i in range(100))

    assert [item["i"] for item in progress(items())] == list(range(100))
