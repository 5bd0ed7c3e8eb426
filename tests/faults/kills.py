"""Faults that kill processes: a worker killing itself mid-training, for the oracle trainable.

The fault object travels to the worker inside the trainable (Ray pickles it), so it holds
only plain data. Which attempts die is decided on disk, with marker files created with
O_EXCL: exactly `times` attempts of the chosen cohort die, whichever worker runs them.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _die_at_first_evaluation() -> None:
    """SIGKILL this process at the cohort's first evaluation point (truly mid-training)."""
    import search.trainable as trainable

    train = trainable.train_cohort

    def dying(*args: Any, on_eval: Any = None, **kwargs: Any) -> Any:
        def hook(step: int, model: Any, active: Any) -> None:
            if on_eval is not None:
                on_eval(step, model, active)
            os.kill(os.getpid(), signal.SIGKILL)

        return train(*args, on_eval=hook, **kwargs)

    # Only this attempt's process ever sees the patch: it dies inside it.
    trainable.train_cohort = dying  # type: ignore[assignment]


@dataclass(frozen=True)
class KillMidTraining:
    """SIGKILL the worker running the cohort that holds Optuna trial (activation, number).

    The first `times` attempts of that cohort die at their first evaluation point; each
    leaves a marker ``kill-<activation>-<number>-<i>`` holding the pid it killed.
    """

    marker_dir: str
    activation: str
    number: int
    times: int = 1

    def __call__(self, config: dict[str, Any]) -> None:
        if config["activation"] != self.activation:
            return
        if self.number not in {int(m["number"]) for m in config["members"]}:
            return
        for i in range(self.times):
            path = Path(self.marker_dir) / f"kill-{self.activation}-{self.number}-{i}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            os.write(fd, str(os.getpid()).encode())
            os.fsync(fd)
            os.close(fd)
            _die_at_first_evaluation()
            return

    def killed_pids(self) -> list[int]:
        found = sorted(Path(self.marker_dir).glob(f"kill-{self.activation}-{self.number}-*"))
        return [int(p.read_text()) for p in found]


@dataclass(frozen=True)
class HoldOnNode:
    """Park the first cohort that starts on the node at address `node_ip` until it is killed.

    It writes ``held.json`` (the cohort's activation and trial numbers, the worker's pid)
    into `marker_dir` once, then sleeps: a test kills the node while the trial runs there.
    Cohorts anywhere else, and any later one on that node, run normally.
    """

    node_ip: str
    marker_dir: str
    hold_s: float = 600.0

    def __call__(self, config: dict[str, Any]) -> None:
        import json
        import time

        import ray

        if ray.util.get_node_ip_address() != self.node_ip:
            return
        path = Path(self.marker_dir) / "held.json"
        try:
            fd = os.open(path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        os.close(fd)
        held = {
            "activation": config["activation"],
            "numbers": [int(m["number"]) for m in config["members"]],
            "pid": os.getpid(),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(held))
        tmp.rename(path)  # whole or absent, for the polling test
        time.sleep(self.hold_s)
