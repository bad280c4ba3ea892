import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from metalab.core.errors import ConfigError
from metalab.core.population import (
    antithetic_perturbations,
    module_params,
    population_forward,
    population_loss,
    population_size,
    stack_params,
)

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _mlp(n_in, hidden, n_out, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


def _random_members(module, count, generator):
    return [
        {name: torch.randn(p.shape, generator=generator) for name, p in module.named_parameters()}
        for _ in range(count)
    ]


def _loaded(module, member):
    """A copy of ``module`` with ``member`` loaded as its parameters (the loop reference)."""
    clone = copy.deepcopy(module)
    missing, unexpected = clone.load_state_dict(member, strict=False)
    assert not unexpected
    assert not set(missing) & {name for name, _ in module.named_parameters()}
    return clone


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(123)


def test_module_params_is_a_detached_view(gen):
    module = _mlp(3, 4, 2)
    params = module_params(module)
    assert list(params) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(not t.requires_grad for t in params.values())
    assert params["0.weight"].data_ptr() == module[0].weight.data_ptr()


def test_stack_params_shapes_and_values(gen):
    module = _mlp(3, 4, 2)
    members = _random_members(module, 5, gen)
    stacked = stack_params(members)
    assert stacked["0.weight"].shape == (5, 4, 3)
    assert stacked["2.bias"].shape == (5, 2)
    assert torch.equal(stacked["0.weight"][3], members[3]["0.weight"])
    assert population_size(stacked) == 5


def test_stack_params_errors():
    with pytest.raises(ValueError, match="at least one"):
        stack_params([])
    a = {"w": torch.zeros(2), "b": torch.zeros(1)}
    with pytest.raises(ValueError, match="parameter set 1 has keys"):
        stack_params([a, {"w": torch.zeros(2)}])
    with pytest.raises(ValueError, match="parameter set 2"):
        stack_params([a, a, {"w": torch.zeros(2), "c": torch.zeros(1)}])


def test_population_size_disagreement():
    with pytest.raises(ValueError, match="disagree"):
        population_size({"w": torch.zeros(3, 2), "b": torch.zeros(4)})


def test_forward_shared_inputs_equals_loop(gen):
    module = _mlp(5, 8, 3)
    members = _random_members(module, 6, gen)
    x = torch.randn(10, 5, generator=gen)
    out = population_forward(module, stack_params(members), x)
    assert out.shape == (6, 10, 3)
    expected = torch.stack([_loaded(module, m)(x) for m in members])
    torch.testing.assert_close(out, expected, **TOL)
    # Different members really give different outputs (the test would notice a broadcast bug).
    assert not torch.allclose(out[0], out[1])


def test_forward_ignores_the_modules_own_parameters(gen):
    module = _mlp(5, 8, 3)
    members = _random_members(module, 2, gen)
    x = torch.randn(4, 5, generator=gen)
    before = population_forward(module, stack_params(members), x)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(10.0)
    torch.testing.assert_close(population_forward(module, stack_params(members), x), before)


def test_forward_per_member_inputs_equals_loop(gen):
    module = _mlp(4, 6, 2)
    members = _random_members(module, 3, gen)
    xs = torch.randn(3, 7, 4, generator=gen)
    out = population_forward(module, stack_params(members), xs, per_member_inputs=True)
    expected = torch.stack([_loaded(module, m)(x) for m, x in zip(members, xs, strict=True)])
    torch.testing.assert_close(out, expected, **TOL)


def test_forward_chunked_equals_unchunked(gen):
    module = _mlp(4, 6, 2)
    stacked = stack_params(_random_members(module, 7, gen))
    x = torch.randn(5, 4, generator=gen)
    torch.testing.assert_close(
        population_forward(module, stacked, x, chunk_size=3),
        population_forward(module, stacked, x),
        **TOL,
    )


def test_loss_shared_inputs_equals_loop(gen):
    module = _mlp(5, 8, 4)
    members = _random_members(module, 5, gen)
    x = torch.randn(12, 5, generator=gen)
    y = torch.randint(0, 4, (12,), generator=gen)
    losses = population_loss(module, stack_params(members), F.cross_entropy, x, y)
    assert losses.shape == (5,)
    expected = torch.stack([F.cross_entropy(_loaded(module, m)(x), y) for m in members])
    torch.testing.assert_close(losses, expected, **TOL)
    chunked = population_loss(module, stack_params(members), F.cross_entropy, x, y, chunk_size=2)
    torch.testing.assert_close(chunked, expected, **TOL)


def test_loss_per_member_inputs_equals_loop(gen):
    module = _mlp(3, 5, 1)
    members = _random_members(module, 4, gen)
    xs = torch.randn(4, 9, 3, generator=gen)
    ys = torch.randn(4, 9, 1, generator=gen)
    losses = population_loss(
        module, stack_params(members), F.mse_loss, xs, ys, per_member_inputs=True
    )
    expected = torch.stack(
        [F.mse_loss(_loaded(module, m)(x), y) for m, x, y in zip(members, xs, ys, strict=True)]
    )
    torch.testing.assert_close(losses, expected, **TOL)


def test_loss_is_differentiable_through_the_population(gen):
    module = _mlp(3, 4, 2)
    stacked = {
        k: v.requires_grad_() for k, v in stack_params(_random_members(module, 3, gen)).items()
    }
    x = torch.randn(6, 3, generator=gen)
    y = torch.randint(0, 2, (6,), generator=gen)
    population_loss(module, stacked, F.cross_entropy, x, y).sum().backward()
    for name, tensor in stacked.items():
        assert tensor.grad is not None, name
        assert tensor.grad.shape == tensor.shape


def _bn_net(gen):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    bn = net[1]
    bn.running_mean.copy_(torch.randn(6, generator=gen))
    bn.running_var.copy_(torch.rand(6, generator=gen) + 0.5)
    return net.eval()


def test_module_with_buffers_equals_loop(gen):
    net = _bn_net(gen)
    members = _random_members(net, 4, gen)
    assert set(members[0]) == {"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"}
    x = torch.randn(8, 4, generator=gen)
    out = population_forward(net, stack_params(members), x)
    expected = torch.stack([_loaded(net, m)(x) for m in members])
    torch.testing.assert_close(out, expected, **TOL)
    y = torch.randint(0, 2, (8,), generator=gen)
    losses = population_loss(net, stack_params(members), F.cross_entropy, x, y)
    torch.testing.assert_close(
        losses, torch.stack([F.cross_entropy(_loaded(net, m)(x), y) for m in members]), **TOL
    )


def test_explicit_buffers_override_the_modules(gen):
    net = _bn_net(gen)
    members = _random_members(net, 2, gen)
    x = torch.randn(8, 4, generator=gen)
    other = copy.deepcopy(net)
    other[1].running_mean.add_(3.0)
    buffers = dict(other.named_buffers())
    out = population_forward(net, stack_params(members), x, buffers=buffers)
    expected = torch.stack([_loaded(other, m)(x) for m in members])
    torch.testing.assert_close(out, expected, **TOL)
    assert not torch.allclose(out, population_forward(net, stack_params(members), x))


@settings(max_examples=15, deadline=None)
@given(
    population=st.integers(1, 5),
    n_in=st.integers(1, 6),
    hidden=st.integers(1, 9),
    n_out=st.integers(1, 4),
    batch=st.integers(1, 6),
    per_member=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_vmap_equals_loop_property(population, n_in, hidden, n_out, batch, per_member, seed):
    generator = torch.Generator().manual_seed(seed)
    module = _mlp(n_in, hidden, n_out, seed=seed % 1000)
    members = _random_members(module, population, generator)
    shape = (population, batch, n_in) if per_member else (batch, n_in)
    inputs = torch.randn(shape, generator=generator)
    out = population_forward(module, stack_params(members), inputs, per_member_inputs=per_member)
    assert out.shape == (population, batch, n_out)
    for index, member in enumerate(members):
        x = inputs[index] if per_member else inputs
        torch.testing.assert_close(out[index], _loaded(module, member)(x), **TOL)


# ----------------------------------------------------------------- antithetic perturbations
def test_antithetic_members_and_shapes():
    center = {"w": torch.randn(3, 2), "b": torch.randn(2)}
    stacked, noise = antithetic_perturbations(
        center, pairs=4, sigma=0.1, generator=torch.Generator().manual_seed(0)
    )
    assert set(stacked) == set(noise) == {"w", "b"}
    assert stacked["w"].shape == (8, 3, 2)
    assert stacked["b"].shape == (8, 2)
    assert noise["w"].shape == (4, 3, 2)
    assert noise["b"].shape == (4, 2)
    for name in center:
        torch.testing.assert_close(stacked[name][:4], center[name] + 0.1 * noise[name])
        torch.testing.assert_close(stacked[name][4:], center[name] - 0.1 * noise[name])
        torch.testing.assert_close(stacked[name].mean(0), center[name].expand_as(stacked[name][0]))
    assert population_size(stacked) == 8
    assert not torch.allclose(noise["w"][0], noise["w"][1])


def test_antithetic_is_reproducible_from_the_generator():
    center = {"w": torch.zeros(5), "v": torch.ones(2, 2, dtype=torch.float64)}
    a, na = antithetic_perturbations(
        center, pairs=3, sigma=0.5, generator=torch.Generator().manual_seed(7)
    )
    b, nb = antithetic_perturbations(
        center, pairs=3, sigma=0.5, generator=torch.Generator().manual_seed(7)
    )
    c, _ = antithetic_perturbations(
        center, pairs=3, sigma=0.5, generator=torch.Generator().manual_seed(8)
    )
    for name in center:
        assert torch.equal(a[name], b[name])
        assert torch.equal(na[name], nb[name])
        assert not torch.equal(a[name], c[name])
    assert a["v"].dtype == torch.float64
    assert na["v"].dtype == torch.float64


def test_antithetic_draws_only_from_the_given_generator():
    center = {"w": torch.zeros(4)}
    torch.manual_seed(0)
    a, _ = antithetic_perturbations(
        center, pairs=2, sigma=1.0, generator=torch.Generator().manual_seed(3)
    )
    torch.manual_seed(1)
    b, _ = antithetic_perturbations(
        center, pairs=2, sigma=1.0, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(a["w"], b["w"])


@pytest.mark.parametrize(("pairs", "sigma"), [(0, 0.1), (-1, 0.1), (2, 0.0), (2, -0.5)])
def test_antithetic_rejects_bad_arguments(pairs, sigma):
    with pytest.raises(ValueError, match="pairs"):
        antithetic_perturbations(
            {"w": torch.zeros(2)}, pairs=pairs, sigma=sigma, generator=torch.Generator()
        )


def test_antithetic_population_evaluates_with_population_loss():
    module = _mlp(3, 4, 2)
    generator = torch.Generator().manual_seed(5)
    stacked, _ = antithetic_perturbations(
        module_params(module), pairs=3, sigma=0.01, generator=generator
    )
    x = torch.randn(10, 3, generator=generator)
    y = torch.randint(0, 2, (10,), generator=generator)
    losses = population_loss(module, stacked, F.cross_entropy, x, y)
    assert losses.shape == (6,)
    base = F.cross_entropy(module(x), y)
    # Small perturbations: each member's loss is near the center's; the pair mean is nearer still.
    torch.testing.assert_close(losses, base.expand(6), atol=0.05, rtol=0)
    pair_means = (losses[:3] + losses[3:]) / 2
    assert (pair_means - base).abs().max() < (losses[:3] - base).abs().max() + 1e-6


def test_train_mode_batch_norm_is_refused_with_the_way_out(gen):
    net = _bn_net(gen).train()
    members = stack_params(_random_members(net, 3, gen))
    x, y = torch.randn(8, 4, generator=gen), torch.randint(0, 2, (8,), generator=gen)
    with pytest.raises(ConfigError, match=r"BatchNorm1d '1' is in train mode.*module\.eval\(\)"):
        population_loss(net, members, F.cross_entropy, x, y)
    with pytest.raises(ConfigError, match="BatchNorm1d '1'"):
        population_forward(net, members, x)
    torch.func.replace_all_batch_norm_modules_(net)  # the documented way out: batch statistics
    losses = population_loss(net, members, F.cross_entropy, x, y)
    expected = []
    for member in _loaded_members(net, members):
        expected.append(F.cross_entropy(member(x), y))
    torch.testing.assert_close(losses, torch.stack(expected), **TOL)


def _loaded_members(net, stacked):
    count = next(iter(stacked.values())).shape[0]
    return [_loaded(net, {k: v[i] for k, v in stacked.items()}) for i in range(count)]


def test_train_mode_instance_norm_that_tracks_statistics_is_refused(gen):
    net = nn.Sequential(
        nn.Linear(4, 6),
        nn.Unflatten(1, (2, 3)),
        nn.InstanceNorm1d(2, track_running_stats=True),
        nn.Flatten(),
    )
    members = stack_params(_random_members(net, 2, gen))
    with pytest.raises(ConfigError, match="InstanceNorm1d '2' is in train mode"):
        population_forward(net, members, torch.randn(8, 4, generator=gen))
