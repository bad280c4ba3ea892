import pytest
import torch
from torch.func import functional_call

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.lopt.interfaces import Task
from metalab.lopt.task_families import (
    HELD_OUT_NAMES,
    GridFamily,
    family_names,
    family_resolver,
    held_out_tasks,
    make_family,
    task_set,
)
from metalab.lopt.task_zoo import ConvTask, MLPTask, ModuleTask, QuadraticTask, load_dataset

CPU = torch.device("cpu")

EXPECTED_HELD_OUT = (  # the fixed held-out set: changing it breaks comparability of results
    "mlp-digits-w96-d1-relu-s1-b64",
    "mlp-digits-w32-d2-gelu-s1-b32",
    "mlp-mnist-w48-d1-relu-s1-b128",
    "mlp-mnist-w32-d1-gelu-s1-b64",
    "conv-digits-c12-relu-s1-b64",
    "conv-digits-c8-gelu-s1-b32",
    "quadratic-n24-k100-z0.1-s0",
    "quadratic-n64-k1000-z0.5-s1",
    "tabular-iris-w32-d1-relu-s1-b16",
    "tabular-wine-w32-d1-gelu-s1-b32",
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _small_tasks():
    return [
        MLPTask("digits", width=8, depth=2, activation="tanh", batch_size=5),
        MLPTask("wine", width=6, depth=1, activation="gelu", batch_size=4),
        ConvTask(channels=2, activation="relu", batch_size=3),
        QuadraticTask(dim=5, condition=10.0, noise=0.3, seed=3),
    ]


def _reference_loss(task: Task, flat: torch.Tensor, batch: dict) -> torch.Tensor:
    """One particle's minibatch loss by plain autograd-able code (no vmap)."""
    if isinstance(task, QuadraticTask):
        return 0.5 * (task.lam * (flat - task.centre - batch["noise"]) ** 2).sum()
    assert isinstance(task, ModuleTask)
    params = task._unflatten(flat)
    x, y = task.data.x_train[batch["index"]], task.data.y_train[batch["index"]]
    return torch.nn.functional.cross_entropy(functional_call(task.module, params, (x,)), y)


@pytest.mark.parametrize("task", _small_tasks(), ids=lambda t: t.name)
def test_batched_gradients_match_autograd_per_particle(task):
    params = task.init_params(3, generator=_gen())
    batches = task.sample_batches(3, 2, generator=_gen(1))
    batch = {k: v[1] for k, v in batches.items()}
    loss, grads = task.loss_and_grad(params, batch)
    assert loss.shape == (3,) and grads.shape == (3, task.num_params)
    for p in range(3):  # reference loop over particles
        flat = params[p].clone().requires_grad_(True)
        ref = _reference_loss(task, flat, {k: v[p] for k, v in batch.items()})
        (ref_grad,) = torch.autograd.grad(ref, flat)
        torch.testing.assert_close(loss[p], ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads[p], ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_mlp_fast_path_equals_generic_vmap_path(activation):
    task = MLPTask("digits", width=7, depth=2, activation=activation, batch_size=6)
    params = task.init_params(4, generator=_gen(2))
    batch = {"index": task.sample_batches(4, 1, generator=_gen(3))["index"][0]}
    fast = task.loss_and_grad(params, batch)
    generic = ModuleTask.loss_and_grad(task, params, batch)
    torch.testing.assert_close(fast, generic, rtol=1e-5, atol=1e-7)


def test_test_and_validation_losses_are_batched_equal_to_loop():
    task = MLPTask("iris", width=5, depth=1, batch_size=4)
    params = task.init_params(3, generator=_gen())
    batched = task.test_loss(params)
    looped = torch.stack([task.test_loss(params[p : p + 1])[0] for p in range(3)])
    torch.testing.assert_close(batched, looped)
    val = task.validation_loss(params, generator=_gen(5))
    val_again = torch.stack(
        [task.validation_loss(params[p : p + 1], generator=_gen(5))[0] for p in range(3)]
    )
    torch.testing.assert_close(val, val_again)


@pytest.mark.parametrize("name", ["digits", "mnist", "breast_cancer", "wine", "iris"])
def test_dataset_splits_are_disjoint_and_standardized(name):
    data = load_dataset(name)
    rows = [data.x_train, data.x_val, data.x_test]
    keys = [{tuple(r.tolist()) for r in x} for x in rows]
    # no example (by content) is shared between splits, except exact duplicates in the raw data
    total = sum(len(x) for x in rows)
    sizes = {"digits": 1797, "mnist": 5000, "breast_cancer": 569, "wine": 178, "iris": 150}
    assert total == sizes[name] == len(data.y_train) + len(data.y_val) + len(data.y_test)
    assert len(keys[0] & keys[1]) <= 0.01 * total
    assert len(keys[0] & keys[2]) <= 0.01 * total and len(keys[1] & keys[2]) <= 0.01 * total
    assert len(data.y_test) >= 0.19 * total and len(data.y_val) >= 0.09 * total
    if name in ("breast_cancer", "wine", "iris"):
        torch.testing.assert_close(
            data.x_train.mean(0), torch.zeros(rows[0].shape[1]), atol=1e-4, rtol=0
        )


def test_held_out_set_is_fixed_and_named():
    tasks = held_out_tasks(CPU)
    assert tuple(t.name for t in tasks) == HELD_OUT_NAMES == EXPECTED_HELD_OUT
    assert [t.name for t in task_set("held-out", CPU)] == list(HELD_OUT_NAMES)
    assert [t.name for t in make_family("mixed").held_out(CPU)] == list(HELD_OUT_NAMES)


@pytest.mark.parametrize("name", ["mlp-digits", "mlp-mnist", "conv-digits", "quadratic", "tabular"])
def test_held_out_configs_use_values_the_grid_never_samples(name):
    family = make_family(name)
    assert isinstance(family, GridFamily)
    for config in family.held_out_configs:
        novel = [a for a, v in config.items() if a != "seed" and v not in family.grid[a]]
        assert novel, f"{config} could be sampled for meta-training"


def test_sampled_meta_training_tasks_are_never_held_out():
    held = set(HELD_OUT_NAMES)
    family = make_family("mixed")
    generator = _gen(7)
    names = {family.sample(generator=generator, device=CPU).name for _ in range(150)}
    assert not names & held
    prefixes = {n.split("-")[0] for n in names}
    assert prefixes == {"mlp", "conv", "quadratic", "tabular"}
    again = make_family("mixed").sample(generator=_gen(7), device=CPU).name
    first = make_family("mixed").sample(generator=_gen(7), device=CPU).name
    assert again == first  # deterministic given the generator


def test_registry_names_and_errors():
    assert family_names() == sorted(
        ["conv-digits", "mixed", "mlp-digits", "mlp-mnist", "quadratic", "tabular"]
    )
    assert family_resolver.lookup("mlp-digits").name == "mlp-digits"
    with pytest.raises(UnknownNameError, match="did you mean"):
        make_family("mlp-digit")
    with pytest.raises(UnknownNameError):
        task_set("held_outt", CPU)
    with pytest.raises(UnknownNameError):
        MLPTask("digits", activation="swish")
    with pytest.raises(ConfigError):
        MLPTask("digits", width=0)
    with pytest.raises(ConfigError):
        QuadraticTask(dim=4, noise=-1.0)


def test_tasks_are_trainable_by_plain_gradient_descent():
    task = ConvTask(channels=4, batch_size=32)
    params = task.init_params(2, generator=_gen())
    batches = task.sample_batches(2, 60, generator=_gen(1))
    before = task.test_loss(params)
    for t in range(60):
        _, grads = task.loss_and_grad(params, {"index": batches["index"][t]})
        params = params - 0.3 * grads
    assert bool((task.test_loss(params) < 0.7 * before).all())
