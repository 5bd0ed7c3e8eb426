"""Training a cohort: M MLPs of one shape trained together in one batched model until each
reaches its convergence target, diverges, or runs out of steps.

Members differ only in (init, lr, seed). Everything a member sees -- initial weights, data
order, updates -- depends only on its own fields, so a member's outcome is the same whether it
is trained alone or with others, and two cohorts that differ only in the activation see the same
data order member by member (paired comparisons).

- Initial weights: `build_cohort` (``torch.Generator().manual_seed(seed)``, CPU), then moved.
- Data order: a member-owned ``torch.Generator().manual_seed(seed + 7919)`` -- offset by a prime
  so the data stream is not the init stream replayed -- draws a fresh ``randperm`` of the train
  set each epoch; batches are consecutive slices of it; the last partial batch is dropped.
- Loss: cross entropy (classification) or MSE (regression), mean over the batch, per member.
  Backward runs on the sum of member losses, so each member's gradient is exactly its own, after
  non-finite member losses are replaced by 0 so a diverging member never disturbs the others.
- Optimizers are written by hand and vectorised over members with a per-member learning rate
  (M, 1, 1): ``sgd`` (p -= lr g), ``momentum`` (heavy ball, PyTorch convention:
  buf = mu buf + g, p -= lr buf) and ``adam`` (betas 0.9/0.999, eps 1e-8, bias-corrected,
  PyTorch's formula).
- Member losses are written to a device buffer every step and copied to the CPU once per
  evaluation point (no per-step sync). Members that stop are recorded, then removed from the
  model, the optimizer state and the lr tensor (compaction), so the rest run faster.

Step and evaluation semantics are those of `models.convergence`. No global RNG is used.

Threads are the caller's choice: these tensors are tiny, and on a busy machine OpenMP worker
threads spin-waiting for cores cost far more than they give (measured on 2 busy cores: a test
suite of such cohorts took 187 s with 2 torch threads and 15 s with 1). Workers that run cohorts
side by side should call ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from models import backprop
from models.activations import get_activation
from models.convergence import Convergence, ConvergenceSummary, Status, check, summarize
from models.datasets import Dataset
from models.initializers import get_initializer
from models.mlp import CohortMLP, MLPShape, build_cohort
from models.registry import lookup

__all__ = [
    "DATA_SEED_OFFSET",
    "OPTIMIZERS",
    "CohortSpec",
    "EvalHook",
    "LossFault",
    "Member",
    "RunResult",
    "train_cohort",
]

OPTIMIZERS: tuple[str, ...] = ("sgd", "momentum", "adam")
DATA_SEED_OFFSET = 7919
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

EvalHook = Callable[[int, CohortMLP, Sequence[int]], None]
"""Called at every evaluation point as hook(step, model, active), where ``active[j]`` is the
original member index of model position j; it may read the model and take gradients with
``torch.autograd.grad`` but must not change parameters (models.diagnostics uses it)."""


LossFault = Callable[[int, Sequence[int], Tensor], Tensor]
"""Test seam: fault(step, active, losses) -> losses, called once per optimizer step (step is
1-based) with the per-member minibatch losses (M,) before anything records them or takes
their gradient; ``active[j]`` is the original member index of position j. Fault tests use it
to make chosen members' losses NaN or infinite at chosen steps: the loss is recorded as it is
returned, and a non-finite one zeroes that member's gradient, on the autograd path and on the
hand-written one (models.backprop) alike.
Production code never passes it."""


@dataclass(frozen=True)
class Member:
    """One configuration trained inside a cohort."""

    init: str
    """An `INITIALIZERS` name (``auto`` allowed)."""
    lr: float
    """Learning rate (> 0)."""
    seed: int
    """Drives both the init stream (seed) and the data order (seed + 7919)."""
    depth: int | None = None
    """This member's hidden layers when it differs from the cohort's (at most the cohort's
    depth; see models.mlp on mixed depths). None: the cohort's depth."""

    def __post_init__(self) -> None:
        get_initializer(self.init)
        if self.depth is not None and self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr}")


@dataclass(frozen=True)
class CohortSpec:
    """What the members of a cohort share."""

    activation: str
    depth: int
    """Hidden layers."""
    width: int
    """Units per hidden layer."""
    optimizer: str
    """One of `OPTIMIZERS`."""
    momentum: float = 0.9
    """Heavy-ball coefficient, used by ``momentum`` only."""
    batch_size: int = 128
    members: tuple[Member, ...] = ()

    def __post_init__(self) -> None:
        get_activation(self.activation)
        lookup({name: name for name in OPTIMIZERS}, self.optimizer, "optimizer")
        object.__setattr__(self, "optimizer", self.optimizer.strip().lower())
        # Accept any sequence but store a tuple: the spec must stay hashable and immutable.
        object.__setattr__(self, "members", tuple(self.members))
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        deeper = [m.depth for m in self.members if m.depth is not None and m.depth > self.depth]
        if deeper:
            raise ValueError(f"member depths {deeper} exceed the cohort's depth {self.depth}")

    @property
    def depths(self) -> list[int]:
        """Each member's own depth."""
        return [self.depth if m.depth is None else m.depth for m in self.members]


@dataclass(frozen=True)
class RunResult:
    """The outcome of one member. Curves have one entry per evaluation point."""

    member: Member
    steps: tuple[int, ...]
    train_loss: tuple[float, ...]
    """Smoothed train loss; non-finite values are kept as they were (nan / inf)."""
    train_accuracy: tuple[float, ...] | None
    """Smoothed train accuracy; None for regression."""
    summary: ConvergenceSummary
    val_loss: float | None
    """One validation pass when the member stopped; None if it diverged or the value is not
    finite."""
    val_accuracy: float | None
    wall_seconds: float
    """From the start of train_cohort to the moment this member stopped."""
    step_limit: int = 0
    """The step budget the member ran under: max_steps, or less when early stopping (stop_at,
    race) censored it because it could no longer beat a run that reached the target."""


class _CohortOptimizer:
    """SGD / heavy-ball momentum / Adam over cohort parameters with a per-member lr."""

    def __init__(self, kind: str, params: Sequence[Tensor], lr: Tensor, momentum: float) -> None:
        if any(p.dim() != 3 for p in params):
            raise ValueError("cohort parameters must all be (M, ., .) so lr (M, 1, 1) broadcasts")
        self.kind = kind
        self.lr = lr  # (M, 1, 1)
        self.momentum = momentum
        self.t = 0
        slots = {"sgd": 0, "momentum": 1, "adam": 2}[kind]
        self.state: list[list[Tensor]] = [
            [torch.zeros_like(p) for _ in range(slots)] for p in params
        ]

    @torch.no_grad()
    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
        self.t += 1
        if self.kind == "adam":
            beta1, beta2 = ADAM_BETAS
            step_size = self.lr / (1.0 - beta1**self.t)  # (M, 1, 1)
            bc2_sqrt = math.sqrt(1.0 - beta2**self.t)
        for p, g, state in zip(params, grads, self.state, strict=True):
            lr = self.lr
            k = g.shape[0]
            if k < p.shape[0]:
                # A gradient of the k leading members only (models.backprop): the others' rows
                # have exactly zero gradient, and so zero state, so updating them would leave
                # them unchanged under every rule here. Only the k rows are touched.
                p, lr = p[:k], lr[:k]
                state = [s[:k] for s in state]
            if self.kind == "sgd":
                p.sub_(lr * g)
            elif self.kind == "momentum":
                (buf,) = state
                buf.mul_(self.momentum).add_(g)
                p.sub_(lr * buf)
            else:
                exp_avg, exp_avg_sq = state
                exp_avg.mul_(beta1).add_(g, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(ADAM_EPS)
                p.sub_(step_size[:k] * (exp_avg / denom))

    def select(self, keep: Tensor) -> None:
        self.lr = self.lr.index_select(0, keep)
        self.state = [[s.index_select(0, keep) for s in state] for state in self.state]


@dataclass
class _Record:
    """What is known about one member while it trains."""

    member: Member
    initial_loss: float = math.nan
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)


def _member_losses(out: Tensor, y: Tensor, classification: bool) -> tuple[Tensor, Tensor | None]:
    """Per-member mean loss (M,) and accuracy (M,) (None for regression) of (M, B, .) outputs."""
    if classification:
        # Classes on dimension 1 of a contiguous (M, C, B): PyTorch's CPU log-softmax over a
        # contiguous innermost dimension of ~10 classes is an order of magnitude slower than
        # over dimension 1, which far outweighs this small copy (and its backward's).
        ce = F.cross_entropy(out.transpose(1, 2).contiguous(), y, reduction="none")  # (M, B)
        accuracy = (out.argmax(dim=-1) == y).float().mean(dim=1)
        return ce.mean(dim=1), accuracy
    return (out - y).square().mean(dim=(1, 2)), None


def _validate(
    model: CohortMLP, x_val: Tensor, y_val: Tensor, classification: bool
) -> tuple[Tensor, Tensor | None]:
    with torch.no_grad():
        out = model(x_val.unsqueeze(0).expand(model.members, -1, -1))
        y = y_val.unsqueeze(0).expand(model.members, *y_val.shape)
        return _member_losses(out, y, classification)


def train_cohort(
    data: Dataset,
    cohort: CohortSpec,
    conv: Convergence,
    device: str | torch.device = "cpu",
    *,
    stop_at: int | None = None,
    race: bool = False,
    on_eval: EvalHook | None = None,
    loss_fault: LossFault | None = None,
) -> list[RunResult]:
    """Train every member of ``cohort`` on ``data``; results in member order.

    Early stopping for searches, where only the fastest configuration matters:
    - ``stop_at``: members still running at this step stop there (censored), because they can
      no longer beat a run that already reached the target at ``stop_at`` (rounded down to an
      evaluation point);
    - ``race``: once any member reaches the target at step s, the members still running stop
      at s too, for the same reason.
    Both only censor runs that cannot win; neither changes what any member computes.

    ``on_eval`` (optional) runs at every evaluation point, before members stop, so it sees
    every member's last point too; it is the only extension point and never runs per step.
    ``loss_fault`` is a test seam (see `LossFault`); None in production.
    """
    start = time.perf_counter()
    if not cohort.members:
        raise ValueError("the cohort has no members")
    classification = data.task == "classification"
    if conv.target_accuracy is not None and not classification:
        raise ValueError(f"an accuracy target needs a classification task; {data.name} is not")
    n_train = data.x_train.shape[0]
    batch = cohort.batch_size
    if batch > n_train:
        raise ValueError(f"batch_size {batch} exceeds the {n_train} training examples")
    batches_per_epoch = n_train // batch
    device = torch.device(device)

    shape = MLPShape(
        data.in_features, data.out_features, cohort.width, cohort.depth, cohort.activation
    )
    members = cohort.members
    depths = cohort.depths
    if max(depths) < cohort.depth:
        # The deepest member sets the cohort's depth: no layer is identity for everyone.
        shape = dataclasses.replace(shape, depth=max(depths))
    # Model positions hold the members deepest first, so a mixed-depth cohort computes each
    # layer only for the members that have it (models.mlp); `active` maps positions back.
    order = sorted(range(len(members)), key=lambda i: -depths[i])
    model = build_cohort(
        shape,
        [members[i].init for i in order],
        [members[i].seed for i in order],
        [depths[i] for i in order],
    ).to(device)
    params = list(model.parameters())
    # Without autograd where the derivatives are known (models.backprop); regression
    # cohorts keep the autograd path.
    by_hand = classification and backprop.supports(model)
    lr = torch.tensor([members[i].lr for i in order], dtype=torch.float32, device=device)
    lr = lr.view(-1, 1, 1)
    optimizer = _CohortOptimizer(cohort.optimizer, params, lr, cohort.momentum)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)

    data_streams = [
        torch.Generator().manual_seed(members[i].seed + DATA_SEED_OFFSET) for i in order
    ]
    records = [_Record(m) for m in members]
    results: list[RunResult | None] = [None] * len(members)
    active = list(order)  # original member index of each model position

    def buffers(width: int) -> tuple[Tensor, Tensor]:
        return (
            torch.empty(conv.eval_every, width, device=device),
            torch.empty(conv.eval_every, width, device=device),
        )

    loss_buf, acc_buf = buffers(len(active))  # (eval_every, M): one row per step in the window
    perm = torch.empty(0, dtype=torch.long, device=device)
    step = 0
    limit = conv.max_steps
    if stop_at is not None:
        limit = min(limit, max(conv.eval_every, stop_at - stop_at % conv.eval_every))
    while active and step < limit:
        position = step % batches_per_epoch
        if position == 0:
            perm = torch.stack([torch.randperm(n_train, generator=g) for g in data_streams])
            perm = perm.to(device)  # (M, n_train)
        idx = perm[:, position * batch : (position + 1) * batch].reshape(-1)  # (M * B,)
        x = x_train.index_select(0, idx).view(len(active), batch, -1)  # (M, B, in)
        y = y_train.index_select(0, idx).view(len(active), batch, *y_train.shape[1:])
        accuracy: Tensor | None
        if by_hand:
            seam = None if loss_fault is None else partial(loss_fault, step + 1, list(active))
            losses, accuracy, grads = backprop.cross_entropy_step(model, x, y, seam)
        else:
            out = model(x)  # (M, B, out)
            losses, accuracy = _member_losses(out, y, classification)
            if loss_fault is not None:
                losses = loss_fault(step + 1, active, losses)
            safe = torch.where(torch.isfinite(losses), losses, torch.zeros_like(losses))
            grads = list(torch.autograd.grad(safe.sum(), params))
        row = step % conv.eval_every
        loss_buf[row] = losses.detach()
        if accuracy is not None:
            acc_buf[row] = accuracy
        optimizer.step(params, grads)
        step += 1
        if step % conv.eval_every:
            continue
        if on_eval is not None:
            on_eval(step, model, active)

        # Evaluation point: the window buffers cross to the CPU once each (no per-step sync).
        window = loss_buf.double().cpu()  # (eval_every, M)
        smoothed_loss = window.mean(dim=0).tolist()
        smoothed_acc = acc_buf.double().mean(dim=0).tolist() if classification else None
        stopped: list[tuple[int, int | None, bool]] = []  # (position, diverged_step, diverged)
        statuses: list[tuple[Status, int | None]] = []
        for j, original in enumerate(active):
            record = records[original]
            if step == conv.eval_every:
                record.initial_loss = float(window[0, j])
            acc_j = smoothed_acc[j] if smoothed_acc is not None else None
            record.steps.append(step)
            record.losses.append(smoothed_loss[j])
            if acc_j is not None:
                record.accuracies.append(acc_j)
            status = check(smoothed_loss[j], acc_j, record.initial_loss, conv)
            diverged_step = None
            if status == "diverged":
                bad = (~torch.isfinite(window[:, j])).nonzero()
                if bad.numel():
                    diverged_step = step - conv.eval_every + 1 + int(bad[0, 0])
            statuses.append((status, diverged_step))
        if race and any(st == "reached" for st, _ in statuses):
            limit = step  # everyone still running can only reach the target later
        for j, (st, dstep) in enumerate(statuses):
            if st != "running" or step >= limit:
                stopped.append((j, dstep, st == "diverged"))
        if not stopped:
            continue

        elapsed = time.perf_counter() - start
        val_losses: list[float] | None = None
        val_accs: list[float] | None = None
        if any(not diverged for _, _, diverged in stopped):
            val_l, val_a = _validate(model, x_val, y_val, classification)
            val_losses = val_l.double().cpu().tolist()
            val_accs = val_a.double().cpu().tolist() if val_a is not None else None
        for j, diverged_step, diverged in stopped:
            record = records[active[j]]
            summary = summarize(
                record.steps,
                record.losses,
                record.accuracies if classification else None,
                record.initial_loss,
                conv,
                diverged_step,
            )
            # summarize decides with the same `check` as the loop, so they agree by construction.
            assert summary.diverged == diverged and summary.steps_trained == step
            val_loss = val_acc = None
            if not diverged and val_losses is not None and math.isfinite(val_losses[j]):
                val_loss = val_losses[j]
                val_acc = val_accs[j] if val_accs is not None else None
            results[active[j]] = RunResult(
                member=record.member,
                steps=tuple(record.steps),
                train_loss=tuple(record.losses),
                train_accuracy=tuple(record.accuracies) if classification else None,
                summary=summary,
                val_loss=val_loss,
                val_accuracy=val_acc,
                wall_seconds=elapsed,
                step_limit=limit,
            )

        # Compaction: drop stopped members from the model, optimizer, data order and buffers.
        stopped_positions = {j for j, _, _ in stopped}
        keep = [j for j in range(len(active)) if j not in stopped_positions]
        active = [active[j] for j in keep]
        if not active:
            break
        keep_t = torch.tensor(keep, dtype=torch.long, device=device)
        model.select(keep_t)
        params = list(model.parameters())
        by_hand = by_hand and backprop.supports(model)
        optimizer.select(keep_t)
        perm = perm.index_select(0, keep_t)
        data_streams = [data_streams[j] for j in keep]
        loss_buf, acc_buf = buffers(len(active))

    done = [r for r in results if r is not None]
    assert len(done) == len(members)  # every member stops at the latest at max_steps
    return done
