import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalab.core.errors import ConfigError
from metalab.core.training import (
    EpochRecord,
    accuracy,
    evaluate_loss,
    random_shift,
    train_supervised,
)


def _blobs(n=200, seed=0):
    """Two well-separated Gaussian blobs in 2-D: a linearly separable problem."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    centers = torch.tensor([[-2.0, -2.0], [2.0, 2.0]])
    inputs = centers[labels] + 0.5 * torch.randn(n, 2, generator=generator)
    return inputs, labels


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))


def _train(model, data, *, seed=0, epochs=5, **kwargs):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return train_supervised(
        model,
        data,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=32,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def test_training_reduces_the_loss_and_learns_the_problem():
    data = _blobs()
    model = _model()
    loss_before = evaluate_loss(model, *data)
    history = _train(model, data, epochs=5)
    assert [record.epoch for record in history] == [1, 2, 3, 4, 5]
    assert all(isinstance(record, EpochRecord) for record in history)
    assert history[-1].train_loss < history[0].train_loss
    assert evaluate_loss(model, *data) < 0.2 * loss_before
    assert accuracy(model, *data) >= 0.98
    assert all(record.seconds >= 0 for record in history)


def test_evaluate_at_start_records_epoch_zero_before_any_step():
    data = _blobs()
    model = _model()
    initial = evaluate_loss(model, *data)
    history = _train(
        model,
        data,
        epochs=2,
        evaluate=lambda m: {"loss": evaluate_loss(m, *data)},
        evaluate_at_start=True,
    )
    assert [record.epoch for record in history] == [0, 1, 2]
    assert math.isnan(history[0].train_loss)
    assert history[0].metrics["loss"] == pytest.approx(initial)
    assert history[2].metrics["loss"] < history[0].metrics["loss"]
    assert history[2].metrics["loss"] == pytest.approx(evaluate_loss(model, *data))


def test_on_epoch_sees_every_record_in_order():
    seen = []
    history = _train(_model(), _blobs(), epochs=4, on_epoch=seen.append, evaluate_at_start=True)
    assert seen == history
    assert [record.epoch for record in seen] == [0, 1, 2, 3, 4]


def test_on_epoch_can_stop_training_by_raising():
    class Stop(Exception):
        pass

    def stop_after_two(record):
        if record.epoch == 2:
            raise Stop

    seen = []
    with pytest.raises(Stop):
        _train(
            _model(),
            _blobs(),
            epochs=10,
            on_epoch=lambda r: (seen.append(r.epoch), stop_after_two(r)),
        )
    assert seen == [1, 2]


def test_evaluate_runs_in_eval_mode_and_training_resumes_in_train_mode():
    modes = []
    model = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.1), nn.Linear(8, 2))

    def evaluate(m):
        modes.append(m.training)
        return {"x": 1.0}

    history = _train(model, _blobs(), epochs=2, evaluate=evaluate, evaluate_at_start=True)
    assert modes == [False, False, False]
    assert all(record.metrics == {"x": 1.0} for record in history)
    assert model.training


def test_same_seed_gives_identical_weights():
    data = _blobs()
    first, second, other = _model(), _model(), _model()
    history_a = _train(first, data, seed=5)
    history_b = _train(second, data, seed=5)
    _train(other, data, seed=6)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r.train_loss for r in history_a] == [r.train_loss for r in history_b]
    assert any(
        not torch.equal(a, c)
        for a, c in zip(first.state_dict().values(), other.state_dict().values(), strict=True)
    )


def test_shuffling_draws_only_from_the_given_generator():
    data = _blobs()
    first, second = _model(), _model()
    torch.manual_seed(100)
    _train(first, data, seed=5)
    torch.manual_seed(200)
    _train(second, data, seed=5)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_start_epoch_continues_the_numbering():
    data = _blobs()
    history = _train(_model(), data, epochs=2, start_epoch=3, evaluate_at_start=True)
    assert [record.epoch for record in history] == [4, 5]  # no epoch-0 entry on resume
    assert all(not math.isnan(record.train_loss) for record in history)


def test_zero_epochs_trains_nothing():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert _train(model, _blobs(), epochs=0) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("epochs", "batch_size"), [(-1, 8), (1, 0)])
def test_bad_arguments(epochs, batch_size):
    model = _model()
    with pytest.raises(ValueError, match="need epochs"):
        train_supervised(
            model,
            _blobs(),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=epochs,
            batch_size=batch_size,
            generator=torch.Generator(),
        )


def test_last_partial_batch_is_used_and_train_loss_is_the_epoch_mean():
    inputs, targets = _blobs(n=10)
    model = nn.Linear(2, 2)
    calls = []

    def loss_fn(outputs, labels):
        calls.append(len(labels))
        return F.cross_entropy(outputs, labels)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # no movement: the mean is checkable
    (record,) = train_supervised(
        model,
        (inputs, targets),
        optimizer=optimizer,
        epochs=1,
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
        loss_fn=loss_fn,
    )
    assert calls == [4, 4, 2]
    assert record.train_loss == pytest.approx(
        F.cross_entropy(model(inputs), targets).item(), rel=1e-5
    )


# ----------------------------------------------------------------- accuracy and evaluate_loss
class ModeRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.linear(x)


@pytest.mark.parametrize("metric", [accuracy, evaluate_loss])
@pytest.mark.parametrize("start_training", [True, False])
def test_metrics_run_in_eval_mode_and_restore_the_mode(metric, start_training):
    model = ModeRecorder()
    model.train(start_training)
    inputs, targets = _blobs(n=20)
    metric(model, inputs, targets, batch_size=6)
    assert model.modes == [False] * 4
    assert model.training is start_training


def test_metrics_do_not_build_graphs():
    model = ModeRecorder()
    inputs, targets = _blobs(n=20)
    evaluate_loss(model, inputs, targets)
    accuracy(model, inputs, targets)
    assert all(p.grad is None for p in model.parameters())


def test_accuracy_value_with_uneven_batches():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        model.bias.zero_()
    inputs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    targets = torch.tensor([0, 1, 1, 1, 0])  # predictions are 0, 1, 0, 1, 0
    assert accuracy(model, inputs, targets, batch_size=2) == pytest.approx(0.8)
    assert accuracy(model, inputs[:0], targets[:0]) == 0.0


def test_evaluate_loss_is_the_dataset_mean_for_any_batch_size():
    model = _model()
    inputs, targets = _blobs(n=23)
    full = F.cross_entropy(model(inputs), targets).item()
    for batch_size in (1, 5, 23, 100):
        assert evaluate_loss(model, inputs, targets, batch_size=batch_size) == pytest.approx(
            full, rel=1e-5
        )
    mse = evaluate_loss(
        model, inputs, F.one_hot(targets, 2).float(), loss_fn=F.mse_loss, batch_size=4
    )
    assert mse == pytest.approx(
        F.mse_loss(model(inputs), F.one_hot(targets, 2).float()).item(), rel=1e-5
    )


def _images(n=6, size=7, seed=0):
    return torch.randn(n, 2, size, size, generator=torch.Generator().manual_seed(seed))


def test_random_shift_translates_each_image_by_its_own_offset_within_the_bound():
    images = _images(n=400)
    shifted = random_shift(images, 2, torch.Generator().manual_seed(3))
    assert shifted.shape == images.shape
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")
    offsets = []
    for i in range(len(images)):
        # exactly one window of the edge-padded image (offset <= 2 each way) is the output
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(shifted[i], padded[i, :, dy : dy + 7, dx : dx + 7])
        ]
        assert len(matches) == 1
        offsets.append(matches[0])
    # every offset in [-2, 2]^2 occurs, each image drawing its own
    assert set(offsets) == {(dy, dx) for dy in range(5) for dx in range(5)}


def test_random_shift_is_reproducible_and_zero_is_the_identity():
    images = _images()
    first = random_shift(images, 1, torch.Generator().manual_seed(5))
    again = random_shift(images, 1, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    assert not torch.equal(first, images)
    assert random_shift(images, 0, torch.Generator()) is images


@pytest.mark.parametrize(("pixels", "shape"), [(-1, (2, 1, 5, 5)), (5, (2, 1, 5, 5)), (1, (2, 25))])
def test_random_shift_rejects_impossible_shifts(pixels, shape):
    with pytest.raises(ConfigError, match="random_shift"):
        random_shift(torch.zeros(shape), pixels, torch.Generator())


def test_augment_sees_every_training_batch_and_never_the_evaluation():
    data = _blobs(n=70)
    model = _model()
    seen, trained_on, evaluated_on = [], [], []

    def augment(batch, generator):
        seen.append(len(batch))
        return torch.zeros_like(batch)

    def record(module, args):
        (trained_on if module.training else evaluated_on).append(args[0].clone())

    model.register_forward_pre_hook(record)
    history = _train(
        model,
        data,
        epochs=2,
        augment=augment,
        evaluate=lambda m: {"acc": accuracy(m, *data)},
    )
    assert seen == [32, 32, 6, 32, 32, 6]
    assert len(history) == 2
    assert len(trained_on) == 6 and all(not x.any() for x in trained_on)  # the augmented batch
    assert evaluated_on and all(torch.equal(x, data[0]) for x in evaluated_on)  # the clean data
