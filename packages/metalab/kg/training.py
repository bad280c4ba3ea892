"""Train link predictors with pykeen's own training loops, and save/load them safely.

Training is pykeen's (``LCWATrainingLoop`` for CQD's 1-vs-all objective, the optimizer
from pykeen's resolver); this module only wires a :class:`~metalab.kg.graphs.KnowledgeGraph`
and a :class:`~metalab.kg.predictors.PredictorConfig` into it, seeds it from an explicit
``torch.Generator`` and records the time and per-epoch losses.

A saved predictor is a folder: ``weights.pt`` (the model's ``state_dict``, loaded with
``torch.load(weights_only=True)``) and ``metadata.json`` (format tag, config, entity and
relation vocabularies, dataset, seed, training time and losses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from metalab.core.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from metalab.core.config import build_config
from metalab.core.errors import ConfigError, MetalabError, UnknownNameError, first_line
from metalab.core.progress import progress_enabled
from metalab.kg.graphs import KnowledgeGraph, Vocabulary
from metalab.kg.predictors import LinkPredictor, PredictorConfig, build_pykeen_model

__all__ = [
    "PREDICTOR_FORMAT",
    "load_link_predictor",
    "save_link_predictor",
    "train_link_predictor",
]

PREDICTOR_FORMAT = "metalab.kg.link-predictor/1"


def train_link_predictor(
    graph: KnowledgeGraph,
    config: PredictorConfig | None = None,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    num_threads: int | None = None,
) -> LinkPredictor:
    """Train a link predictor on ``graph.train`` with pykeen.

    Args:
        graph: the knowledge graph (only its training triples are used).
        config: model and training settings (default: CQD's ComplEx-N3 recipe).
        generator: seeds pykeen's initialization and batch shuffling (one int drawn).
        device: where to train.
        num_threads: torch intra-op threads while training (restored afterwards); ``None``
            keeps torch's setting. One thread is much faster for these small models on a
            busy machine (OpenMP threads spin while waiting for a core).

    Returns:
        The trained predictor; ``metadata["training"]`` holds seconds, seed and per-epoch losses.
    """
    from pykeen.triples import CoreTriplesFactory

    config = config or PredictorConfig()
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    factory = CoreTriplesFactory(
        mapped_triples=graph.train,
        num_entities=graph.num_entities,
        num_relations=graph.num_relations,
        create_inverse_triples=config.reciprocal,
    )
    model = build_pykeen_model(
        config, num_entities=graph.num_entities, num_relations=graph.num_relations, random_seed=seed
    ).to(torch.device(device))
    started = time.perf_counter()
    losses = _run_training(config, model, factory, num_threads)
    training = {
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 3),
        "threads": torch.get_num_threads() if num_threads is None else num_threads,
        "losses": losses,
        "device": str(device),
    }
    metadata = {"dataset": graph.name, "dataset_source": graph.source, "training": training}
    return LinkPredictor(
        model, entities=graph.entities, relations=graph.relations, config=config, metadata=metadata
    )


def _run_training(
    config: PredictorConfig, model: Any, factory: Any, num_threads: int | None
) -> list[float]:
    """Run pykeen's training loop for ``config``; return the per-epoch losses."""
    from pykeen.training.training_loop import NoTrainingBatchError

    loop = _training_loop(config, model, factory)
    with _training_environment(num_threads):
        try:
            losses = loop.train(
                triples_factory=factory,
                num_epochs=config.epochs,
                batch_size=config.batch_size,
                use_tqdm=progress_enabled(),
                use_tqdm_batch=False,
                pin_memory=model.device.type == "cuda",
            )
        except NoTrainingBatchError:
            raise ConfigError(
                f"batch_size {config.batch_size} leaves no full training batch for "
                f"{config.model} (it drops incomplete batches); use a smaller batch size"
            ) from None
        except torch.cuda.OutOfMemoryError:
            raise ConfigError(
                f"out of memory training {config.model!r} with dim {config.dim} and batch size "
                f"{config.batch_size}; use a smaller --batch-size or --dim"
            ) from None
        except RuntimeError as exc:  # e.g. ConvE's kernel larger than a small --dim's image
            if not _is_shape_error(exc):
                raise  # a bug, not a bad option: keep its traceback
            raise ConfigError(
                f"training pykeen model {config.model!r} failed: {first_line(exc)} "
                "(check --dim and --batch-size for this model)"
            ) from None
    return [float(x) for x in losses or []]


def _is_shape_error(exc: RuntimeError) -> bool:
    """Whether torch refused the sizes an option implies (not a bug, not memory)."""
    words = ("size", "shape", "dimension", "kernel", "mat1 and mat2")
    return any(word in str(exc).lower() for word in words)


@contextlib.contextmanager
def _training_environment(num_threads: int | None) -> Iterator[None]:
    """Set torch's thread count and freeze the GC heap for the duration of training.

    pykeen's loop calls ``gc.collect()`` after every epoch; with torch and pykeen imported
    that full collection costs ~0.5 s, more than an epoch of UMLS. Objects that exist
    before training are moved to the permanent generation (``gc.freeze``) so the per-epoch
    collection only scans what training allocates; ``gc.unfreeze`` restores them after.
    """
    previous = torch.get_num_threads()
    if num_threads is not None:
        if num_threads < 1:
            raise ConfigError(f"num_threads must be ≥ 1, got {num_threads}")
        torch.set_num_threads(num_threads)
    gc.freeze()
    try:
        with warnings.catch_warnings():  # pykeen asks for pinned memory even without a GPU
            warnings.filterwarnings("ignore", message=".*pin_memory.*", category=UserWarning)
            yield
    finally:
        gc.unfreeze()
        torch.set_num_threads(previous)


def _training_loop(config: PredictorConfig, model: Any, factory: Any) -> Any:
    from pykeen.optimizers import optimizer_resolver
    from pykeen.training import training_loop_resolver

    try:
        optimizer = optimizer_resolver.make(
            config.optimizer, params=model.get_grad_params(), lr=config.lr
        )
    except (KeyError, ValueError):
        raise UnknownNameError(
            "optimizer", config.optimizer, sorted(optimizer_resolver.options)
        ) from None
    try:
        loop_cls = training_loop_resolver.lookup(config.training_loop)
    except (KeyError, ValueError):
        raise UnknownNameError(
            "training loop", config.training_loop, sorted(training_loop_resolver.options)
        ) from None
    return loop_cls(model=model, triples_factory=factory, optimizer=optimizer)


def save_link_predictor(predictor: LinkPredictor, folder: str | os.PathLike[str]) -> Path:
    """Save ``predictor`` as ``folder/weights.pt`` + ``folder/metadata.json``."""
    from pykeen import get_version

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path / "weights.pt", predictor.model.state_dict())
    metadata = {
        "format": PREDICTOR_FORMAT,
        "config": dataclasses.asdict(predictor.config),
        "entities": predictor.entities.to_json(),
        "relations": predictor.relations.to_json(),
        "pykeen_version": get_version(),
        **{k: v for k, v in predictor.metadata.items() if k not in {"format", "config"}},
    }
    atomic_write_json(path / "metadata.json", metadata)
    return path


def load_link_predictor(
    folder: str | os.PathLike[str], *, device: torch.device | str = "cpu"
) -> LinkPredictor:
    """Load a predictor saved by :func:`save_link_predictor` (weights with ``weights_only=True``).

    Raises:
        MetalabError: the folder, its metadata or its weights are missing, malformed or do
            not match each other.
    """
    path = Path(folder)
    meta_path = path / "metadata.json"
    if not path.exists():
        raise MetalabError(
            f"model {os.fspath(path)!r} does not exist (train one with: metalab kg train)"
        )
    if not meta_path.is_file():
        raise MetalabError(f"{os.fspath(path)!r} is not a saved link predictor (no metadata.json)")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetalabError(f"{os.fspath(meta_path)}: not valid JSON ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != PREDICTOR_FORMAT:
        raise MetalabError(f"{os.fspath(meta_path)}: not a {PREDICTOR_FORMAT} metadata file")
    try:
        config = build_config(PredictorConfig, metadata["config"], where="config")
        entities = Vocabulary.from_json(metadata["entities"], kind="entity")
        relations = Vocabulary.from_json(metadata["relations"], kind="relation")
    except (KeyError, ConfigError) as exc:
        raise MetalabError(f"{os.fspath(meta_path)}: bad metadata ({exc})") from None
    model = build_pykeen_model(
        config, num_entities=len(entities), num_relations=len(relations), random_seed=None
    )
    state = load_checkpoint(path / "weights.pt")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = first_line(exc)
        raise MetalabError(
            f"{os.fspath(path / 'weights.pt')}: weights do not match metadata ({first})"
        ) from None
    metadata = {k: v for k, v in metadata.items() if k not in {"entities", "relations", "config"}}
    return LinkPredictor(
        model.to(torch.device(device)),
        entities=entities,
        relations=relations,
        config=config,
        metadata=metadata,
    )
