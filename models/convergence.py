"""Convergence measurement: when a training curve reached its target, diverged or ran out of
steps, and the single finite number (`score`) the hyperparameter search minimises.

Pure functions over plain numbers; no torch. The training loop and `summarize` both decide with
`check`, so a live run and its recorded curve can never disagree.

Definitions
-----------
- Step t is the t-th optimizer update (t = 1, 2, ...). The loss recorded for step t is the
  minibatch loss of the forward pass just before update t; ``initial_loss`` is the loss of step 1.
- Evaluation happens at steps s = eval_every, 2 * eval_every, ..., max_steps (max_steps must be
  a multiple of eval_every). The smoothed train loss at s is the mean of the minibatch losses of
  steps s - eval_every + 1 .. s; the smoothed accuracy likewise.
- Reached: the smoothed loss is <= target_loss (or the smoothed accuracy >= target_accuracy);
  ``steps_to_target`` is the first evaluation step where that holds.
- Diverged: some minibatch loss is non-finite (``diverged_step`` is that exact step, which the
  training loop knows), or the smoothed loss exceeds divergence_factor * initial_loss
  (``diverged_step`` is that evaluation step). A non-finite initial loss counts as divergence.
  Divergence is checked before the target, so a non-finite or exploded point never counts as
  reached.
- A run stops at the first evaluation that is reached or diverged, or at max_steps (censored).

Score (lower is better, always finite, and ordered reached < censored < diverged)
--------------------------------------------------------------------------------
- reached: steps_to_target (<= max_steps).
- censored: max_steps * (1 + g), g in [1e-6, 50] measures how far the run stayed from target:
    loss target:     g = clip(ln(best_loss / target_loss), 1e-6, 50)
    accuracy target: g = clip(ln(best_error / target_error), 1e-6, 50), error = 1 - accuracy
                     (floored at 1e-6). Like the loss form, halving the error is worth the same
                     wherever it happens, and the two forms share units (log ratios).
  g = 50 when there is no finite best value.
- diverged: the censored value (from the best finite value seen before divergence) plus
  51 * max_steps, so every diverged run scores worse than every censored run (<= 51 * max_steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Convergence", "ConvergenceSummary", "Status", "check", "score", "summarize"]

Status = Literal["reached", "diverged", "running"]

GAP_MIN = 1e-6
GAP_MAX = 50.0
ERROR_FLOOR = 1e-6
# ln(0) is -inf; an exactly-zero smoothed loss (possible with MSE) is floored so the AUC stays
# finite.
LOSS_FLOOR = 1e-12


@dataclass(frozen=True)
class Convergence:
    """What counts as converged, and the budget. Exactly one target must be set.

    For an accuracy target pass ``target_loss=None`` explicitly (the loss target has a default).
    """

    target_loss: float | None = 0.5
    """Reached when the smoothed train loss is <= this."""
    target_accuracy: float | None = None
    """Reached when the smoothed train accuracy is >= this (classification only)."""
    max_steps: int = 1500
    """Optimizer steps before a run is censored; a multiple of eval_every."""
    eval_every: int = 25
    """Steps per evaluation window (smoothing window and decision interval)."""
    divergence_factor: float = 10.0
    """Diverged if the smoothed loss exceeds this times the initial loss."""

    def __post_init__(self) -> None:
        if (self.target_loss is None) == (self.target_accuracy is None):
            raise ValueError(
                "set exactly one of target_loss and target_accuracy (pass target_loss=None "
                f"with target_accuracy); got {self.target_loss!r} and {self.target_accuracy!r}"
            )
        if self.target_loss is not None and not (
            math.isfinite(self.target_loss) and self.target_loss > 0
        ):
            raise ValueError(f"target_loss must be finite and > 0, got {self.target_loss}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.max_steps < self.eval_every or self.max_steps % self.eval_every:
            raise ValueError(
                f"max_steps ({self.max_steps}) must be a positive multiple of eval_every "
                f"({self.eval_every})"
            )
        if not (math.isfinite(self.divergence_factor) and self.divergence_factor > 1):
            raise ValueError(
                f"divergence_factor must be finite and > 1, got {self.divergence_factor}"
            )


@dataclass(frozen=True)
class ConvergenceSummary:
    """The outcome of one run (see the module docstring for the definitions)."""

    reached: bool
    steps_to_target: int | None
    """First evaluation step at target; None when not reached (censored or diverged)."""
    diverged: bool
    diverged_step: int | None
    initial_loss: float
    final_loss: float
    """Last finite smoothed loss up to the stop (initial_loss if none)."""
    best_loss: float
    """Lowest finite smoothed loss up to the stop (initial_loss if none)."""
    final_accuracy: float | None
    """Last finite smoothed accuracy up to the stop (None without accuracies)."""
    auc_log_loss: float
    """Sum over finite evaluation points up to the stop of ln(smoothed loss) * eval_every."""
    steps_trained: int
    """The step at which the run stopped (its last evaluation step)."""
    best_accuracy: float | None = None
    """Highest finite smoothed accuracy up to the stop; scores censored accuracy-target runs."""


def check(loss: float, accuracy: float | None, initial_loss: float, conv: Convergence) -> Status:
    """Decide one evaluation point from its smoothed loss and accuracy."""
    if (
        not math.isfinite(loss)
        or not math.isfinite(initial_loss)
        or loss > conv.divergence_factor * initial_loss
    ):
        return "diverged"
    if conv.target_loss is not None:
        return "reached" if loss <= conv.target_loss else "running"
    assert conv.target_accuracy is not None  # guaranteed by Convergence.__post_init__
    if accuracy is None:
        raise ValueError("an accuracy target needs accuracies (is this a regression task?)")
    if math.isfinite(accuracy) and accuracy >= conv.target_accuracy:
        return "reached"
    return "running"


def summarize(
    steps: Sequence[int],
    losses: Sequence[float],
    accuracies: Sequence[float] | None,
    initial_loss: float,
    conv: Convergence,
    diverged_step: int | None = None,
) -> ConvergenceSummary:
    """Summarise a curve of smoothed values, one per evaluation point.

    Points after the first reached/diverged one are ignored (the run stopped there).

    Args:
        steps: evaluation steps, which must be eval_every, 2 * eval_every, ... (<= max_steps).
        losses: smoothed train loss per point (non-finite values allowed).
        accuracies: smoothed train accuracy per point, or None (regression).
        initial_loss: the minibatch loss of step 1.
        conv: the convergence criteria.
        diverged_step: the exact step of the first non-finite minibatch loss, when the caller
            knows it; only valid if the run stops by divergence at a non-finite point, and must
            lie in that point's window.
    """
    if len(losses) != len(steps) or (accuracies is not None and len(accuracies) != len(steps)):
        raise ValueError("steps, losses and accuracies must have the same length")
    expected = [conv.eval_every * (i + 1) for i in range(len(steps))]
    if list(steps) != expected or (steps and steps[-1] > conv.max_steps):
        raise ValueError(
            f"steps must be eval_every multiples {conv.eval_every}, {2 * conv.eval_every}, ... "
            f"up to max_steps {conv.max_steps}; got {list(steps)[:5]}..."
        )

    status: Status = "running"
    end = len(steps) - 1
    for i in range(len(steps)):
        accuracy = None if accuracies is None else accuracies[i]
        status = check(losses[i], accuracy, initial_loss, conv)
        if status != "running":
            end = i
            break
    points = range(end + 1)
    stop_step = steps[end] if steps else 0

    exact_step: int | None = None
    if status == "diverged":
        exact_step = stop_step
        if diverged_step is not None:
            if math.isfinite(losses[end]) and math.isfinite(initial_loss):
                raise ValueError("diverged_step given, but the run diverged by explosion")
            if not stop_step - conv.eval_every < diverged_step <= stop_step:
                raise ValueError(
                    f"diverged_step {diverged_step} is outside the window ending at {stop_step}"
                )
            exact_step = diverged_step
    elif diverged_step is not None:
        raise ValueError(f"diverged_step {diverged_step} given, but the curve never diverges")

    finite_losses = [losses[i] for i in points if math.isfinite(losses[i])]
    finite_accs = (
        [accuracies[i] for i in points if math.isfinite(accuracies[i])]
        if accuracies is not None
        else []
    )
    return ConvergenceSummary(
        reached=status == "reached",
        steps_to_target=stop_step if status == "reached" else None,
        diverged=status == "diverged",
        diverged_step=exact_step,
        initial_loss=float(initial_loss),
        final_loss=float(finite_losses[-1]) if finite_losses else float(initial_loss),
        best_loss=float(min(finite_losses)) if finite_losses else float(initial_loss),
        final_accuracy=float(finite_accs[-1]) if finite_accs else None,
        auc_log_loss=float(
            sum(math.log(max(loss, LOSS_FLOOR)) for loss in finite_losses) * conv.eval_every
        ),
        steps_trained=stop_step,
        best_accuracy=float(max(finite_accs)) if finite_accs else None,
    )


def _clip_gap(g: float) -> float:
    return min(max(g, GAP_MIN), GAP_MAX)


def _gap(summary: ConvergenceSummary, conv: Convergence) -> float:
    """How far a run that did not reach its target stayed from it, in [GAP_MIN, GAP_MAX]."""
    if conv.target_loss is not None:
        best = summary.best_loss
        if not math.isfinite(best):
            return GAP_MAX
        return _clip_gap(math.log(max(best, LOSS_FLOOR) / conv.target_loss))
    assert conv.target_accuracy is not None
    best_acc = summary.best_accuracy
    if best_acc is None:  # a summary built by hand may carry only the final accuracy
        best_acc = summary.final_accuracy
    if best_acc is None or not math.isfinite(best_acc):
        return GAP_MAX
    error = max(1.0 - best_acc, ERROR_FLOOR)
    target_error = max(1.0 - conv.target_accuracy, ERROR_FLOOR)
    return _clip_gap(math.log(error / target_error))


def score(summary: ConvergenceSummary, conv: Convergence) -> float:
    """The value the search minimises (see the module docstring); always finite."""
    budget = float(conv.max_steps)
    if summary.reached and summary.steps_to_target is not None and not summary.diverged:
        return float(min(max(summary.steps_to_target, 0), conv.max_steps))
    censored = budget * (1.0 + _gap(summary, conv))
    return censored + (GAP_MAX + 1.0) * budget if summary.diverged else censored
