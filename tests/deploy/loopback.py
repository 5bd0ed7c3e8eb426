"""A real multi-node Ray cluster on this machine's loopback, for tests: one head, N workers.

Each node is its own `ray start --block` process in its own session, with a private
temp dir, free ports and token authentication; stopping it signals only those process
groups (never `ray stop`, which would kill every Ray on a shared machine).

Nodes get distinct loopback addresses in a random 127.A.B.0/24 (head .2, workers .3, ...):
Ray rewrites 127.0.0.1 and localhost to the machine's outward-facing address and leaves the
rest of 127.0.0.0/8 (all loopback on Linux) alone; the random subnet keeps test clusters of
engineers sharing a machine apart. The dashboard, and with it the Jobs API, listens on
127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

OBJECT_STORE_BYTES = 128 * 1024 * 1024


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def loopback_usable(ip: str) -> bool:
    """Whether `ip` can be bound here (macOS has only 127.0.0.1 on lo0 by default)."""
    try:
        with socket.socket() as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


@dataclass
class Node:
    name: str
    ip: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class LoopbackCluster:
    root: Path
    token: str = field(repr=False)
    token_file: Path
    workers: int
    subnet: str = field(
        default_factory=lambda: f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(254) + 1}"
    )
    nodes: list[Node] = field(default_factory=list)
    gcs_address: str = ""
    dashboard_url: str = ""

    @classmethod
    def create(cls, workers: int = 2) -> LoopbackCluster:
        # Short root: Ray's unix sockets live under it and paths are capped near 107 bytes.
        root = Path(tempfile.mkdtemp(prefix="asr", dir="/tmp"))
        token_file = root / "auth_token"
        token = secrets.token_hex(32)
        token_file.write_text(token)
        token_file.chmod(0o600)
        (root / "home").mkdir()
        return cls(root=root, token=token, token_file=token_file, workers=workers)

    def ip(self, index: int) -> str:
        """Node `index`'s address: 0 is the head, 1.. the workers."""
        return f"{self.subnet}.{2 + index}"

    def node_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "PYTHONPATH"):
            env.pop(key, None)
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token_file),
            # A private HOME: no real ~/.ray/auth_token is read or written.
            HOME=str(self.root / "home"),
            # Job entrypoints run `python`: the nodes' Python is this test's environment.
            PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            RAY_USAGE_STATS_ENABLED="0",
            # A killed node is declared dead after 5 failed GCS health checks; one a second
            # instead of every 3 s (Ray's default) lets a node-failure test see it sooner.
            RAY_health_check_period_ms="1000",
        )
        return env

    def _start_node(self, name: str, args: list[str]) -> Node:
        log = self.root / f"{name}.log"
        ray = str(Path(sys.executable).parent / "ray")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [ray, "start", "--block", "--disable-usage-stats", *args],
                env=self.node_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: we stop exactly it
            )
        ip = next(a.split("=", 1)[1] for a in args if a.startswith("--node-ip-address="))
        node = Node(name, ip, proc, log)
        self.nodes.append(node)
        return node

    def _common(self, name: str, ip: str) -> list[str]:
        return [
            f"--node-ip-address={ip}",
            f"--temp-dir={self.root / name}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--min-worker-port=0",  # OS-chosen: other engineers' Ray use 10002-19999 too
            "--max-worker-port=0",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--num-gpus=0",
        ]

    def start(self, timeout_s: float = 240.0) -> LoopbackCluster:
        deadline = time.monotonic() + timeout_s
        head_ip = self.ip(0)
        gcs_port, dash_port = free_port(head_ip), free_port()
        self.gcs_address = f"{head_ip}:{gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{dash_port}"
        self._start_node(
            "head",
            [
                "--head",
                f"--port={gcs_port}",
                "--num-cpus=0",  # the driver runs here; trials only on workers
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash_port}",
                f"--ray-client-server-port={free_port()}",
                *self._common("head", head_ip),
            ],
        )
        self._wait_for(lambda: self._api_ok(), deadline, "the head's Jobs API")
        for i in range(self.workers):
            ip = self.ip(1 + i)
            self._start_node(
                f"w{i + 1}",
                [f"--address={self.gcs_address}", "--num-cpus=1", *self._common(f"w{i + 1}", ip)],
            )
        self._wait_for(
            lambda: len(self.alive_nodes()) == 1 + self.workers, deadline, "all nodes alive"
        )
        return self

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _api_ok(self) -> bool:
        try:
            r = requests.get(f"{self.dashboard_url}/api/version", headers=self.headers(), timeout=5)
            return r.status_code == 200
        except requests.RequestException:
            return False

    def _alive(self, kind: str, limit: int) -> list[dict[str, object]] | None:
        """The state API's ALIVE rows of `kind` (nodes, actors); None when it did not answer."""
        try:
            r = requests.get(
                f"{self.dashboard_url}/api/v0/{kind}?limit={limit}",
                headers=self.headers(),
                timeout=10,
            )
            rows = r.json()["data"]["result"]["result"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return None
        return [row for row in rows if row.get("state") == "ALIVE"]

    def alive_nodes(self) -> list[dict[str, object]]:
        """The state API's view: node_id, node_ip, is_head_node, resources_total, ..."""
        return self._alive("nodes", 100) or []

    def alive_actors(self) -> list[dict[str, object]] | None:
        """The state API's ALIVE actors (None when it did not answer)."""
        return self._alive("actors", 1000)

    def wait_until_idle(self, timeout_s: float = 180.0) -> None:
        """Until no actor is alive: an earlier test's stopped job frees its workers' CPUs only
        once Ray has torn its actors down, which a loaded machine can take a while to do."""
        deadline = time.monotonic() + timeout_s
        self._wait_for(lambda: self.alive_actors() == [], deadline, "earlier jobs' actors to exit")

    def _wait_for(self, ok: Callable[[], bool], deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"ray node {node.name} exited: {self.tail(node)}")
            if ok():
                return
            time.sleep(1.0)
        raise TimeoutError(f"timed out waiting for {what}: {self.tail(self.nodes[-1])}")

    def tail(self, node: Node, chars: int = 3000) -> str:
        try:
            return node.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop our nodes, workers first: SIGTERM to each `ray start`, then SIGKILL its group."""
        for node in reversed(self.nodes):
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(signal.SIGTERM)
        for node in reversed(self.nodes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=20)
            # Whatever it started (GCS, raylet, workers, agents) shares its process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @staticmethod
    def _processes() -> dict[int, tuple[str, int, int, str]]:
        """pid -> (state, ppid, pgid, command line) of every process we can read."""
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
            out[int(entry.name)] = (fields[0], int(fields[1]), int(fields[2]), cmdline)
        return out

    def node_pids(self, node: Node) -> list[int]:
        """Live processes of one node: its `ray start` process group, every descendant of
        it (Ray workers put themselves in process groups of their own, and retitle their
        command line), and anything whose command line names the node's temp dir."""
        procs = self._processes()
        marker = str(self.root / node.name)
        found = {
            pid
            for pid, (_, _, pgid, cmd) in procs.items()
            if pgid == node.proc.pid or marker in cmd or pid == node.proc.pid
        }
        grew = True
        while grew:
            more = {pid for pid, (_, ppid, _, _) in procs.items() if ppid in found} - found
            found |= more
            grew = bool(more)
        return sorted(pid for pid in found if procs[pid][0] != "Z")

    def kill_node(self, name: str, timeout_s: float = 30.0) -> list[int]:
        """Crash worker node `name`: SIGKILL its raylet, workers and agents at once.

        Returns the pids killed, once none of them is left. The node stays in `nodes`
        (stop() then finds nothing more to do for it).
        """
        node = self.node(name)
        pids = self.node_pids(node)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(timeout=timeout_s)  # reap `ray start` itself

        def alive() -> list[int]:
            procs = self._processes()
            return [p for p in pids if p in procs and procs[p][0] != "Z"]

        deadline = time.monotonic() + timeout_s
        while alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive():
            raise RuntimeError(f"node {name}: processes survived SIGKILL: {alive()}")
        return pids

    def leftover_pids(self) -> list[int]:
        """Processes still in our nodes' process groups (for the test's own cleanup check)."""
        groups = {n.proc.pid for n in self.nodes}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            state, pgid = fields[0], int(fields[2])
            if pgid in groups and state != "Z":
                found.append(int(entry.name))
        return found
