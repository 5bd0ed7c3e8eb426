"""Cohort training end to end on tiny real problems (digits, teacher)."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest

from models import (
    OPTIMIZERS,
    CohortSpec,
    Convergence,
    Member,
    RunResult,
    UnknownNameError,
    load_dataset,
    score,
    train_cohort,
)

CONV = Convergence(target_loss=0.5, max_steps=300, eval_every=25)


def _spec(members: list[Member], optimizer: str = "sgd", activation: str = "tanh") -> CohortSpec:
    return CohortSpec(activation, depth=2, width=32, optimizer=optimizer, members=tuple(members))


def _outcome(r: RunResult) -> tuple[object, ...]:
    return (r.steps, r.train_loss, r.train_accuracy, r.summary, r.val_loss, r.val_accuracy)


def test_sensible_lr_reaches_target_and_results_are_complete() -> None:
    members = [Member("auto", 0.1, 0), Member("auto", 0.1, 1), Member("auto", 0.001, 2)]
    results = train_cohort(load_dataset("digits"), _spec(members, activation="relu"), CONV)
    assert [r.member for r in results] == members
    fast, fast2, slow = results
    for r in (fast, fast2):
        assert r.summary.reached and r.summary.steps_to_target is not None
        assert r.summary.steps_to_target <= 150  # measured: 75-100 steps
        assert r.summary.steps_trained == r.summary.steps_to_target == r.steps[-1]
        assert r.train_loss[-1] <= 0.5 and r.summary.final_loss == r.train_loss[-1]
        assert r.train_accuracy is not None and len(r.train_accuracy) == len(r.steps)
        assert r.val_loss is not None and r.val_accuracy is not None and r.val_accuracy > 0.8
        assert score(r.summary, CONV) == r.summary.steps_to_target
    assert not slow.summary.reached and not slow.summary.diverged  # lr 1e-3 is far too slow
    assert slow.steps == tuple(range(25, 301, 25))
    assert score(slow.summary, CONV) > CONV.max_steps
    # The slow member trained longer; members that stopped early recorded an earlier time.
    assert fast.wall_seconds <= slow.wall_seconds
    assert math.isclose(slow.summary.initial_loss, math.log(10), rel_tol=0.3)
    assert pickle.loads(pickle.dumps(fast)) == fast


@pytest.mark.parametrize(
    ("activation", "nan_loss"),
    [("relu", True), ("tanh", False)],  # measured: relu hits NaN at step 6; tanh explodes
)
def test_diverging_member_does_not_disturb_the_others(activation: str, nan_loss: bool) -> None:
    data = load_dataset("digits")
    calm = [Member("auto", 0.1, 0), Member("xavier_normal", 0.3, 1), Member("orthogonal", 0.03, 3)]
    wild = Member("auto", 50.0, 2)
    with_wild = train_cohort(data, _spec([calm[0], wild, *calm[1:]], activation=activation), CONV)
    without = train_cohort(data, _spec(calm, activation=activation), CONV)
    diverged = with_wild[1]
    assert diverged.member == wild
    assert diverged.summary.diverged and not diverged.summary.reached
    assert diverged.summary.steps_trained == 25
    if nan_loss:  # the exact step of the first non-finite minibatch loss, inside the window
        assert not math.isfinite(diverged.train_loss[-1])
        assert diverged.summary.diverged_step is not None
        assert 1 <= diverged.summary.diverged_step < 25
    else:  # explosion: the evaluation step
        assert diverged.train_loss[-1] > CONV.divergence_factor * diverged.summary.initial_loss
        assert diverged.summary.diverged_step == 25
    assert diverged.val_loss is None and diverged.val_accuracy is None
    assert score(diverged.summary, CONV) > 51 * CONV.max_steps
    # Exact equality: a diverging member changes nothing for the others, not even rounding.
    assert [_outcome(r) for r in (with_wild[0], *with_wild[2:])] == [_outcome(r) for r in without]


def test_member_alone_or_in_a_cohort_gives_the_same_outcome() -> None:
    data = load_dataset("digits")
    members = [
        Member("auto", 0.1, 0),
        Member("kaiming_uniform", 0.3, 1),
        Member("torch_default", 0.03, 2),
        Member("auto", 0.01, 3),
    ]
    spec = _spec(members, optimizer="momentum", activation="gelu")
    together = train_cohort(data, spec, CONV)
    for member, in_cohort in zip(members, together, strict=True):
        (alone,) = train_cohort(data, dataclasses.replace(spec, members=(member,)), CONV)
        assert in_cohort.summary.reached  # measured: all four reach 0.5 within 50-100 steps
        assert alone.summary.reached == in_cohort.summary.reached
        assert alone.summary.diverged == in_cohort.summary.diverged
        if alone.summary.reached:
            assert in_cohort.summary.steps_to_target is not None
            assert alone.summary.steps_to_target is not None
            assert abs(alone.summary.steps_to_target - in_cohort.summary.steps_to_target) <= 25
        n = min(len(alone.train_loss), len(in_cohort.train_loss))
        assert alone.train_loss[:n] == pytest.approx(in_cohort.train_loss[:n], rel=1e-4)


def test_training_is_deterministic() -> None:
    data = load_dataset("digits")
    spec = _spec(
        [Member("auto", 0.003, 0), Member("auto", 0.01, 5)], optimizer="adam", activation="prelu"
    )
    first, second = train_cohort(data, spec, CONV), train_cohort(data, spec, CONV)
    assert [_outcome(r) for r in first] == [_outcome(r) for r in second]


def test_seed_drives_data_order_and_init() -> None:
    data = load_dataset("digits")
    a, b = train_cohort(data, _spec([Member("auto", 0.1, 0), Member("auto", 0.1, 1)]), CONV)
    assert a.train_loss != b.train_loss


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_learns(optimizer: str) -> None:
    lr = {"sgd": 0.3, "momentum": 0.03, "adam": 0.003}[optimizer]
    conv = Convergence(target_loss=0.5, max_steps=150, eval_every=25)
    (r,) = train_cohort(load_dataset("digits"), _spec([Member("auto", lr, 0)], optimizer), conv)
    assert r.summary.reached
    assert r.summary.best_loss < r.summary.initial_loss / 4


def test_regression_and_accuracy_targets() -> None:
    teacher = load_dataset("teacher")
    conv = Convergence(target_loss=0.2, max_steps=100, eval_every=25)
    (r,) = train_cohort(teacher, _spec([Member("auto", 0.01, 0)], "adam"), conv)
    assert r.train_accuracy is None and r.val_accuracy is None and r.val_loss is not None
    assert r.summary.best_loss < r.summary.initial_loss
    acc_conv = Convergence(target_loss=None, target_accuracy=0.9, max_steps=200, eval_every=25)
    with pytest.raises(ValueError, match="classification"):
        train_cohort(teacher, _spec([Member("auto", 0.01, 0)]), acc_conv)
    (c,) = train_cohort(load_dataset("digits"), _spec([Member("auto", 0.3, 0)]), acc_conv)
    assert c.summary.reached and c.train_accuracy is not None and c.train_accuracy[-1] >= 0.9


def test_spec_validation() -> None:
    expected = "unknown optimizer 'rmsprop'; valid: adam, momentum, sgd"
    with pytest.raises(UnknownNameError, match=expected):
        _spec([], optimizer="rmsprop")
    with pytest.raises(UnknownNameError, match="unknown initializer"):
        Member("he", 0.1, 0)
    with pytest.raises(ValueError, match="lr"):
        Member("auto", math.nan, 0)
    with pytest.raises(ValueError, match="no members"):
        train_cohort(load_dataset("digits"), _spec([]), CONV)
    spec = CohortSpec("ReLU", 1, 8, " Adam", members=[Member("auto", 0.1, 0)])  # type: ignore[arg-type]
    assert spec.optimizer == "adam" and isinstance(spec.members, tuple)
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_race_stops_everyone_at_the_first_member_to_reach() -> None:
    data = load_dataset("digits")
    members = [Member("auto", 0.1, 0), Member("auto", 0.01, 1), Member("auto", 0.001, 2)]
    free = train_cohort(data, _spec(members, activation="relu"), CONV)
    raced = train_cohort(data, _spec(members, activation="relu"), CONV, race=True)
    first = min(r.summary.steps_to_target for r in free if r.summary.reached)
    fast = [i for i, r in enumerate(free) if r.summary.steps_to_target == first]
    for i, (a, b) in enumerate(zip(free, raced, strict=True)):
        assert b.step_limit == first
        if i in fast:  # the winner is untouched
            assert _outcome(a) == _outcome(b)
        else:  # the others are censored where the winner reached, with the same prefix
            assert not b.summary.reached and b.summary.steps_trained == first
            assert (
                b.steps == a.steps[: len(b.steps)] and b.train_loss == a.train_loss[: len(b.steps)]
            )
    assert free[0].step_limit == CONV.max_steps


def test_stop_at_censors_runs_that_cannot_win() -> None:
    data = load_dataset("digits")
    members = [Member("auto", 0.1, 0), Member("auto", 0.001, 2)]
    free = train_cohort(data, _spec(members, activation="relu"), CONV)
    fast_steps = free[0].summary.steps_to_target
    assert fast_steps is not None
    # a stratum best equal to the fast member's steps: it still reaches (ties count), the slow one stops
    capped = train_cohort(data, _spec(members, activation="relu"), CONV, stop_at=fast_steps + 7)
    assert _outcome(capped[0]) == _outcome(free[0])
    assert not capped[1].summary.reached and capped[1].summary.steps_trained == fast_steps
    assert capped[1].step_limit == fast_steps  # rounded down to an evaluation point


@pytest.mark.parametrize("activation", ["relu", "elu", "gelu", "tanh"])
def test_a_member_trains_exactly_like_plain_pytorch(activation: str) -> None:
    """The fast path (batched weights, mixed depths, the hand-written momentum step, the
    class-major cross-entropy) against the reference: each member as a plain nn.Sequential
    trained by torch.optim.SGD and F.cross_entropy on the same minibatches."""
    import torch
    import torch.nn.functional as F

    from models.mlp import MLPShape, build_mlp
    from models.train import DATA_SEED_OFFSET

    data = load_dataset("digits")
    conv = Convergence(target_loss=1e-6, max_steps=40, eval_every=5)  # never reached
    members = [
        Member("kaiming_normal", 0.05, 3, depth=3),
        Member("xavier_normal", 0.2, 4, depth=1),
        Member("auto", 0.01, 5, depth=2),
    ]
    cohort = CohortSpec(
        activation, depth=3, width=16, optimizer="momentum", batch_size=32, members=members
    )
    results = train_cohort(data, cohort, conv)
    n = data.x_train.shape[0]
    for member, result in zip(members, results, strict=True):
        assert member.depth is not None
        shape = MLPShape(data.in_features, data.out_features, 16, member.depth, activation)
        model = build_mlp(shape, member.init, member.seed)
        opt = torch.optim.SGD(model.parameters(), lr=member.lr, momentum=0.9)
        gen = torch.Generator().manual_seed(member.seed + DATA_SEED_OFFSET)
        losses, accuracies = [], []
        for step in range(conv.max_steps):
            position = step % (n // 32)
            if position == 0:
                perm = torch.randperm(n, generator=gen)
            idx = perm[position * 32 : (position + 1) * 32]
            out = model(data.x_train[idx])
            loss = F.cross_entropy(out, data.y_train[idx])
            losses.append(loss.item())
            accuracies.append((out.argmax(dim=-1) == data.y_train[idx]).float().mean().item())
            opt.zero_grad()
            loss.backward()
            opt.step()
        windows = range(0, conv.max_steps, conv.eval_every)
        expected_loss = [sum(losses[i : i + conv.eval_every]) / conv.eval_every for i in windows]
        expected_acc = [sum(accuracies[i : i + conv.eval_every]) / conv.eval_every for i in windows]
        assert result.train_loss == pytest.approx(expected_loss, rel=1e-4, abs=1e-6)
        assert result.train_accuracy == pytest.approx(expected_acc, abs=1e-6)
