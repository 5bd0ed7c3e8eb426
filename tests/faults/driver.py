"""Running `actsweep` (with the oracle trainable) as a real process, and killing it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def driver_env(cwd: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This interpreter's environment with a private HOME (Ray's token, ~/.actsweep) and
    this checkout first on the path (for the Ray workers too)."""
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ)
    for name in ("MLFLOW_TRACKING_URI", "ACTSWEEP_HOME", "RAY_ADDRESS"):
        env.pop(name, None)
    env.update(HOME=str(home), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def start(
    cwd: Path, oracle: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`actsweep ARGS` with the oracle trainable, in its own session (so it can be killed
    with everything it started); stdout and stderr go to files in `cwd`."""
    n = len(list(cwd.glob("driver-*.out")))
    out = (cwd / f"driver-{n}.out").open("w")
    err = (cwd / f"driver-{n}.err").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.run_oracle", str(oracle), *args],
        cwd=cwd,
        env=driver_env(cwd, env),
        stdout=out,
        stderr=err,
        text=True,
        start_new_session=True,
    )


def run(
    cwd: Path, oracle: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[int, str, str]:
    """`actsweep ARGS` with the oracle trainable, to the end: (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.faults.run_oracle", str(oracle), *args],
        cwd=cwd,
        env=driver_env(cwd, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every process we can see (/proc)."""
    out: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), int(fields[3]))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie is dead, awaiting its parent


def kill_session(proc: subprocess.Popen[str]) -> int:
    """SIGKILL the driver and every process it started (its Ray: GCS, raylet, workers):
    its session, plus descendants that made a session of their own. Returns how many."""
    procs = _processes()
    victims = {pid for pid, (_, sid) in procs.items() if sid == proc.pid}
    victims.add(proc.pid)
    while True:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in victims} - victims
        if not more:
            break
        victims |= more
    victims.discard(os.getpid())
    for pid in sorted(victims, key=lambda pid: pid != proc.pid):  # the driver first
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(30)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(victims)


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 300) -> T:
    """Poll `probe` until it returns something (a readiness wait, never an assertion on time)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def driver_tracebacks(stderr: str) -> list[str]:
    """Traceback lines of the driver itself. Ray forwards its workers' output prefixed with
    "(trainable pid=...)"; a worker's noise at shutdown (SIGTERM) is not the driver's."""
    return [line for line in stderr.splitlines() if "Traceback" in line and " pid=" not in line]
