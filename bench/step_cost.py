"""Per-step cost of the cohort fast path against training each model alone, side by side.

    python bench/step_cost.py [--activations relu elu gelu tanh] [--depths 1 3 6]
                              [--members 8] [--steps 300]

For each activation and depth, on mnist1d at width 64 and batch 128 with momentum SGD (the
canonical spec's shape), one process measures CPU seconds per optimizer step of
- *alone*: one plain ``nn.Sequential`` with ``torch.optim.SGD``, the textbook stack's loop;
- *cohort*: `models.train.train_cohort` with ``--members`` members of that depth;
best of three repeats each, one torch thread. It prints both and the cost of one member in
the cohort as a fraction of training it alone (``cohort / (members x alone)``). The target is
unreachable, so every member trains every step (no early stopping, no compaction).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from models.convergence import Convergence
from models.datasets import Dataset, load_dataset
from models.mlp import MLPShape, build_mlp
from models.train import DATA_SEED_OFFSET, CohortSpec, Member, train_cohort

LR = 1e-3  # small: nothing diverges, nothing reaches the target


def alone(data: Dataset, activation: str, depth: int, steps: int) -> float:
    shape = MLPShape(data.in_features, data.out_features, 64, depth, activation)
    model = build_mlp(shape, "kaiming_normal", 0)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    gen = torch.Generator().manual_seed(DATA_SEED_OFFSET)
    n, bs = data.x_train.shape[0], 128
    perm = torch.randperm(n, generator=gen)
    t0 = time.process_time()
    for step in range(steps):
        pos = step % (n // bs)
        if pos == 0:
            perm = torch.randperm(n, generator=gen)
        idx = perm[pos * bs : (pos + 1) * bs]
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # the textbook loop reads every loss (its curve)
    return (time.process_time() - t0) / steps


def cohort(data: Dataset, activation: str, depth: int, members: int, steps: int) -> float:
    spec = CohortSpec(
        activation=activation,
        depth=depth,
        width=64,
        optimizer="momentum",
        batch_size=128,
        members=tuple(Member("kaiming_normal", LR, seed) for seed in range(members)),
    )
    conv = Convergence(target_loss=1e-9, max_steps=steps, eval_every=25)
    t0 = time.process_time()
    train_cohort(data, spec, conv)
    return (time.process_time() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--activations", nargs="+", default=["relu", "elu", "gelu", "tanh"])
    parser.add_argument("--depths", nargs="+", type=int, default=[1, 3, 6])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist1d")
    print(
        f"{'activation':10s} {'depth':>5s} {'alone ms':>9s} {'cohort ms':>10s} {'member/alone':>13s}"
    )
    for act in args.activations:
        for depth in args.depths:
            a = min(alone(data, act, depth, args.steps) for _ in range(3))
            c = min(cohort(data, act, depth, args.members, args.steps) for _ in range(3))
            ratio = c / (args.members * a)
            print(f"{act:10s} {depth:5d} {a * 1e3:9.3f} {c * 1e3:10.3f} {ratio:13.2f}")


if __name__ == "__main__":
    main()
