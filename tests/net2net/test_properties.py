"""Function preservation as a property (hypothesis over architectures, widths and inputs).

Teacher and student are compared in float64 in eval mode (BatchNorm uses its running
statistics, which are made non-trivial first): without noise they agree to rounding error;
with Gaussian noise the change is bounded by ||E||_F ||h|| times the Lipschitz constant of
what follows the rewired layer; zero-sum noise is exact again.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from metalab.net2net import deepen, mlp, preservation_error, residual_cnn, small_cnn, widen
from tests.net2net.conftest import give_statistics

PROPS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL = 1e-10


def _inputs(shape: tuple[int, ...], seed: int, n: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn((n, *shape), generator=gen, dtype=torch.float64) * 2


@st.composite
def mlps(draw, norms=(None, "batch", "layer")):
    in_features = draw(st.integers(1, 6))
    hidden = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    norm = draw(st.sampled_from(norms))
    dropout = draw(st.sampled_from([0.0, 0.3]))
    seed = draw(st.integers(0, 2**20))
    torch.manual_seed(seed)
    model = mlp(in_features, hidden, draw(st.integers(1, 4)), norm=norm, dropout=dropout).double()
    return give_statistics(model, (in_features,), seed=seed), (in_features,), hidden, seed


@st.composite
def cnns(draw):
    channels = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    size = draw(st.integers(2 ** len(channels), 8))
    in_channels = draw(st.integers(1, 2))
    hidden = draw(st.sampled_from([0, 3]))
    seed = draw(st.integers(0, 2**20))
    torch.manual_seed(seed)
    model = small_cnn(
        in_channels, channels, 3, image_size=size, batchnorm=draw(st.booleans()), hidden=hidden
    ).double()
    layers = [f"conv{i + 1}" for i in range(len(channels))] + (["fc"] if hidden else [])
    return (
        give_statistics(model, (in_channels, size, size), seed=seed),
        (in_channels, size, size),
        layers,
        seed,
    )


@PROPS
@given(net=mlps(), pick=st.integers(0, 2), extra=st.integers(0, 7), gseed=st.integers(0, 2**20))
def test_widening_an_mlp_preserves_its_function(net, pick, extra, gseed):
    model, shape, hidden, seed = net
    i = pick % len(hidden)
    has_layernorm = any(isinstance(m, nn.LayerNorm) for m in model)
    new = hidden[i] * (1 + extra % 3) if has_layernorm else hidden[i] + extra
    grown, report = widen(model, f"fc{i + 1}", new, generator=torch.Generator().manual_seed(gseed))
    x = _inputs(shape, seed)
    assert preservation_error(model, grown, x) < TOL
    assert grown.get_submodule(f"fc{i + 1}").weight.shape[0] == new == report.new_width
    assert report.parameters_after >= report.parameters_before


@PROPS
@given(net=cnns(), pick=st.integers(0, 3), extra=st.integers(0, 5), gseed=st.integers(0, 2**20))
def test_widening_a_cnn_preserves_its_function_through_flatten(net, pick, extra, gseed):
    model, shape, layers, seed = net
    layer = layers[pick % len(layers)]
    width = model.get_submodule(layer).weight.shape[0]
    grown, _ = widen(model, layer, width + extra, generator=torch.Generator().manual_seed(gseed))
    assert preservation_error(model, grown, _inputs(shape, seed)) < TOL


@PROPS
@given(
    width=st.integers(1, 4),
    inner=st.integers(1, 4),
    blocks=st.integers(1, 2),
    extra=st.integers(0, 5),
    seed=st.integers(0, 2**20),
)
def test_widening_inside_a_residual_block_preserves_its_function(width, inner, blocks, extra, seed):
    torch.manual_seed(seed)
    model = give_statistics(
        residual_cnn(2, width, inner, 3, blocks=blocks).double(), (2, 5, 5), seed=seed
    )
    layer = f"block{1 + seed % blocks}.body.conv1"
    grown, _ = widen(model, layer, inner + extra, generator=torch.Generator().manual_seed(seed))
    assert preservation_error(model, grown, _inputs((2, 5, 5), seed)) < TOL


@PROPS
@given(
    net=mlps(),
    pick=st.integers(0, 2),
    bn=st.sampled_from([None, True, False]),
    with_data=st.booleans(),
)
def test_deepening_an_mlp_preserves_its_function(net, pick, bn, with_data):
    model, shape, hidden, seed = net
    layer = f"fc{pick % len(hidden) + 1}"
    data = _inputs(shape, seed + 7, n=32) if with_data else None
    grown, report = deepen(model, layer, batchnorm=bn, data=data)
    assert preservation_error(model, grown, _inputs(shape, seed)) < TOL
    assert len(report.inserted) == (
        2 if bn or (bn is None and any(isinstance(m, nn.BatchNorm1d) for m in model)) else 1
    )


@PROPS
@given(net=cnns(), pick=st.integers(0, 3), kernel=st.sampled_from([1, 3, 5]))
def test_deepening_a_cnn_preserves_its_function(net, pick, kernel):
    model, shape, layers, seed = net
    grown, _ = deepen(
        model, layers[pick % len(layers)], kernel_size=kernel, data=_inputs(shape, seed)
    )
    assert preservation_error(model, grown, _inputs(shape, seed + 3)) < TOL


@PROPS
@given(
    net=cnns(),
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 4)), min_size=2, max_size=4
    ),
)
def test_chains_of_growth_steps_preserve_the_function(net, ops):
    model, shape, layers, seed = net
    grown = model
    gen = torch.Generator().manual_seed(seed)
    for wider, pick, extra in ops:
        layer = layers[pick % len(layers)]
        if wider:
            width = grown.get_submodule(layer).weight.shape[0]
            grown, _ = widen(grown, layer, width + extra, generator=gen)
        else:
            grown, _ = deepen(grown, layer)
    assert preservation_error(model, grown, _inputs(shape, seed)) < TOL


@PROPS
@given(
    net=mlps(norms=(None, "batch")),
    pick=st.integers(0, 2),
    extra=st.integers(1, 6),
    noise=st.sampled_from([1e-4, 1e-2, 0.1]),
)
def test_gaussian_noise_changes_the_output_within_its_lipschitz_bound(net, pick, extra, noise):
    model, shape, hidden, seed = net
    i = pick % len(hidden)
    layer, consumer = f"fc{i + 1}", (f"fc{i + 2}" if i + 1 < len(hidden) else "out")
    gen = torch.Generator().manual_seed(seed)
    grown, report = widen(model, layer, hidden[i] + extra, noise=noise, generator=gen)
    x = _inputs(shape, seed)
    captured = []
    hook = grown.get_submodule(consumer).register_forward_hook(
        lambda m, a, o: captured.append(a[0])
    )
    with torch.no_grad():
        delta = (model(x) - grown(x)).norm(dim=1)
    hook.remove()
    bound = report.noise_norm * captured[0].norm(dim=1) * _lipschitz_after(grown, consumer)
    assert bool((delta <= bound * (1 + 1e-9) + 1e-12).all())
    assert report.noise_norm > 0 or hidden[i] + extra == hidden[i]


def _lipschitz_after(model: nn.Sequential, consumer: str) -> float:
    names = [n for n, _ in model.named_children()]
    constant = 1.0
    for name in names[names.index(consumer) + 1 :]:
        module = model.get_submodule(name)
        if isinstance(module, nn.Linear):
            constant *= float(torch.linalg.matrix_norm(module.weight.detach(), ord=2))
        elif isinstance(module, nn.BatchNorm1d):
            constant *= float(
                (module.weight.detach() / (module.running_var + module.eps).sqrt()).abs().max()
            )
    return constant


@PROPS
@given(net=mlps(), pick=st.integers(0, 2), extra=st.integers(1, 6))
def test_zero_sum_noise_preserves_the_function_exactly(net, pick, extra):
    model, shape, hidden, seed = net
    i = pick % len(hidden)
    new = hidden[i] * 2 if any(isinstance(m, nn.LayerNorm) for m in model) else hidden[i] + extra
    gen = torch.Generator().manual_seed(seed)
    grown, _ = widen(model, f"fc{i + 1}", new, noise=0.05, noise_kind="zero_sum", generator=gen)
    assert preservation_error(model, grown, _inputs(shape, seed)) < TOL


@PROPS
@given(net=mlps(norms=("batch",)), pick=st.integers(0, 2), extra=st.integers(0, 5))
def test_widening_with_batchnorm_is_exact_in_train_mode_too(net, pick, extra):
    model, shape, hidden, seed = net
    if any(isinstance(m, nn.Dropout) for m in model):
        return
    i = pick % len(hidden)
    grown, _ = widen(model, f"fc{i + 1}", hidden[i] + extra, generator=torch.Generator())
    x = _inputs(shape, seed)
    model.train()
    grown.train()
    with torch.no_grad():
        torch.testing.assert_close(grown(x), model(x), rtol=0, atol=1e-9)
