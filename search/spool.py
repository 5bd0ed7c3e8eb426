"""The spool: a write-ahead log between "a cohort finished" and "its trials are in MLflow".

The driver writes each finished cohort here (plain JSON, one file per cohort, fsynced and
renamed into place) before it tells Optuna anything, and the MLflow writer deletes the file
once every trial of the cohort is a terminated child run. So whatever dies in between (the
driver, the tracking server), the result is on disk, and resuming (`actsweep run` again) or
`actsweep sync` finishes the job: Optuna trials still RUNNING are told the spooled values,
trials missing from MLflow are logged from the spool.

The directory is private (0700, files 0600) under the store's state directory, one per
search: ``<state_dir>/spool/<search_id>/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from search.errors import SpecError
from search.paths import private_dir, state_dir
from search.searcher import CohortOutcome, MemberOutcome
from search.space import TrialParams
from search.stats import TrialAggregate

FORMAT = 1
_SUFFIX = ".json"
_PARTIAL = ".partial"


def spool_dir(tracking_uri: str, search_id: str) -> Path:
    """Where the spool of one search lives (not created)."""
    return state_dir(tracking_uri) / "spool" / search_id


@contextlib.contextmanager
def search_lock(tracking_uri: str, search_id: str) -> Iterator[Path]:
    """Hold the search's lock file: one driver (run or sync) per search on this machine.

    Two drivers would fail each other's Optuna trials and upload each other's spool. The
    kernel drops the lock when its holder dies (even by SIGKILL), so no stale lock remains.
    """
    path = private_dir(state_dir(tracking_uri) / "spool") / f"{search_id}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecError(
                "spec",
                f"search {search_id} is running in another actsweep process on this machine "
                f"(it holds {path}); wait for it or stop it first",
            ) from None
        yield path
    finally:
        os.close(fd)


def _plain(value: Any) -> Any:
    # Ray hands back plain Python data; numpy scalars or arrays would be the exception.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON data: {type(value).__name__}")


def outcome_to_json(outcome: CohortOutcome) -> str:
    """The cohort as JSON text. Non-finite floats stay NaN/Infinity tokens (Python's json
    round-trips them exactly, and a diverged run's loss curve holds them)."""
    doc = {
        "format": FORMAT,
        "tune_trial_id": outcome.tune_trial_id,
        "study": outcome.study,
        "error": outcome.error,
        "report": outcome.report,
        "members": [
            {
                "params": m.params.to_dict(),
                "seed": m.seed,
                "result": m.result,
                "value": m.value,
                "runs": list(m.runs),
                "seeds": list(m.seeds),
                "aggregate": None if m.aggregate is None else asdict(m.aggregate),
            }
            for m in outcome.members
        ],
    }
    return json.dumps(doc, default=_plain)


def outcome_from_json(text: str) -> CohortOutcome:
    doc = json.loads(text)
    if doc.get("format") != FORMAT:
        raise ValueError(f"unknown spool format {doc.get('format')!r}")
    members = tuple(
        MemberOutcome(
            params=TrialParams(**m["params"]),
            seed=int(m["seed"]),
            result=m["result"],
            value=m["value"],
            runs=tuple(m["runs"]),
            seeds=tuple(int(s) for s in m["seeds"]),
            aggregate=None if m["aggregate"] is None else TrialAggregate(**m["aggregate"]),
        )
        for m in doc["members"]
    )
    return CohortOutcome(
        tune_trial_id=doc["tune_trial_id"],
        study=doc["study"],
        members=members,
        report=doc["report"],
        error=bool(doc["error"]),
    )


def entry_name(outcome: CohortOutcome) -> str:
    """One file per cohort, named by its first Optuna trial (unique within the search)."""
    first = outcome.members[0].params
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", first.activation)
    return f"{safe}-{first.number:06d}{_SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool directory of one search."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, outcome: CohortOutcome) -> Path:
        """Durably add a finished cohort (returns only once it is on disk)."""
        if not outcome.members:
            raise ValueError("a cohort without trials")
        private_dir(self.path)
        final = self.path / entry_name(outcome)
        partial = final.with_suffix(_PARTIAL)
        data = outcome_to_json(outcome).encode()
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, final)  # a reader sees the whole entry or none
        _fsync_dir(self.path)
        return final

    def done(self, outcome: CohortOutcome) -> None:
        """The cohort is in MLflow: drop its entry."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / entry_name(outcome)).unlink()
            _fsync_dir(self.path)

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(self.path.glob(f"*{_SUFFIX}"))

    def entries(self) -> list[CohortOutcome]:
        """Every spooled cohort. A partial file (the driver died while writing it) is a
        result that was never durable, exactly as if the driver had died a moment earlier:
        it is removed, and Optuna marks its trials FAIL on resume."""
        if not self.path.is_dir():
            return []
        for partial in self.path.glob(f"*{_PARTIAL}"):
            partial.unlink(missing_ok=True)
        return [outcome_from_json(p.read_text()) for p in self.files()]

    def trials(self) -> int:
        return sum(len(outcome_from_json(p.read_text()).members) for p in self.files())

    def remove_if_empty(self) -> None:
        if self.path.is_dir() and not any(self.path.iterdir()):
            with contextlib.suppress(OSError):
                self.path.rmdir()


def spooled_values(entries: list[CohortOutcome]) -> dict[str, dict[int, float | None]]:
    """activation -> Optuna trial number -> the value the driver was about to tell Optuna
    (None: FAIL). `orchestrate.open_studies` tells these to trials a dead driver left
    RUNNING: their results are safe here, so they are COMPLETE, not lost."""
    out: dict[str, dict[int, float | None]] = {}
    for outcome in entries:
        for m in outcome.members:
            out.setdefault(m.params.activation, {})[m.params.number] = m.value
    return out
