"""`actsweep ui` starts the real MLflow UI on the tracking store, bound to 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ui_serves_the_store_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # PATH without the venv's bin (as in CI): the UI must not depend on an activated venv.
    path = os.pathsep.join(
        p
        for p in os.environ.get("PATH", "").split(os.pathsep)
        if Path(sys.executable).parent != Path(p)
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME=str(tmp_path), PATH=path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        body = b""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    body = r.read()
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(
                        f"ui exited early: {proc.stdout.read().decode()[-2000:] if proc.stdout else ''}"
                    )
                time.sleep(1)
        assert body.strip() == b"OK"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert b"MLflow" in r.read() or r.status == 200
        # Bound to loopback only: no socket listens on the wildcard address for this port.
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True
        ).stdout
        local = [line.split()[3] for line in listening.splitlines() if line.strip()]
        assert local and all(addr.startswith("127.0.0.1:") for addr in local), listening
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
