import os
import subprocess
import sys
import textwrap

import matplotlib
import numpy as np
import pytest

from metalab.core.figures import plot_curves, plot_heatmap, plot_loglog_fit
from metalab.core.stats import fit_loglog

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1000  # more than a header: something was drawn


def test_plot_curves_writes_png(tmp_path):
    x = np.arange(1, 20)
    target = tmp_path / "nested" / "figs" / "curves.png"
    returned = plot_curves(
        target,
        {"sgd": (x, 1.0 / x), "adam": (x.tolist(), (0.5 / x).tolist())},
        xlabel="step",
        ylabel="loss",
        title="losses",
        logx=True,
        logy=True,
        hlines={"optimum": 0.01},
    )
    assert returned == target
    _assert_png(target)


def test_plot_curves_with_no_curves(tmp_path):
    target = plot_curves(tmp_path / "empty.png", {}, xlabel="x", ylabel="y")
    _assert_png(target)


def test_plot_loglog_fit_returns_the_fit(tmp_path):
    x = np.geomspace(1, 100, 10)
    y = 3.0 * x**-1.0
    target = tmp_path / "fit.png"
    fit = plot_loglog_fit(
        target, x, y, xlabel="n", ylabel="error", reference_slope=-0.5, title="rate"
    )
    assert fit == fit_loglog(x, y)
    assert fit.slope == pytest.approx(-1.0)
    _assert_png(target)


def test_plot_loglog_fit_uses_a_given_fit(tmp_path):
    x = np.geomspace(1, 100, 10)
    given = fit_loglog(x, x**2.0)
    fit = plot_loglog_fit(tmp_path / "given.png", x, x**2.0, xlabel="x", ylabel="y", fit=given)
    assert fit is given
    _assert_png(tmp_path / "given.png")


def test_plot_loglog_fit_rejects_bad_data_before_drawing(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        plot_loglog_fit(tmp_path / "bad.png", [1, 2, 3], [1, 0, 2], xlabel="x", ylabel="y")
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("log_scale", [False, True])
def test_plot_heatmap_writes_png(tmp_path, log_scale):
    x = np.linspace(-1, 1, 7)
    y = np.linspace(-2, 2, 5)
    values = np.abs(np.add.outer(y, x))  # zeros included: log scale must clip, not fail
    target = tmp_path / f"heat-{log_scale}.png"
    returned = plot_heatmap(
        target,
        values,
        x=x,
        y=y,
        xlabel="a",
        ylabel="b",
        title="landscape",
        log_scale=log_scale,
        trajectories={"gd": [[-1, -2], [0, 0], [0.5, 1]], "pes": np.zeros((3, 2))},
    )
    assert returned == target
    _assert_png(target)


def test_figures_leave_the_backend_alone(tmp_path):
    before = matplotlib.get_backend()
    plot_curves(tmp_path / "a.png", {"c": ([1, 2], [3, 4])}, xlabel="x", ylabel="y")
    assert matplotlib.get_backend() == before


def test_figures_need_no_display_and_no_pyplot(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from metalab.core.figures import plot_curves, plot_heatmap, plot_loglog_fit
        out = sys.argv[1]
        plot_curves(out + "/c.png", {"c": ([1, 2, 3], [3, 2, 1])}, xlabel="x", ylabel="y")
        plot_loglog_fit(out + "/f.png", [1, 2, 4], [1, 4, 16], xlabel="x", ylabel="y")
        plot_heatmap(out + "/h.png", [[1, 2], [3, 4]], x=[0, 1], y=[0, 1], xlabel="x", ylabel="y")
        assert "matplotlib.pyplot" not in sys.modules, "figures imported pyplot"
        """
    )
    env = {
        k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND"}
    }
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ("c.png", "f.png", "h.png"):
        _assert_png(tmp_path / name)


def test_curves_stay_distinct_past_the_colour_cycle_and_never_grey(tmp_path, monkeypatch):
    import metalab.core.figures as figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or path)
    curves = {f"c{i}": ([0, 1], [i, i + 1]) for i in range(36)}
    figures.plot_curves(tmp_path / "many.png", curves, xlabel="x", ylabel="y", hlines={"ref": 1})
    lines = drawn[0].axes[0].get_lines()[:36]
    styles = {(line.get_color(), line.get_linestyle()) for line in lines}
    assert len(styles) == 36
    assert "C7" not in {line.get_color() for line in lines}
