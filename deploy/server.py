"""The tracking server of server mode: `mlflow server` on PostgreSQL with safe defaults.

One job: turn a few choices (database, artifact store, bind address, allowed hosts, CORS
origins, basic auth) into the exact `mlflow server` command and environment, and refuse
unsafe or unsupported input with a one-line SpecError before anything starts.

Safe defaults, and why:
- bound to 127.0.0.1: a team reaches it through a TLS proxy (deploy/README.md), never
  directly; binding another interface requires naming the hosts clients use (--allowed-hosts).
- MLflow's security middleware (Host-header check against DNS rebinding, CORS) stays on. It
  only exists in the default uvicorn app, so --gunicorn-opts/--waitress-opts (and their
  MLFLOW_* variables) are never passed, and wildcards are refused.
- MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false: nothing here loads pickled models, and a server
  that unpickles uploaded artifacts runs whatever code they carry.
- The database URL (with its password) travels in the environment, not on the command line,
  so `ps` does not show it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from search.errors import SpecError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_ARTIFACTS = "mlartifacts"
BACKEND_SCHEMES = ("postgresql",)
ARTIFACT_SCHEMES = ("s3",)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
AUTH_ENV = ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
# Variables that would switch `mlflow server` away from the uvicorn app (and so silently drop
# the security middleware) or switch the middleware off: never inherited by the server.
_UNSAFE_ENV = (
    "MLFLOW_GUNICORN_OPTS",
    "MLFLOW_WAITRESS_OPTS",
    "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE",
)


@dataclass(frozen=True)
class ServerConfig:
    """Everything `actsweep server` decides; validated by `check_config`."""

    backend_store_uri: str
    """postgresql://USER:PASSWORD@HOST:PORT/DB: runs, params, metrics (and the auth users)."""
    artifacts_destination: str = DEFAULT_ARTIFACTS
    """Where the server stores artifacts it proxies: a local directory, or s3://bucket/prefix."""
    host: str = DEFAULT_HOST
    """Bind address; keep loopback and put a TLS proxy in front (deploy/README.md)."""
    port: int = DEFAULT_PORT
    allowed_hosts: tuple[str, ...] = ()
    """Host headers accepted; empty keeps MLflow's default (localhost and private addresses)."""
    cors_allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed cross-site; empty keeps MLflow's default (localhost origins)."""
    auth: bool = False
    """MLflow basic auth (users in the same database); needs the variables in AUTH_ENV."""
    workers: int = 2
    """uvicorn worker processes (MLflow's default of 4 is a lot for a 2-core machine)."""
    state_dir: Path = field(default_factory=lambda: Path.home() / ".actsweep" / "server")
    """Private directory for the generated basic-auth configuration."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def redact_url(url: str) -> str:
    """The URL without its password (search.tracking.redact's twin, kept here so that
    `actsweep server` does not import torch and MLflow's client just to print a line)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def check_config(cfg: ServerConfig, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Refuse unsupported or unsafe settings (SpecError, one line); return `cfg`."""
    env = os.environ if env is None else env
    uri = cfg.backend_store_uri
    scheme = urlsplit(uri).scheme.split("+")[0] if uri else ""
    if scheme not in BACKEND_SCHEMES:
        shown = redact_url(uri) if uri else "nothing"
        raise SpecError(
            "--backend-store-uri",
            f"server mode keeps runs in PostgreSQL, got {shown} (SQLite is the embedded "
            "default and needs no server: actsweep run SPEC)",
            ["postgresql://USER:PASSWORD@HOST:PORT/DB"],
        )
    if not urlsplit(uri).hostname or not urlsplit(uri).path.strip("/"):
        raise SpecError("--backend-store-uri", f"{redact_url(uri)} names no host or no database")
    dest = cfg.artifacts_destination
    if "://" in dest and dest.split("://", 1)[0] not in ARTIFACT_SCHEMES:
        raise SpecError(
            "--artifacts-destination",
            f"unsupported artifact store {dest!r}",
            ["a local directory", "s3://BUCKET/PREFIX"],
        )
    if not 0 < cfg.port < 65536:
        raise SpecError("--port", f"{cfg.port} is not a TCP port (1..65535)")
    if cfg.workers < 1:
        raise SpecError("--workers", f"needs at least 1 worker, got {cfg.workers}")
    for flag, values in (
        ("--allowed-hosts", cfg.allowed_hosts),
        ("--cors-allowed-origins", cfg.cors_allowed_origins),
    ):
        if "*" in values:
            raise SpecError(flag, "'*' would turn the protection off; list the names instead")
    if cfg.host not in LOOPBACK and not cfg.allowed_hosts:
        raise SpecError(
            "--allowed-hosts",
            f"--host {cfg.host} serves other machines: name the host names clients use "
            "(e.g. --allowed-hosts mlflow.example.com), or keep 127.0.0.1 behind a TLS proxy",
        )
    if cfg.auth:
        missing = [name for name in AUTH_ENV if not env.get(name)]
        if missing:
            raise SpecError(
                "--auth", f"basic auth needs the environment variable(s) {', '.join(missing)}"
            )
    return cfg


def server_command(cfg: ServerConfig, python: str = sys.executable) -> list[str]:
    """The argv of `mlflow server` (the database URL is not in it: see server_env)."""
    dest = cfg.artifacts_destination
    if "://" not in dest:
        dest = str(Path(dest).expanduser().resolve())
    cmd = [
        python,
        "-m",
        "mlflow",
        "server",
        "--host",
        cfg.host,
        "--port",
        str(cfg.port),
        "--workers",
        str(cfg.workers),
        # Clients upload and download artifacts through the server (mlflow-artifacts:/), so
        # they need no credentials for the store and no access to the server's disk.
        "--serve-artifacts",
        "--artifacts-destination",
        dest,
    ]
    if cfg.allowed_hosts:
        cmd += ["--allowed-hosts", ",".join(cfg.allowed_hosts)]
    if cfg.cors_allowed_origins:
        cmd += ["--cors-allowed-origins", ",".join(cfg.cors_allowed_origins)]
    if cfg.auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def auth_config_text(cfg: ServerConfig) -> str:
    """MLflow's basic-auth configuration: users live in the tracking database."""
    # configparser treats % as interpolation; a URL-encoded password may contain it.
    db = cfg.backend_store_uri.replace("%", "%%")
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {db}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )


def write_auth_config(cfg: ServerConfig) -> Path:
    """Write the auth configuration (it holds the database password) owner-only."""
    from search.paths import private_dir

    private_dir(cfg.state_dir)  # created 0o700; an existing one others can write is refused
    path = cfg.state_dir / "basic_auth.ini"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(auth_config_text(cfg))
    return path


def server_env(
    cfg: ServerConfig, base: Mapping[str, str], auth_config: Path | None = None
) -> dict[str, str]:
    """The server's environment: the inherited one, made safe."""
    env = {k: v for k, v in base.items() if k not in _UNSAFE_ENV}
    env["MLFLOW_BACKEND_STORE_URI"] = cfg.backend_store_uri
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    if cfg.auth:
        if auth_config is None:
            raise ValueError("auth needs the path of its configuration file")
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
    return env


def prepare(
    cfg: ServerConfig, base_env: Mapping[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Validate, create the local artifact directory and auth file; return (argv, env)."""
    base = os.environ if base_env is None else base_env
    check_config(cfg, base)
    if "://" not in cfg.artifacts_destination:
        Path(cfg.artifacts_destination).expanduser().mkdir(parents=True, exist_ok=True)
    auth_path = write_auth_config(cfg) if cfg.auth else None
    return server_command(cfg), server_env(cfg, base, auth_path)


def start(
    cfg: ServerConfig, log: IO[bytes] | None = None, base_env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the server in its own process group (stop it with `stop`)."""
    cmd, env = prepare(cfg, base_env)
    return subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 120) -> None:
    """Poll /health until the server answers; raise RuntimeError if it exits or never does."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server at {url} not ready after {timeout:g} s")
        time.sleep(0.5)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Stop a server started by `start`: its whole group (uvicorn forks workers)."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass


# --- the `actsweep server` command ----------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "server",
        help="run the MLflow tracking server of server mode (PostgreSQL, 127.0.0.1)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--backend-store-uri",
        default=os.environ.get("MLFLOW_BACKEND_STORE_URI"),
        help="postgresql://USER:PASSWORD@HOST:PORT/DB (default: $MLFLOW_BACKEND_STORE_URI, "
        "which keeps the password off the command line)",
    )
    p.add_argument(
        "--artifacts-destination",
        default=DEFAULT_ARTIFACTS,
        help="local directory or s3://BUCKET/PREFIX for artifacts (default: ./mlartifacts)",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--allowed-hosts", default=None, help="comma-separated Host headers to accept")
    p.add_argument(
        "--cors-allowed-origins", default=None, help="comma-separated browser origins to allow"
    )
    p.add_argument(
        "--auth",
        action="store_true",
        help="MLflow basic auth (needs MLFLOW_AUTH_ADMIN_PASSWORD and "
        "MLFLOW_FLASK_SERVER_SECRET_KEY in the environment)",
    )
    p.add_argument("--workers", type=int, default=2)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        backend_store_uri=args.backend_store_uri or "",
        artifacts_destination=args.artifacts_destination,
        host=args.host,
        port=args.port,
        allowed_hosts=_csv(args.allowed_hosts),
        cors_allowed_origins=_csv(args.cors_allowed_origins),
        auth=args.auth,
        workers=args.workers,
    )


def main(args: argparse.Namespace) -> int:
    """`actsweep server`: validate, then become `mlflow server` (signals go straight to it)."""
    cfg = config_from_args(args)
    cmd, env = prepare(cfg)
    print(
        f"MLflow tracking server on {cfg.url} (database {redact_url(cfg.backend_store_uri)}, "
        f"artifacts {cmd[cmd.index('--artifacts-destination') + 1]}"
        f"{', basic auth' if cfg.auth else ''}); Ctrl-C to stop",
        flush=True,
    )
    os.execve(cmd[0], cmd, env)
