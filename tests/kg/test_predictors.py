"""pykeen link predictors: training, the scoring interface, saving/loading, link evaluation."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from metalab.core.errors import ConfigError, MetalabError, UnknownNameError
from metalab.kg import (
    LinkPredictor,
    PredictorConfig,
    evaluate_link_prediction,
    load_link_predictor,
    save_link_predictor,
    train_link_predictor,
)


def test_default_config_is_the_cqd_recipe() -> None:
    from pykeen.regularizers import PowerSumRegularizer

    from metalab.kg import build_pykeen_model

    config = PredictorConfig()
    assert (config.model, config.optimizer, config.lr, config.loss, config.training_loop) == (
        "complex",
        "adagrad",
        0.1,
        "crossentropy",
        "lcwa",
    )
    assert config.reciprocal and config.init_std == 1e-3 and config.regularizer_weight == 0.005
    model = build_pykeen_model(config, num_entities=10, num_relations=3, random_seed=0)
    regularizer = model.entity_representations[0].regularizer
    assert isinstance(regularizer, PowerSumRegularizer)
    assert regularizer.p == 3 and not regularizer.normalize and regularizer.weight == 0.005
    weights = model.entity_representations[0]._embeddings.weight
    assert weights.std().item() == pytest.approx(1e-3, rel=0.2)
    assert model.num_relations == 6  # reciprocal relations


def test_scoring_interface_is_consistent_and_chunked(tiny_predictor: LinkPredictor) -> None:
    p = tiny_predictor
    heads = torch.arange(p.num_entities).repeat(3)
    relations = torch.arange(3 * p.num_entities) % p.num_query_relations
    full = p.score_tails(heads, relations)
    assert full.shape == (len(heads), p.num_entities) and full.dtype == torch.float32
    full[0, 0] = float("-inf")  # an ordinary tensor: solvers may mask scores in place
    full = p.score_tails(heads, relations)
    p.memory_budget, budget = 1, p.memory_budget  # one row per chunk
    try:
        assert torch.allclose(p.score_tails(heads, relations), full, atol=1e-6)
    finally:
        p.memory_budget = budget
    cand = torch.tensor([3, 0, 7])
    assert torch.allclose(p.score_tails(heads, relations, candidates=cand), full[:, cand])
    per_row = torch.randint(
        0, p.num_entities, (len(heads), 4), generator=torch.Generator().manual_seed(0)
    )
    assert torch.allclose(
        p.score_tails(heads, relations, candidates=per_row), full.gather(1, per_row)
    )
    tails = per_row[:, 0]
    assert torch.allclose(
        p.score_triples(heads, relations, tails), full.gather(1, tails[:, None])[:, 0]
    )
    matrix = p.relation_matrix(5)
    assert torch.allclose(matrix[2], p.score_tails(torch.tensor([2]), torch.tensor([5]))[0])
    with pytest.raises(ConfigError, match="relation ids"):
        p.score_tails(torch.tensor([0]), torch.tensor([p.num_query_relations]))


def test_embedding_scores_match_id_scores_and_are_differentiable(
    tiny_predictor: LinkPredictor,
) -> None:
    p = tiny_predictor
    heads, relations = torch.tensor([0, 4, 9]), torch.tensor([1, 2, 7])
    h = p.entity_embeddings(heads).detach().clone().requires_grad_(True)
    scores = p.score_embeddings(h, relations, p.entity_embeddings().detach())
    assert torch.allclose(scores, p.score_tails(heads, relations), atol=1e-6)
    scores.sum().backward()
    assert h.grad is not None and torch.isfinite(torch.view_as_real(h.grad)).all()


def test_inverse_relations_without_reciprocal_training_score_heads(nations) -> None:
    config = PredictorConfig(dim=4, epochs=1, reciprocal=False, batch_size=2000)
    p = train_link_predictor(
        nations, config, generator=torch.Generator().manual_seed(0), num_threads=1
    )
    # (h, r^-1, t) is scored as (t, r, h)
    inverse = p.score_tails(torch.tensor([1, 2]), torch.tensor([3, 5]))
    forward = p.score_tails(torch.arange(p.num_entities), torch.full((p.num_entities,), 2))
    assert torch.allclose(inverse[0], forward[:, 1], atol=1e-6)
    h = p.entity_embeddings(torch.tensor([1, 2]))
    assert torch.allclose(
        p.score_embeddings(h, torch.tensor([3, 5]), p.entity_embeddings()), inverse, atol=1e-6
    )


def test_training_is_seeded(nations) -> None:
    config = PredictorConfig(dim=4, epochs=1, batch_size=2000)

    def weights(seed):
        p = train_link_predictor(
            nations, config, generator=torch.Generator().manual_seed(seed), num_threads=1
        )
        return p.entity_embeddings().detach()

    assert torch.equal(weights(0), weights(0)) and not torch.equal(weights(0), weights(1))


@pytest.mark.parametrize("model", ["distmult", "RotatE", "tucker"])
def test_other_pykeen_models_by_name(nations, model: str) -> None:
    config = PredictorConfig(model=model, dim=4, epochs=1, batch_size=500)
    p = train_link_predictor(
        nations, config, generator=torch.Generator().manual_seed(0), num_threads=1
    )
    scores = p.score_tails(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert scores.shape == (2, nations.num_entities) and torch.isfinite(scores).all()


def _every_supported_model() -> list[str]:
    from metalab.kg.predictors import supported_models

    return supported_models()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("model", _every_supported_model())
def test_every_listed_model_trains_one_epoch_on_a_tiny_graph(hand_graph, model: str) -> None:
    """A name the CLI lists or suggests must train; the others are refused with a reason."""
    config = PredictorConfig(model=model, dim=16, epochs=1, batch_size=8)
    p = train_link_predictor(hand_graph, config, generator=torch.Generator().manual_seed(0))
    scores = p.score_tails(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert scores.shape == (2, hand_graph.num_entities) and torch.isfinite(scores).all()


@pytest.mark.parametrize("model", ["complexliteral", "ComplExLiteral", "rgcn", "nodepiece"])
def test_models_needing_more_than_triples_are_refused_by_name(model: str) -> None:
    from metalab.kg import resolve_model_class

    with pytest.raises(ConfigError, match="not supported here"):
        resolve_model_class(model)
    with pytest.raises(UnknownNameError) as info:
        resolve_model_class("complexliterall")
    assert "complexliteral," not in str(info.value)


def test_unknown_model_and_bad_config() -> None:
    from metalab.kg import resolve_model_class

    with pytest.raises(UnknownNameError, match="did you mean complex"):
        resolve_model_class("complx")
    with pytest.raises(ConfigError, match="dim"):
        PredictorConfig(dim=0)


def test_batch_larger_than_the_data_for_batch_norm_models_is_a_config_error(nations) -> None:
    config = PredictorConfig(model="tucker", dim=4, epochs=1, batch_size=100_000)
    with pytest.raises(ConfigError, match="smaller batch size"):
        train_link_predictor(nations, config, generator=torch.Generator())


def test_save_load_round_trip_and_evaluation_matches_pykeen(
    tiny_predictor, nations, tmp_path: Path
) -> None:
    from pykeen.evaluation import RankBasedEvaluator

    folder = save_link_predictor(tiny_predictor, tmp_path / "model")
    loaded = load_link_predictor(folder)
    assert loaded.entities == nations.entities and loaded.config == tiny_predictor.config
    heads, relations = torch.arange(5), torch.arange(5)
    assert torch.equal(
        loaded.score_tails(heads, relations), tiny_predictor.score_tails(heads, relations)
    )
    ours = evaluate_link_prediction(loaded, nations)
    result = RankBasedEvaluator().evaluate(
        loaded.model,
        nations.test,
        use_tqdm=False,
        batch_size=64,
        additional_filter_triples=[nations.train, nations.valid],
    )
    assert ours["mrr"] == pytest.approx(
        result.get_metric("both.realistic.inverse_harmonic_mean_rank"), abs=1e-6
    )
    assert ours["hits@10"] == pytest.approx(
        result.get_metric("both.realistic.hits_at_10"), abs=1e-6
    )
    assert ours["triples"] == len(nations.test)


def test_loading_refuses_bad_folders_and_code_in_weights(tiny_predictor, tmp_path: Path) -> None:
    with pytest.raises(MetalabError, match=r"no metadata\.json"):
        load_link_predictor(tmp_path)
    folder = save_link_predictor(tiny_predictor, tmp_path / "m")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "weights.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(MetalabError, match="cannot load checkpoint"):
        load_link_predictor(folder)
    assert not marker.exists()
    torch.save({"nonsense": torch.zeros(2)}, folder / "weights.pt")
    with pytest.raises(MetalabError, match="do not match"):
        load_link_predictor(folder)
    (folder / "metadata.json").write_text("{")
    with pytest.raises(MetalabError, match="not valid JSON"):
        load_link_predictor(folder)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scoring_on_cuda_matches_cpu(tiny_predictor) -> None:
    heads, relations = torch.arange(5), torch.arange(5)
    cpu = tiny_predictor.score_tails(heads, relations)
    try:
        gpu = tiny_predictor.to("cuda").score_tails(heads, relations)
        assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-5)
    finally:
        tiny_predictor.to("cpu")


def test_only_size_errors_become_option_errors() -> None:
    """A bug inside training keeps its traceback; a size torch refuses points at the options."""
    from metalab.kg.training import _is_shape_error

    assert _is_shape_error(RuntimeError("Kernel size can't be greater than actual input size"))
    assert _is_shape_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x4 and 8x3)"))
    assert not _is_shape_error(RuntimeError("element 0 of tensors does not require grad"))
