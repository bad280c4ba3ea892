"""Writes ``legacy_6828924.pt`` with the LearnedOptimizer of commit 6828924 (format 1).

Not a test: it documents how the fixture was made. Run it with that commit's package on
the path, from a git worktree (``git worktree add /tmp/lopt_old_6828924 6828924``):
``PYTHONPATH=/tmp/lopt_old_6828924/packages python make_legacy_6828924.py OUT.pt``.
Each case: the model after 3 steps, the optimizer's state_dict, then 3 more steps'
gradients (and losses) and the parameters the old code produced after each of them.
"""

import copy
import sys

import torch
import torch.nn.functional as F
from torch import nn

import metalab.lopt.optimizer as old_module
from metalab.lopt.arch_hierarchical import HierarchicalArch
from metalab.lopt.baselines import AdamArch
from metalab.lopt.optimizer import LearnedOptimizer

assert "lopt_old_6828924" in old_module.__file__, old_module.__file__
torch.set_num_threads(1)
gen = torch.Generator().manual_seed(0)
x = torch.randn(16, 4, generator=gen)
y = torch.randint(0, 2, (16,), generator=gen)


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))


def groups(m, idiom):
    weights = [p for n, p in m.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in m.named_parameters() if n.endswith("bias")]
    if idiom:  # the AdamW grouping idiom; this version kept weight_decay and ignored it
        return [{"params": weights, "weight_decay": 0.1}, {"params": biases, "weight_decay": 0.0}]
    return [{"params": weights}, {"params": biases}]


def run(make, idiom, val):
    m = model()
    opt = make(groups(m, idiom))
    record = {}
    for step in range(6):
        if step == 3:
            record["params"] = [p.detach().clone() for p in m.parameters()]
            record["optimizer"] = copy.deepcopy(opt.state_dict())  # its tensors are live
            record["grads"], record["losses"], record["next"] = [], [], []
        opt.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step(loss=loss.detach(), val_loss=val)
        if step >= 3:
            record["grads"].append([p.grad.clone() for p in m.parameters()])
            record["losses"].append(loss.detach().clone())
            record["next"].append([p.detach().clone() for p in m.parameters()])
    return record


hier = HierarchicalArch(context_scale=1.0)
hier_theta = hier.init_theta(generator=torch.Generator().manual_seed(3))
cases = {
    "mlp_idiom": run(lambda g: LearnedOptimizer(g), True, None),
    "adam": run(lambda g: LearnedOptimizer(g, AdamArch.theta(lr=1e-2), "adam"), False, None),
    "hierarchical": run(
        lambda g: LearnedOptimizer(
            g, hier.init_theta(generator=torch.Generator().manual_seed(3)), hier
        ),
        False,
        0.6,
    ),
}
torch.save({"commit": "6828924", "cases": cases}, sys.argv[1])
