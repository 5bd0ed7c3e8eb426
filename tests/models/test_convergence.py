"""Convergence summaries and scores on hand-made curves."""

from __future__ import annotations

import math
import pickle

import pytest

from models import Convergence, ConvergenceSummary, check, score, summarize

CONV = Convergence(target_loss=0.5, max_steps=100, eval_every=10)
NAN, INF = math.nan, math.inf


def _steps(n: int, conv: Convergence = CONV) -> list[int]:
    return [conv.eval_every * (i + 1) for i in range(n)]


def test_reached_at_first_point_at_or_below_target() -> None:
    losses = [2.0, 1.0, 0.7, 0.5, 0.3, 9.9]  # 0.5 counts (<=); the point after the stop is ignored
    s = summarize(_steps(6), losses, None, 2.3, CONV)
    assert s.reached and s.steps_to_target == 40 and s.steps_trained == 40
    assert not s.diverged and s.diverged_step is None
    assert s.final_loss == 0.5 and s.best_loss == 0.5 and s.initial_loss == 2.3
    assert s.auc_log_loss == pytest.approx(10 * sum(math.log(v) for v in losses[:4]))
    assert s.final_accuracy is None
    assert score(s, CONV) == 40.0


def test_censored_runs_to_max_steps() -> None:
    losses = [2.0, 1.5, 1.0, 0.9, 0.8, 0.7, 0.65, 0.6, 0.62, 0.61]
    s = summarize(_steps(10), losses, None, 2.3, CONV)
    assert not s.reached and not s.diverged and s.steps_to_target is None
    assert s.steps_trained == 100 and s.final_loss == 0.61 and s.best_loss == 0.6
    assert score(s, CONV) == pytest.approx(100 * (1 + math.log(0.6 / 0.5)))


def test_diverged_by_nan_records_the_exact_step() -> None:
    losses = [2.0, 1.5, NAN]
    s = summarize(_steps(3), losses, None, 2.3, CONV, diverged_step=27)
    assert s.diverged and s.diverged_step == 27 and s.steps_trained == 30
    assert not s.reached and s.final_loss == 1.5 and s.best_loss == 1.5
    assert s.auc_log_loss == pytest.approx(10 * (math.log(2.0) + math.log(1.5)))
    # Without the exact step, the evaluation step stands in for it.
    assert summarize(_steps(3), losses, None, 2.3, CONV).diverged_step == 30


def test_diverged_by_explosion_at_the_evaluation_step() -> None:
    s = summarize(_steps(4), [2.0, 5.0, 23.1, 0.1], None, 2.3, CONV)  # 23.1 > 10 * 2.3
    assert s.diverged and s.diverged_step == 30 and s.steps_trained == 30
    assert s.best_loss == 2.0 and s.final_loss == 23.1
    assert summarize(_steps(2), [2.0, 23.0], None, 2.3, CONV).diverged is False  # 23 == 10 * 2.3


def test_diverged_step_must_be_consistent() -> None:
    with pytest.raises(ValueError, match="outside the window"):
        summarize(_steps(3), [2.0, 1.5, NAN], None, 2.3, CONV, diverged_step=15)
    with pytest.raises(ValueError, match="explosion"):
        summarize(_steps(2), [2.0, 50.0], None, 2.3, CONV, diverged_step=15)
    with pytest.raises(ValueError, match="never diverges"):
        summarize(_steps(2), [2.0, 1.0], None, 2.3, CONV, diverged_step=15)


def test_accuracy_target() -> None:
    conv = Convergence(target_loss=None, target_accuracy=0.9, max_steps=100, eval_every=10)
    accs = [0.3, 0.6, 0.85, 0.9, 0.95]
    s = summarize(_steps(5, conv), [2.0, 1.2, 0.8, 0.6, 0.4], accs, 2.3, conv)
    assert s.reached and s.steps_to_target == 40 and s.final_accuracy == 0.9
    assert score(s, conv) == 40.0
    censored = summarize(_steps(10, conv), [1.0] * 10, [0.5] * 9 + [0.8], 2.3, conv)
    assert not censored.reached and censored.best_accuracy == 0.8
    # g = ln(error / target error) = ln(0.2 / 0.1)
    assert score(censored, conv) == pytest.approx(100 * (1 + math.log(2)))
    worse = summarize(_steps(10, conv), [1.0] * 10, [0.5] * 10, 2.3, conv)
    assert score(worse, conv) > score(censored, conv)
    with pytest.raises(ValueError, match="needs accuracies"):
        check(0.4, None, 2.3, conv)


def test_check_divergence_comes_before_target() -> None:
    assert check(0.4, None, 2.3, CONV) == "reached"
    assert check(0.6, None, 2.3, CONV) == "running"
    assert check(NAN, None, 2.3, CONV) == "diverged"
    assert check(INF, None, 2.3, CONV) == "diverged"
    assert check(0.4, None, NAN, CONV) == "diverged"  # a non-finite step-1 loss is divergence
    assert check(0.4, None, 0.01, CONV) == "diverged"  # exploded relative to the start


def _summary(**overrides: object) -> ConvergenceSummary:
    base: dict[str, object] = dict(
        reached=False,
        steps_to_target=None,
        diverged=False,
        diverged_step=None,
        initial_loss=2.3,
        final_loss=1.0,
        best_loss=1.0,
        final_accuracy=None,
        auc_log_loss=0.0,
        steps_trained=100,
    )
    return ConvergenceSummary(**{**base, **overrides})  # type: ignore[arg-type]


def test_score_orders_reached_censored_diverged() -> None:
    reached_late = score(_summary(reached=True, steps_to_target=100, best_loss=0.5), CONV)
    censored_close = score(_summary(best_loss=0.5000001), CONV)
    censored_far = score(_summary(best_loss=1e300), CONV)
    diverged_good = score(_summary(diverged=True, diverged_step=10, best_loss=0.5000001), CONV)
    diverged_none = score(_summary(diverged=True, diverged_step=10, best_loss=NAN), CONV)
    assert reached_late == 100.0
    assert reached_late < censored_close < censored_far <= 51 * 100 < diverged_good < diverged_none
    assert diverged_none == pytest.approx(100 * 51 + 51 * 100)


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_scores_are_finite_for_non_finite_inputs(bad: float) -> None:
    curves = [[bad] * 3, [1.0, bad, bad], [bad, 1.0, 0.2]]
    for losses in curves:
        for initial in (2.3, bad):
            s = summarize(_steps(3), losses, None, initial, CONV)
            assert math.isfinite(score(s, CONV))
            assert s.diverged or s.reached or s.steps_trained == 30
    for field in ("best_loss", "final_loss", "initial_loss"):
        assert math.isfinite(score(_summary(**{field: bad}), CONV))
        assert math.isfinite(score(_summary(diverged=True, **{field: bad}), CONV))
    conv = Convergence(target_loss=None, target_accuracy=1.0, max_steps=100, eval_every=10)
    assert math.isfinite(score(_summary(best_accuracy=bad), conv))
    s = summarize(_steps(2, conv), [1.0, 1.0], [bad, 0.5], 2.3, conv)
    assert math.isfinite(score(s, conv))


def test_zero_loss_keeps_the_auc_finite() -> None:
    s = summarize(_steps(1), [0.0], None, 1.0, CONV)
    assert s.reached and math.isfinite(s.auc_log_loss)


def test_empty_curve_is_censored_at_step_zero() -> None:
    s = summarize([], [], None, 2.3, CONV)
    assert not s.reached and not s.diverged and s.steps_trained == 0 and s.best_loss == 2.3


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(target_loss=0.5, target_accuracy=0.9),
        dict(target_loss=None),
        dict(target_loss=0.0),
        dict(target_loss=None, target_accuracy=1.5),
        dict(max_steps=110, eval_every=25),
        dict(eval_every=0),
        dict(divergence_factor=1.0),
        dict(divergence_factor=NAN),
    ],
)
def test_convergence_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Convergence(**kwargs)  # type: ignore[arg-type]


def test_configs_pickle_and_curves_are_validated() -> None:
    assert pickle.loads(pickle.dumps(CONV)) == CONV
    s = summarize(_steps(1), [0.4], None, 1.0, CONV)
    assert pickle.loads(pickle.dumps(s)) == s
    with pytest.raises(ValueError, match="eval_every multiples"):
        summarize([5, 10], [1.0, 1.0], None, 2.0, CONV)
    with pytest.raises(ValueError, match="same length"):
        summarize(_steps(2), [1.0], None, 2.0, CONV)
