"""Untrusted state: state directories and files are created private, and existing state another
user could have written is refused (never repaired), before anything is written."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from search.cli import main
from search.errors import SpecError
from search.orchestrate import optuna_storage
from search.paths import (
    check_private,
    check_private_tree,
    private_dir,
    state_dir,
    unsafe_reason,
)
from search.spec import parse_spec
from tests.search.conftest import write_spec


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its mode and size: 'nothing written, nothing repaired'."""
    return {
        str(p.relative_to(root)): (stat.S_IMODE(p.lstat().st_mode), p.lstat().st_size)
        for p in sorted(root.rglob("*"))
    }


def _fake_stat(mode: int, uid: int) -> os.stat_result:
    # (st_mode, st_ino, st_dev, st_nlink, st_uid, st_gid, st_size, st_atime, st_mtime, st_ctime)
    return os.stat_result((stat.S_IFDIR | mode, 1, 1, 2, uid, uid, 0, 0, 0, 0))


def test_unsafe_reason_owner_and_mode() -> None:
    me = os.getuid()
    assert unsafe_reason(_fake_stat(0o700, me), me) is None
    assert unsafe_reason(_fake_stat(0o755, me), me) is None  # readable is fine; writable is not
    for mode in (0o720, 0o702, 0o777, 0o770):
        reason = unsafe_reason(_fake_stat(mode, me), me)
        assert reason is not None and f"{mode:04o}" in reason
    other = unsafe_reason(_fake_stat(0o700, me + 1), me)
    assert other is not None and f"uid {me + 1}" in other


def test_new_state_dirs_and_journal_are_private_even_with_an_open_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = private_dir(tmp_path / "a" / "state")
        journal = tmp_path / "a" / "state" / "optuna.journal"
        optuna_storage(str(journal))
    finally:
        os.umask(old)
    assert _mode(made) == 0o700
    assert journal.exists() and _mode(journal) == 0o600
    assert private_dir(made) == made  # an existing private dir is accepted as it is


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_existing_writable_state_dir_is_refused_not_repaired(tmp_path: Path, mode: int) -> None:
    state = tmp_path / ".actsweep"
    state.mkdir()
    os.chmod(state, mode)
    with pytest.raises(SpecError) as info:
        state_dir(f"sqlite:///{tmp_path / 'mlflow.db'}")
    msg = info.value.one_line()
    assert str(state) in msg and f"{mode:04o}" in msg and "chmod go-w" in msg
    assert "\n" not in msg
    assert _mode(state) == mode  # refused, not silently chmod-ed


def test_actsweep_home_is_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o777)
    monkeypatch.setenv("ACTSWEEP_HOME", str(home))
    with pytest.raises(SpecError, match="ACTSWEEP_HOME: .*writable by group or others"):
        state_dir("http://127.0.0.1:5000")


def test_tree_check_finds_a_writable_file_deep_inside(tmp_path: Path) -> None:
    deep = private_dir(tmp_path / "tune") / "exp" / "trial"
    deep.mkdir(parents=True)
    pickle = deep / "searcher-state.pkl"
    pickle.write_bytes(b"\x80\x04N.")
    assert check_private_tree(tmp_path / "tune") == tmp_path / "tune"
    os.chmod(pickle, 0o666)
    with pytest.raises(SpecError, match="searcher-state.pkl is writable by group or others"):
        check_private_tree(tmp_path / "tune")
    assert check_private(tmp_path / "missing") == tmp_path / "missing"  # nothing to restore


def _cli_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: dict[str, Any]
) -> tuple[int, str]:
    path = write_spec(tmp_path / "spec.yaml", spec)
    code = main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "where", ["state_dir", "journal", "tune_file", "tune_dir", "spool_dir", "spool_file"]
)
def test_actsweep_run_refuses_tampered_state_with_exit_2_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    base_spec: dict[str, Any],
    where: str,
) -> None:
    monkeypatch.delenv("ACTSWEEP_HOME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    search_id = parse_spec(base_spec).search_id
    state = tmp_path / ".actsweep"
    state.mkdir(mode=0o700)
    journal = state / "optuna.journal"
    journal.write_text("")
    os.chmod(journal, 0o600)
    experiment = state / "tune" / search_id
    experiment.mkdir(parents=True)
    (experiment / "experiment_state.json").write_text("{}")
    spooled = state / "spool" / search_id
    spooled.mkdir(parents=True)
    (spooled / "cohort-1.json").write_text("{}")
    bad = {
        "state_dir": state,
        "journal": journal,
        "tune_file": experiment / "experiment_state.json",
        "tune_dir": experiment,
        "spool_dir": state / "spool",
        "spool_file": spooled / "cohort-1.json",
    }[where]
    os.chmod(bad, 0o777 if bad.is_dir() else 0o666)
    before = _snapshot(tmp_path)
    code, err = _cli_run(tmp_path, capsys, base_spec)
    assert code == 2
    assert err.startswith("actsweep: error: ") and err.count("\n") == 1
    assert str(bad) in err and "writable by group or others" in err
    assert "Traceback" not in err
    after = _snapshot(tmp_path)
    after.pop("spec.yaml")
    assert after == before  # no mlflow.db, no repaired modes, no new state
    assert not (tmp_path / "mlflow.db").exists()


def test_server_state_dir_is_refused_when_writable(tmp_path: Path) -> None:
    from deploy.server import ServerConfig, write_auth_config

    state = tmp_path / "server"
    state.mkdir()
    os.chmod(state, 0o777)
    cfg = ServerConfig(backend_store_uri="postgresql://u:p@127.0.0.1:5432/m", state_dir=state)
    with pytest.raises(SpecError, match="writable by group or others"):
        write_auth_config(cfg)
    assert not (state / "basic_auth.ini").exists()
