"""The tensor-level identities of Net2WiderNet and Net2DeeperNet, by value."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from metalab.core.errors import ConfigError
from metalab.net2net import (
    identity_batchnorm,
    identity_conv2d,
    identity_linear,
    replica_counts,
    split_incoming,
    wider_mapping,
)


@settings(max_examples=50, deadline=None)
@given(old=st.integers(1, 20), extra=st.integers(0, 30), seed=st.integers(0, 2**31))
def test_mapping_keeps_old_units_and_draws_the_rest_from_them(old, extra, seed):
    g = wider_mapping(old, old + extra, generator=torch.Generator().manual_seed(seed))
    assert g.shape == (old + extra,) and g.dtype == torch.int64
    assert torch.equal(g[:old], torch.arange(old))
    assert int(g.min()) >= 0 and int(g.max()) < old
    counts = replica_counts(g, old)
    assert int(torch.bincount(g, minlength=old).sum()) == old + extra
    assert torch.equal(counts, torch.bincount(g, minlength=old)[g])


def test_mapping_is_uniform_over_old_units():
    g = wider_mapping(4, 40004, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(g[4:], minlength=4).double() / 40000
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)


def test_balanced_mapping_replicates_equally_and_refuses_non_multiples():
    g = wider_mapping(3, 9, generator=torch.Generator(), balanced=True)
    assert torch.equal(torch.bincount(g), torch.tensor([3, 3, 3]))
    with pytest.raises(ConfigError, match="multiple of 3"):
        wider_mapping(3, 10, generator=torch.Generator(), balanced=True)


@pytest.mark.parametrize(("old", "new"), [(4, 3), (0, 2)])
def test_mapping_refuses_narrowing(old, new):
    with pytest.raises(ConfigError, match="new width"):
        wider_mapping(old, new, generator=torch.Generator())


@settings(max_examples=40, deadline=None)
@given(old=st.integers(1, 8), extra=st.integers(0, 10), seed=st.integers(0, 2**31))
def test_split_weights_applied_to_replicated_units_give_the_same_sum(old, extra, seed):
    gen = torch.Generator().manual_seed(seed)
    g = wider_mapping(old, old + extra, generator=gen)
    w = torch.randn(5, old, 3, generator=gen, dtype=torch.float64)
    h = torch.randn(old, 3, generator=gen, dtype=torch.float64)
    widened, noise = split_incoming(w, g)
    assert torch.count_nonzero(noise) == 0
    torch.testing.assert_close((widened * h[g]).sum((1, 2)), (w * h).sum((1, 2)))


def test_zero_sum_noise_preserves_each_group_sum_and_gaussian_does_not():
    gen = torch.Generator().manual_seed(1)
    g = torch.tensor([0, 1, 2, 0, 0, 1])
    w = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    zero_sum, n1 = split_incoming(w, g, noise=0.1, noise_kind="zero_sum", generator=gen)
    gaussian, n2 = split_incoming(w, g, noise=0.1, generator=gen)
    group = torch.zeros_like(w).index_add_(1, g, zero_sum)
    torch.testing.assert_close(group, w)
    assert float(n1.abs().max()) > 0 and float(n2.abs().max()) > 0
    assert torch.count_nonzero(n1[:, 2]) == 0 and torch.count_nonzero(n2[:, 2]) == 0  # unit 2 alone
    assert not torch.allclose(torch.zeros_like(w).index_add_(1, g, gaussian), w)


def test_noise_needs_a_generator_and_a_known_kind():
    g = torch.tensor([0, 0])
    with pytest.raises(ConfigError, match="generator"):
        split_incoming(torch.ones(2, 1), g, noise=0.1)
    with pytest.raises(ConfigError, match="noise kind"):
        split_incoming(
            torch.ones(2, 1), g, noise=0.1, noise_kind="pink", generator=torch.Generator()
        )  # type: ignore[arg-type]


def test_identity_layers_compute_the_identity():
    x = torch.randn(3, 6, dtype=torch.float64)
    lin = identity_linear(6, like=nn.Linear(2, 6).double())
    torch.testing.assert_close(lin(x), x)
    img = torch.randn(2, 4, 7, 5, dtype=torch.float64)
    for k in (1, 3, 5):
        conv = identity_conv2d(4, kernel_size=k, like=nn.Conv2d(1, 4, 3).double())
        torch.testing.assert_close(conv(img), img)
    with pytest.raises(ConfigError, match="odd"):
        identity_conv2d(4, kernel_size=2, like=nn.Conv2d(1, 4, 3))


@pytest.mark.parametrize("conv", [False, True])
def test_identity_batchnorm_is_exact_in_eval_and_on_its_batch_in_train(conv):
    x = (torch.randn(16, 3, 4, 4) if conv else torch.randn(16, 3)).double() * 3 + 1
    default = identity_batchnorm(3, conv=conv, like=x).eval()
    torch.testing.assert_close(default(x), x)
    fitted = identity_batchnorm(3, conv=conv, like=x, inputs=x)
    torch.testing.assert_close(fitted.eval()(x), x)
    torch.testing.assert_close(fitted.train()(x), x)
