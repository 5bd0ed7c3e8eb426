"""`actsweep server`'s decisions, without starting anything: the command, its environment,
and the one-line refusals of unsafe or unsupported settings."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from deploy.server import (
    ServerConfig,
    auth_config_text,
    check_config,
    prepare,
    server_command,
    server_env,
)
from search.cli import main
from search.errors import SpecError

DB = "postgresql://actsweep:s3cret@127.0.0.1:5432/mlflow"


def _cfg(tmp_path: Path, **kw: object) -> ServerConfig:
    base: dict[str, object] = {
        "backend_store_uri": DB,
        "artifacts_destination": str(tmp_path / "art"),
        "state_dir": tmp_path / "state",
    }
    base.update(kw)
    return ServerConfig(**base)  # type: ignore[arg-type]


def test_default_command_is_loopback_uvicorn_with_proxied_artifacts(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cmd = server_command(cfg, python="py")
    assert cmd[:4] == ["py", "-m", "mlflow", "server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "5000"
    assert "--serve-artifacts" in cmd
    assert cmd[cmd.index("--artifacts-destination") + 1] == str((tmp_path / "art").resolve())
    # the security middleware exists only in the uvicorn app: nothing may switch it away
    assert not any(
        a in cmd for a in ("--gunicorn-opts", "--waitress-opts", "--disable-security-middleware")
    )
    assert "--app-name" not in cmd
    # the password stays off the command line (ps shows argv to every user)
    assert not any("s3cret" in a for a in cmd)


def test_environment_is_made_safe(tmp_path: Path) -> None:
    inherited = {
        "PATH": "/bin",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        "MLFLOW_GUNICORN_OPTS": "--workers 9",
        "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE": "true",
    }
    env = server_env(_cfg(tmp_path), inherited)
    assert env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    assert env["MLFLOW_BACKEND_STORE_URI"] == DB
    assert "MLFLOW_GUNICORN_OPTS" not in env
    assert "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE" not in env
    assert env["PATH"] == "/bin"


def test_exposed_hosts_and_origins_are_passed_through(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        host="0.0.0.0",
        allowed_hosts=("mlflow.example.com",),
        cors_allowed_origins=("https://nb.example.com",),
    )
    check_config(cfg, {})
    cmd = server_command(cfg)
    assert cmd[cmd.index("--allowed-hosts") + 1] == "mlflow.example.com"
    assert cmd[cmd.index("--cors-allowed-origins") + 1] == "https://nb.example.com"


@pytest.mark.parametrize(
    ("kw", "env", "needle"),
    [
        (
            {"backend_store_uri": "sqlite:///mlflow.db"},
            {},
            "--backend-store-uri: server mode keeps runs in PostgreSQL",
        ),
        ({"backend_store_uri": ""}, {}, "got nothing"),
        (
            {"backend_store_uri": "postgresql://u:pw@127.0.0.1:5432"},
            {},
            "names no host or no database",
        ),
        (
            {"artifacts_destination": "ftp://x/y"},
            {},
            "--artifacts-destination: unsupported artifact store",
        ),
        ({"host": "0.0.0.0"}, {}, "--allowed-hosts: --host 0.0.0.0 serves other machines"),
        ({"allowed_hosts": ("*",)}, {}, "--allowed-hosts: '*' would turn the protection off"),
        ({"cors_allowed_origins": ("*",)}, {}, "--cors-allowed-origins: '*'"),
        ({"port": 70000}, {}, "--port: 70000 is not a TCP port"),
        (
            {"auth": True},
            {"MLFLOW_AUTH_ADMIN_PASSWORD": "x"},
            "--auth: basic auth needs the environment variable(s) MLFLOW_FLASK_SERVER_SECRET_KEY",
        ),
    ],
)
def test_refusals_are_one_line(
    tmp_path: Path, kw: dict[str, object], env: dict[str, str], needle: str
) -> None:
    with pytest.raises(SpecError) as info:
        check_config(_cfg(tmp_path, **kw), env)
    line = info.value.one_line()
    assert needle in line and "\n" not in line
    assert "s3cret" not in line and "pw@" not in line  # passwords are never echoed


def test_auth_config_is_private_and_points_at_the_database(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, auth=True, backend_store_uri="postgresql://a:p%40ss@127.0.0.1:5432/db")
    env = {"MLFLOW_AUTH_ADMIN_PASSWORD": "pw", "MLFLOW_FLASK_SERVER_SECRET_KEY": "k"}
    cmd, server = prepare(cfg, env)
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    path = Path(server["MLFLOW_AUTH_CONFIG_PATH"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    import configparser

    parsed = configparser.ConfigParser()
    parsed.read_string(auth_config_text(cfg))
    assert parsed["mlflow"]["database_uri"] == "postgresql://a:p%40ss@127.0.0.1:5432/db"
    assert parsed["mlflow"]["default_permission"] == "READ"
    assert (tmp_path / "art").is_dir()


def test_cli_refuses_sqlite_with_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(
        [
            "server",
            "--backend-store-uri",
            "sqlite:///x.db",
            "--artifacts-destination",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(
        "actsweep: error: --backend-store-uri: server mode keeps runs in PostgreSQL"
    )
