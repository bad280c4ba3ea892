"""Registry of learned-optimizer architectures: configs, weights files and the CLI name them.

``make_arch("hierarchical", lstm=64)`` builds :class:`HierarchicalArch`; a misspelt name
raises :class:`~metalab.core.errors.UnknownNameError` with suggestions, an option the
architecture does not take raises :class:`~metalab.core.errors.ConfigError`. Other modules
add architectures with :func:`register_arch` (the hand-designed baselines of
``metalab.lopt.baselines`` are registered on first lookup when that module exists).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

from class_resolver import ClassResolver

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.lopt.arch_adam_mlp import AdamMLPArch
from metalab.lopt.arch_hierarchical import HierarchicalArch
from metalab.lopt.arch_mlp import MLPArch
from metalab.lopt.interfaces import OptimizerArch

__all__ = ["arch_class", "arch_names", "arch_resolver", "make_arch", "register_arch"]

arch_resolver: ClassResolver[OptimizerArch] = ClassResolver(
    base=OptimizerArch,  # type: ignore[type-abstract]
    suffix="Arch",
)
_PLUGIN_MODULES = ("metalab.lopt.baselines",)
_plugins_loaded = False


def register_arch(cls: type[OptimizerArch]) -> type[OptimizerArch]:
    """Register an architecture class under its ``name`` attribute (idempotent; a decorator).

    Raises:
        ConfigError: when ``cls`` has no ``name`` or another class holds that name.
    """
    if not cls.name:
        raise ConfigError(f"optimizer architecture {cls.__name__} has no name attribute")
    known = {c.name: c for c in arch_resolver}
    if known.get(cls.name) is cls:
        return cls
    if cls.name in known:
        raise ConfigError(f"optimizer architecture name {cls.name!r} is already taken")
    arch_resolver.register(cls, synonyms={cls.name}, raise_on_conflict=False)
    return cls


register_arch(MLPArch)
register_arch(HierarchicalArch)
register_arch(AdamMLPArch)


def _load_plugins() -> None:
    """Import the optional modules that define more archs and register their archs."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module_name in _PLUGIN_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        for obj in vars(module).values():
            is_arch = inspect.isclass(obj) and issubclass(obj, OptimizerArch)
            if is_arch and obj.name and not inspect.isabstract(obj):
                register_arch(obj)


def arch_names() -> list[str]:
    """The names of the registered architectures (``"hierarchical"``, ``"mlp"``, ...)."""
    _load_plugins()
    return sorted(cls.name for cls in arch_resolver)


def arch_class(name: str) -> type[OptimizerArch]:
    """The architecture class called ``name`` (raises :class:`UnknownNameError`)."""
    by_name = {cls.name: cls for cls in arch_resolver}
    if name not in by_name:
        _load_plugins()
        by_name = {cls.name: cls for cls in arch_resolver}
    if name not in by_name:
        raise UnknownNameError("optimizer architecture", name, by_name)
    return by_name[name]


def make_arch(name: str, **options: Any) -> OptimizerArch:
    """Build the architecture called ``name`` with ``options`` (``None`` values are dropped).

    Raises:
        UnknownNameError: for an unknown name (with suggestions).
        ConfigError: for an option the architecture does not take or a bad value.
    """
    cls = arch_class(name)
    given = {k: v for k, v in options.items() if v is not None}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    extra = sorted(set(given) - accepted)
    if extra:
        takes = ", ".join(sorted(accepted)) or "no options"
        raise ConfigError(
            f"optimizer architecture {name!r} does not take {', '.join(extra)}; it takes {takes}"
        )
    try:
        return cls(**given)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad options for optimizer architecture {name!r}: {err}") from None
