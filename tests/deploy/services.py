"""Throwaway services for the server-mode tests: PostgreSQL, `mlflow server`, Chromium.

Each test session starts its own PostgreSQL (initdb into a temporary directory, pg_ctl on a
free loopback port) and its own MLflow server, and stops exactly the processes it started.
A service that cannot be had on this machine skips its tests, unless
ACTSWEEP_REQUIRE_SERVICES=1 (set by .ci/run), where a skip would hide a missing install
step and so fails instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_ENV = "ACTSWEEP_REQUIRE_SERVICES"


def missing(what: str) -> None:
    """Skip (developer machine) or fail (CI) because `what` is not available."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{what} ({REQUIRE_ENV}=1: CI must not skip server-mode tests)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bindir() -> Path | None:
    """Debian keeps initdb/pg_ctl out of PATH, under /usr/lib/postgresql/VERSION/bin."""
    override = os.environ.get("ACTSWEEP_PG_BINDIR")
    if override:
        return Path(override)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        # autocommit: CREATE DATABASE cannot run inside a transaction.
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL on 127.0.0.1 with password auth, removed afterwards."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install -e '.[dev]')")
    bindir = pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        missing("PostgreSQL server binaries not found (apt-get install postgresql)")
    assert bindir is not None
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as the distribution's postgres user.
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and no 'postgres' user to run PostgreSQL as")
        prefix = ["runuser", "-u", "postgres", "--"]
    # Not under pytest's tmp_path: its parents are root-only, unreadable to postgres.
    root = Path(tempfile.mkdtemp(prefix="actsweep-pg-"))
    password = secrets.token_hex(12)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if owner is not None:
        for path in (root, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    data = root / "data"
    port = free_port()
    log = root / "postgres.log"
    started = False
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "actsweep",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off"
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "120"]
            + ["-o", options, "-l", str(log), "start"],
            check=True,
            capture_output=True,
            timeout=180,
        )
        started = True
        yield Postgres("127.0.0.1", port, "actsweep", password)
    except subprocess.CalledProcessError as err:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL failed: {err.stderr!r} {tail}") from err
    finally:
        if started:
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(root, ignore_errors=True)


def chromium_paths() -> tuple[str, str]:
    """Debian's chromium and chromium-driver (never a downloaded browser)."""
    browser = os.environ.get("ACTSWEEP_CHROMIUM", "/usr/bin/chromium")
    driver = os.environ.get("ACTSWEEP_CHROMEDRIVER", "/usr/bin/chromedriver")
    if not (os.path.exists(browser) and os.path.exists(driver)):
        missing(
            "chromium / chromium-driver not installed (apt-get install chromium chromium-driver)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing("selenium is not installed (pip install -e '.[dev]')")
    return browser, driver
