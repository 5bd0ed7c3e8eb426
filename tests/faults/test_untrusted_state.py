"""Untrusted state end to end: a real search leaves its state private; once another user could
write that state, resuming is refused (exit 2, one line, nothing written); once it is private
again, the same command picks the search up and nothing was lost."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from search.cli import main
from search.spec import parse_spec
from tests.faults.oracle import check_nothing_lost, oracle_trainable


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns)
    return out


def _optuna_states(spec: Any, storage: str) -> list[str]:
    import optuna

    from search.orchestrate import optuna_storage
    from search.space import study_name

    opened = optuna_storage(storage)
    return sorted(
        t.state.name
        for act in spec.space.activations
        for t in optuna.load_study(
            study_name=study_name(spec.search_id, act), storage=opened
        ).get_trials(deepcopy=False)
    )


@pytest.mark.slow
def test_tampered_state_is_refused_then_resumed_once_private(
    tiny_spec: dict[str, Any],
    store: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from search.orchestrate import run_search

    tiny_spec["space"]["activations"] = ["relu"]
    tiny_spec["budget"] = {"trials_per_activation": 2, "cohort_size": 2}
    spec = parse_spec(tiny_spec)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    old_umask = os.umask(0o002)  # a group-writable umask (Debian/Ubuntu user groups)
    try:
        run_search(
            spec,
            tracking_uri=store["tracking_uri"],
            out=None,
            trainable=oracle_trainable(store["oracle"]),
        )
    finally:
        assert os.umask(old_umask) == 0o002  # run_search restored the caller's umask
    state = tmp_path / ".actsweep"
    journal = Path(store["optuna_storage"])
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    experiment = state / "tune" / spec.search_id
    assert experiment.is_dir()  # Tune's pickled state lives here (checked like the rest)
    # Created private whatever the umask: nothing in the state tree is group/other-accessible.
    for p in [state, *state.rglob("*")]:
        assert stat.S_IMODE(p.lstat().st_mode) & 0o077 == 0 or p.is_symlink(), p
    expected: dict[str, Any] = dict(
        tracking_uri=store["tracking_uri"], optuna_storage=store["optuna_storage"]
    )
    counts = check_nothing_lost(store["oracle"], spec, **expected)
    assert counts["child_runs"] == counts["optuna_complete"] == 2
    states = _optuna_states(spec, store["optuna_storage"])
    assert states == ["COMPLETE", "COMPLETE"]

    pickled = next(experiment.rglob("*.pkl"), None) or next(
        p for p in experiment.rglob("*") if p.is_file()
    )
    argv = ["run", str(spec_file), "--tracking-uri", store["tracking_uri"], "--quiet"]
    spool = state / "spool"
    assert spool.is_dir()  # the durable spool (search.spool): replayed on resume and by sync
    for victim, mode in ((state, 0o777), (journal, 0o666), (pickled, 0o664), (spool, 0o770)):
        original = stat.S_IMODE(victim.stat().st_mode)
        os.chmod(victim, mode)
        before = _tree(tmp_path)
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(victim) in err and "writable by group" in err
        assert _tree(tmp_path) == before  # nothing written, nothing "repaired"
        os.chmod(victim, original)
    # Private again: the same command resumes (here: finds the search finished); nothing lost.
    assert main(argv) == 0
    assert "Traceback" not in capsys.readouterr().err
    counts = check_nothing_lost(store["oracle"], spec, **expected)
    assert counts["child_runs"] == counts["optuna_complete"] == 2
    assert _optuna_states(spec, store["optuna_storage"]) == states
