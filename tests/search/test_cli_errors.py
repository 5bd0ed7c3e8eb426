"""Bad input on the command line: one line naming the field, exit code 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from search.cli import main
from tests.search.conftest import write_spec


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (
            ("space", "activations"),
            ["relu", "swish2"],
            "space.activations[1]: unknown activation 'swish2'; allowed: celu, elu,",
        ),
        (("dataset",), "cifar", "dataset.name: unknown dataset 'cifar'; allowed: digits"),
        (("space", "depth"), {"low": 0, "high": 2}, "space.depth: depth must lie within 1..64"),
        (("space", "lr"), {"low": -1.0, "high": 0.1}, "space.lr.low"),
    ],
)
def test_bad_spec_exits_2_with_one_line_and_no_store(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    base_spec: dict[str, Any],
    path: tuple[str, ...],
    value: Any,
    needle: str,
) -> None:
    node = base_spec
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    spec = write_spec(tmp_path / "bad.yaml", base_spec)
    db = tmp_path / "mlflow.db"
    code, err = _run(capsys, "run", str(spec), "--tracking-uri", f"sqlite:///{db}")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("actsweep: error: ")
    assert needle in err
    assert not db.exists() and not (tmp_path / ".actsweep").exists()


def test_missing_and_malformed_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such file" in err and err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: [\n")
    code, err = _run(capsys, "validate", str(bad))
    assert code == 2 and "malformed YAML at line" in err


def test_bad_tracking_uri(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_spec: dict[str, Any]
) -> None:
    spec = write_spec(tmp_path / "ok.yaml", base_spec)
    code, err = _run(capsys, "run", str(spec), "--tracking-uri", "ftp://somewhere")
    assert code == 2 and "--tracking-uri: unsupported tracking URI" in err and "sqlite://" in err
    code, err = _run(
        capsys, "run", str(spec), "--tracking-uri", f"sqlite:///{tmp_path}/no/such/dir/m.db"
    )
    assert code == 2 and "does not exist" in err


def test_bad_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["leaderboard", "x", "--format", "yaml"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--format" in err and "markdown" in err


def test_unknown_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(
        capsys, "leaderboard", "ghost", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"
    )
    assert code == 2 and "no experiment named 'ghost'" in err


def test_validate_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_spec: dict[str, Any]
) -> None:
    spec = write_spec(tmp_path / "ok.yaml", base_spec)
    assert main(["validate", str(spec)]) == 0
    assert "ok (search tiny-" in capsys.readouterr().out


def test_real_process_exit_code(tmp_path: Path, base_spec: dict[str, Any]) -> None:
    base_spec["space"]["activations"] = ["relu", "bogus"]
    spec = write_spec(tmp_path / "bad.yaml", base_spec)
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", "run", str(spec)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("actsweep: error: space.activations[1]")
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists()
