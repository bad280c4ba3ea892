import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.core.seeding import make_generator
from metalab.nas import search as search_module
from metalab.nas.data import DigitsSplits, load_digits_splits
from metalab.nas.network import Supernet, discrete_network
from metalab.nas.search import DartsSearch, SearchConfig, _second_order_alpha_grad
from metalab.nas.selection import (
    MagnitudeSelection,
    PerturbationSelection,
    magnitude_choices,
    make_selection,
    perturbation_scores,
    selection_names,
    selection_resolver,
)
from metalab.nas.space import make_space


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny_data():
    full = load_digits_splits()
    return DigitsSplits(
        train=(full.train[0][:96], full.train[1][:96]),
        val=(full.val[0][:64], full.val[1][:64]),
        test=full.test,
    )


def test_supernet_with_one_hot_weights_is_the_discrete_network():
    space = make_space("nb201")
    cell = space.parse(
        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"
    )
    torch.manual_seed(0)
    sup = Supernet(space, channels=4, n_cells=2, num_classes=10, generator=_gen())
    net = discrete_network(space, cell, channels=4, n_cells=2, num_classes=10)
    chosen = [space.op_index(op) for node in cell.nodes for op, _ in node]
    # copy the chosen ops' (and stem/head) weights from the supernet into the discrete net
    state = {}
    for name, _ in net.named_parameters():
        parts = name.split(".")
        if parts[0] == "cells" and parts[2] == "edges":
            parts[4] = str(chosen[int(parts[3])])
        source = sup.state_dict().get(".".join(parts))
        state[name] = source if source is not None else dict(net.named_parameters())[name]
    net.load_state_dict(state, strict=False)
    weights = F.one_hot(torch.tensor(chosen), len(space.ops)).float()
    x = torch.rand(16, 1, 8, 8, generator=_gen(1))
    net.train()
    assert torch.allclose(sup(x, weights), net(x), atol=1e-5)


def test_mixing_weights_override_decided_and_removed_edges():
    space = make_space("skip-conv3")
    sup = Supernet(space, channels=2, n_cells=1, num_classes=10, generator=_gen())
    sup.decided[2] = 0
    sup.removed.add(4)
    w = sup.mixing_weights()
    assert w[2].tolist() == [1.0, 0.0] and w[4].tolist() == [0.0, 0.0]
    assert torch.allclose(w[0], torch.softmax(sup.alpha[0], -1))
    state = sup.selection_state()
    other = Supernet(space, channels=2, n_cells=1, num_classes=10, generator=_gen())
    other.load_selection_state(state)
    assert other.decided == {2: 0} and other.removed == {4}


@pytest.mark.parametrize("space_name", ["nb201", "darts"])
def test_vmapped_perturbation_scores_equal_the_loop(space_name, tiny_data):
    space = make_space(space_name)
    sup = Supernet(space, channels=2, n_cells=1, num_classes=10, generator=_gen())
    base = sup.mixing_weights().detach()
    cands = base.unsqueeze(0).repeat(len(space.ops), 1, 1)
    cands[torch.arange(len(space.ops)), 1, torch.arange(len(space.ops))] = 0.0
    acc_v, loss_v = perturbation_scores(sup, cands, tiny_data.val, batch_size=32, batched=True)
    acc_l, loss_l = perturbation_scores(sup, cands, tiny_data.val, batch_size=32, batched=False)
    assert torch.allclose(acc_v, acc_l) and torch.allclose(loss_v, loss_l, atol=1e-5)
    # removing an op changes the loss; removing `none` does not
    none = space.ops.index("none")
    full_loss = F.cross_entropy(sup(tiny_data.val[0][:32]), tiny_data.val[1][:32])
    assert not torch.allclose(loss_v, loss_v[none].expand_as(loss_v))
    assert torch.isfinite(full_loss)


def test_second_order_alpha_gradient_matches_exact_unrolled_gradient(monkeypatch):
    # DARTS's ε = 0.01/‖v‖ can straddle ReLU kinks; a smaller ε checks the formula itself
    monkeypatch.setattr(search_module, "_FD_SCALE", 1e-4)
    torch.manual_seed(0)
    space = make_space("skip-conv3")
    sup = Supernet(
        space, channels=3, n_cells=1, num_classes=10, generator=_gen(), alpha_init_scale=0.5
    )
    sup = sup.double()
    x = torch.rand(12, 1, 8, 8, generator=_gen(2), dtype=torch.float64)
    y = torch.randint(0, 10, (12,), generator=_gen(3))
    train, val = (x[:6], y[:6]), (x[6:], y[6:])
    xi, wd = 0.05, 3e-4
    approx = _second_order_alpha_grad(sup, train, val, xi=xi, weight_decay=wd)
    names = [n for n, _ in sup.named_parameters() if n != "alpha"]
    weights = [p for n, p in sup.named_parameters() if n != "alpha"]
    grads = torch.autograd.grad(
        F.cross_entropy(sup(train[0]), train[1]), weights, create_graph=True
    )
    virtual = {n: w - xi * (g + wd * w) for n, w, g in zip(names, weights, grads, strict=True)}
    out = functional_call(sup, {**virtual, "alpha": sup.alpha}, (val[0],))
    exact = torch.autograd.grad(F.cross_entropy(out, val[1]), sup.alpha)[0]
    assert torch.allclose(approx, exact, rtol=1e-6, atol=1e-10)
    # the first-order gradient (at w, not w') differs: the test can tell them apart
    plain = torch.autograd.grad(F.cross_entropy(sup(val[0]), val[1]), sup.alpha)[0]
    assert not torch.allclose(plain, exact, rtol=1e-3, atol=1e-6)


def test_magnitude_ignores_none_and_keeps_top2_in_darts():
    nb = make_space("nb201")
    alpha = torch.zeros(6, 5)
    alpha[:, 0] = 5.0  # none strongest everywhere
    alpha[:, 3] = 1.0  # conv 3x3 next
    choices, alive = magnitude_choices(nb, alpha)
    assert choices == [3] * 6 and all(alive)
    darts = make_space("darts")
    alpha = torch.zeros(14, 8)
    alpha[:, 3] = torch.arange(14, dtype=torch.float32)  # later edges stronger
    choices, alive = magnitude_choices(darts, alpha)
    kept = [darts.edges[e] for e in range(14) if alive[e]]
    assert kept == [(0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4), (3, 5), (4, 5)]


def test_registered_selection_rules():
    assert selection_names() == ["magnitude", "perturbation"]
    assert {cls.name for cls in selection_resolver} == set(selection_names())
    assert isinstance(make_selection("perturbation", tune_epochs=1), PerturbationSelection)
    with pytest.raises(UnknownNameError):
        make_selection("gradient")
    with pytest.raises(ConfigError):
        make_selection("magnitude", tune_epochs=2)
    with pytest.raises(ConfigError):
        make_selection("perturbation", tune_epochs=-1)


@pytest.mark.parametrize("order", ["first", "second"])
def test_darts_search_moves_alpha_and_learns(order, tiny_data):
    config = SearchConfig(
        space="skip-conv3", channels=4, n_cells=1, epochs=3, batch_size=32, order=order
    )
    search = DartsSearch(config, data=tiny_data, generator=make_generator(0, "t"))
    before = search.model.alpha.detach().clone()
    losses = [search.train_epoch() for _ in range(3)]
    assert not torch.allclose(before, search.model.alpha)
    assert losses[-1] < losses[0]


def test_perturbation_selection_follows_the_accuracy_drop(tiny_data):
    config = SearchConfig(space="skip-conv3", channels=4, n_cells=1, epochs=2, batch_size=32)
    search = DartsSearch(config, data=tiny_data, generator=make_generator(0, "t"))
    search.train_epoch()
    alpha_before = search.model.alpha.detach().clone()
    result = PerturbationSelection(tune_epochs=0).select(search, generator=_gen())
    assert sorted(d["edge"] for d in result.decisions) == list(range(6))
    for d in result.decisions:  # the kept op is the one whose removal leaves the lowest accuracy
        assert d["acc"][search.space.ops.index(d["op"])] == min(d["acc"])
    assert torch.equal(alpha_before, search.model.alpha)  # the search itself is untouched
    mag = MagnitudeSelection().select(search, generator=_gen()).cell
    make_space("skip-conv3").validate(mag)


def test_fixed_alpha_stays_uniform_through_search_and_tuning(tiny_data):
    config = SearchConfig(
        space="skip-conv3", channels=4, n_cells=1, epochs=1, batch_size=32, fixed_alpha=True
    )
    search = DartsSearch(config, data=tiny_data, generator=make_generator(0, "t"))
    search.train_epoch()
    assert torch.count_nonzero(search.model.alpha) == 0
    rule = PerturbationSelection(tune_epochs=1)
    model_copy = copy.deepcopy(search.model)
    result = rule.select(search, generator=_gen())
    assert len(result.cell.nodes) == 3
    assert torch.equal(model_copy.alpha, search.model.alpha)
    with pytest.raises(ConfigError):
        DartsSearch(
            SearchConfig(fixed_alpha=True, order="second"), data=tiny_data, generator=_gen()
        )


def test_darts_topology_selection_keeps_two_inputs(tiny_data):
    config = SearchConfig(space="darts", channels=2, n_cells=1, epochs=1, batch_size=32)
    search = DartsSearch(config, data=tiny_data, generator=make_generator(0, "t"))
    result = PerturbationSelection(tune_epochs=0).select(search, generator=_gen())
    make_space("darts").validate(result.cell)
    removed = [d for d in result.decisions if "removed_edge" in d]
    assert len(removed) == 14 - 8


@pytest.mark.parametrize("pt_epochs", [[2], [1, 3], [0, 2]])
def test_skip_domination_needs_two_pt_checkpoints_inside_the_search(pt_epochs, tmp_path):
    from metalab.core.claims import run_spec
    from metalab.core.specs import find_spec

    outcome = run_spec(
        find_spec("darts-skip-domination"),
        smoke=True,
        device="cpu",
        out=tmp_path,
        overrides={"pt_epochs": pt_epochs},
    )
    assert outcome.error_is_input
    assert "pt_epochs must list at least two epochs in 1..2" in outcome.error


def test_seeds_searched_in_worker_processes_give_the_sequential_result(tmp_path):
    """Two processes (one per core) select the same cells as one process, seed by seed."""
    from metalab.core.claims import run_spec
    from metalab.core.specs import find_spec

    summaries = {}
    for workers in (1, 2):
        outcome = run_spec(
            find_spec("darts-pt-fixed-alpha"),
            smoke=True,
            device="cpu",
            out=tmp_path / str(workers),
            overrides={"workers": workers, "seeds": [0, 1]},
        )
        assert outcome.error is None, outcome.error
        summaries[workers] = outcome.metrics
        stages = sorted(p.name for p in (outcome.run_dir / "stages").iterdir())
        assert stages == [f"{tag}-seed{s}.json" for tag in ("darts", "fixed-alpha") for s in (0, 1)]
    assert summaries[2] == summaries[1]


@pytest.mark.parametrize("space_name", ["nb201", "nb201-4op", "skip-conv3", "darts"])
def test_supernet_forward_equals_the_per_edge_sum_with_its_gradients(space_name):
    """Sharing work across a node's outgoing edges computes DARTS Eq. 2 exactly."""
    space = make_space(space_name)
    net = Supernet(space, channels=4, n_cells=2, num_classes=10, generator=_gen())
    net.alpha.data.normal_(generator=_gen(1))
    x = torch.randn(8, 1, 8, 8, generator=_gen(2))

    grads = []
    for per_edge in (False, True):
        net.zero_grad()
        logits = net(x, per_edge=per_edge)
        logits.square().sum().backward()
        grads.append([logits.detach()] + [p.grad.clone() for p in net.parameters()])
    for fanout, reference in zip(*grads, strict=True):
        torch.testing.assert_close(fanout, reference, rtol=1e-5, atol=1e-6)
    kinds = {g.kind for cell in net.cells for groups in cell.fanout.groups for g in groups}
    assert ("fused" in kinds) == (space_name in {"nb201", "nb201-4op", "skip-conv3"})
