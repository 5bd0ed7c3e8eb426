"""Live progress of a search: trials done of total, best so far per activation, elapsed."""

from __future__ import annotations

import time
from typing import TextIO

from search.searcher import CohortOutcome


class Progress:
    def __init__(
        self, activations: tuple[str, ...], total: int, done: int, out: TextIO | None
    ) -> None:
        self.total = total
        self.done = done
        self.failed = 0
        self.best: dict[str, int | None] = {a: None for a in activations}
        self.out = out
        self.started = time.monotonic()

    def update(self, outcome: CohortOutcome) -> None:
        for m in outcome.members:
            if m.result is None:
                # Not done: a failed cohort's budget is asked again (search.searcher).
                self.failed += 1
                continue
            self.done += 1
            act = m.params.activation
            # A trial's outcome is its aggregate over seeds (the KM median), not seed 0's.
            agg = m.aggregate
            reached = agg.reached if agg is not None else m.result["summary"]["reached"]
            if reached:
                steps = int(
                    agg.steps_to_target
                    if agg is not None
                    else m.result["summary"]["steps_to_target"]
                )
                cur = self.best.get(act)
                self.best[act] = steps if cur is None else min(cur, steps)
        self.print_line()

    def line(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        width = len(str(self.total))
        best = "  ".join(f"{a} {'-' if b is None else b}" for a, b in self.best.items())
        failed = f"  ({self.failed} failed)" if self.failed else ""
        return f"[{self.done:>{width}}/{self.total} {elapsed // 60}:{elapsed % 60:02d}] best steps: {best}{failed}"

    def print_line(self) -> None:
        if self.out is not None:
            print(self.line(), file=self.out, flush=True)
