"""A real multi-node cluster: `actsweep submit` to a Ray head and two 1-CPU workers on loopback.

The cluster runs with token authentication; the search tracks to a SQLite file and an
Optuna journal that every node sees (one machine). Checks what issue #5 asks: the job
finishes, its child runs ran on both workers, the leaderboard reads back, a second submit
starts nothing, a submit without the token is refused, the token is nowhere it should not
be, and a GPU spec on a CPU cluster fails fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests

from search.cli import main
from search.spec import parse_spec
from tests.deploy.loopback import LoopbackCluster, loopback_usable
from tests.search.conftest import write_spec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not loopback_usable("127.1.2.3"), reason="needs 127.0.0.0/8 on loopback (Linux)"
    ),
]

REPO = Path(__file__).resolve().parents[2]
SPEC: dict[str, Any] = {
    "name": "multinode",
    "dataset": "digits",
    "model": {"width": 16},
    "space": {
        "activations": ["relu", "tanh"],
        "depth": {"low": 1, "high": 2},
        "lr": {"low": 0.05, "high": 0.5},
        "batch_size": 64,
    },
    "convergence": {"target_loss": 0.5, "max_steps": 100, "eval_every": 25},
    # 4 one-member cohorts, 2 at a time: one per worker (each has 1 CPU, the head none).
    "budget": {"trials_per_activation": 2, "cohort_size": 1},
    "sampler": {"name": "tpe", "n_startup_trials": 2},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    "seed": 0,
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    c = LoopbackCluster.create(workers=2)
    try:
        c.start()
        yield c
    finally:
        c.stop()
    deadline = time.monotonic() + 30  # SIGKILLed processes take a moment to vanish
    while c.leftover_pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert c.leftover_pids() == [], "processes of the test cluster outlived stop()"


def client_env(cluster: LoopbackCluster, home: Path, with_token: bool) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS"):
        env.pop(key, None)
    env.pop("MLFLOW_TRACKING_URI", None)
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)  # no ~/.ray/auth_token there
    env["PYTHONPATH"] = str(REPO)
    if with_token:
        env["RAY_AUTH_TOKEN_PATH"] = str(cluster.token_file)
    return env


def use_token(monkeypatch: pytest.MonkeyPatch, cluster: LoopbackCluster, home: Path) -> None:
    """The in-process equivalent of client_env(with_token=True)."""
    for key, value in client_env(cluster, home, with_token=True).items():
        monkeypatch.setenv(key, value)
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)


def jobs_of(cluster: LoopbackCluster) -> list[dict[str, Any]]:
    r = requests.get(f"{cluster.dashboard_url}/api/jobs/", headers=cluster.headers(), timeout=30)
    r.raise_for_status()
    return list(r.json())


@pytest.fixture(scope="module")
def searched(cluster: LoopbackCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real `actsweep submit --wait`, as a user runs it, shared by the checks below."""
    tmp = tmp_path_factory.mktemp("multinode")
    spec = write_spec(tmp / "multinode.yaml", SPEC)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    journal = tmp / "state" / "optuna.journal"
    journal.parent.mkdir()
    args = [
        "submit",
        str(spec),
        "--address",
        cluster.dashboard_url,
        "--tracking-uri",
        uri,
        "--optuna-storage",
        str(journal),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", *args, "--wait"],
        cwd=tmp,
        env=client_env(cluster, tmp / "home", with_token=True),
        capture_output=True,
        text=True,
        timeout=900,
    )
    return {"tmp": tmp, "spec": spec, "uri": uri, "args": args, "proc": proc}


def test_jobs_api_answers_401_without_and_403_with_a_wrong_token(cluster: LoopbackCluster) -> None:
    url = f"{cluster.dashboard_url}/api/jobs/"
    job = {"entrypoint": "echo taken-over", "submission_id": "intruder"}
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.post(url, json=job, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer " + "0" * 64}
    assert requests.post(url, json=job, headers=wrong, timeout=30).status_code == 403
    assert "intruder" not in {j.get("submission_id") for j in jobs_of(cluster)}


def test_submit_without_the_token_exits_2_with_how_to_give_it(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "s.yaml", {**SPEC, "name": "no-token"})
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", "submit", str(spec)]
        + ["--address", cluster.dashboard_url, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
        cwd=tmp_path,
        env=client_env(cluster, tmp_path / "home", with_token=False),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("actsweep: error: auth token: ")
    assert "HTTP 401" in proc.stderr
    for way in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token"):
        assert way in proc.stderr
    assert not [j for j in jobs_of(cluster) if "no-token" in str(j.get("submission_id"))]


def test_submitted_search_finishes_as_one_job(
    searched: dict[str, Any], cluster: LoopbackCluster
) -> None:
    proc = searched["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ours = [j for j in jobs_of(cluster) if str(j.get("submission_id")).startswith("actsweep-")]
    (job,) = [j for j in ours if "multinode-" in j["submission_id"]]
    assert job["status"] == "SUCCEEDED"
    assert job["submission_id"] in proc.stdout and "SUCCEEDED" in proc.stdout
    assert "leaderboard of multinode-" in proc.stdout  # the job's log, streamed


def test_second_submit_starts_nothing_and_points_at_the_first(
    searched: dict[str, Any],
    cluster: LoopbackCluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_token(monkeypatch, cluster, searched["tmp"] / "home")
    before = jobs_of(cluster)
    assert main(searched["args"]) == 0
    out = capsys.readouterr().out
    (job_id,) = [j["submission_id"] for j in before if "multinode-" in str(j.get("submission_id"))]
    assert f"already submitted: Ray job {job_id} is SUCCEEDED (not started again)" in out
    assert len(jobs_of(cluster)) == len(before)


def test_child_runs_ran_on_both_workers_never_the_head(
    searched: dict[str, Any], cluster: LoopbackCluster
) -> None:
    nodes = cluster.alive_nodes()
    workers = {n["node_id"] for n in nodes if not n["is_head_node"]}
    (head,) = [n["node_id"] for n in nodes if n["is_head_node"]]
    mlflow.set_tracking_uri(searched["uri"])
    runs = mlflow.search_runs(experiment_names=["multinode"])
    parent = runs[runs["tags.actsweep.role"] == "search"]
    children = runs[runs["tags.actsweep.role"] == "trial"]
    assert list(parent["tags.actsweep.state"]) == ["finished"]
    assert len(children) == 4 and set(children["status"]) == {"FINISHED"}
    assert set(children["tags.actsweep.node_id"]) == workers  # two distinct worker nodes
    assert head not in set(children["tags.actsweep.node_id"])
    assert set(children["tags.actsweep.node_ip"]) == {cluster.ip(1), cluster.ip(2)}
    assert set(children["tags.actsweep.device"]) == {"cpu"}


def test_leaderboard_reads_back_from_the_store(
    searched: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["leaderboard", "multinode", "--format", "json", "--tracking-uri", searched["uri"]])
        == 0
    )
    board = json.loads(capsys.readouterr().out)
    assert sorted(r["activation"] for r in board) == ["relu", "tanh"]
    assert [r["trials"] for r in board] == [2, 2]
    assert [r["rank"] for r in board] == [1, 2]


def test_token_is_in_no_run_no_job_record_and_no_committed_file(
    searched: dict[str, Any], cluster: LoopbackCluster
) -> None:
    token = cluster.token
    client = mlflow.MlflowClient(searched["uri"])
    (exp,) = [e for e in client.search_experiments() if e.name == "multinode"]
    runs = client.search_runs([exp.experiment_id])
    roles = sorted(r.data.tags.get("actsweep.role", "") for r in runs)
    # every run the search wrote: the parent, 4 trials, and one leaderboard row per activation
    assert roles == ["leaderboard"] * 2 + ["search"] + ["trial"] * 4
    for run in runs:
        for value in [*run.data.params.values(), *run.data.tags.values()]:
            assert token not in value
    parent = next(r for r in runs if r.data.tags.get("actsweep.role") == "search")
    for name in ("spec.yaml", "spec.json"):
        path = client.download_artifacts(parent.info.run_id, name, str(searched["tmp"]))
        assert token not in Path(path).read_text()
    assert token not in json.dumps(jobs_of(cluster))  # entrypoints, runtime envs, metadata
    assert token not in searched["proc"].stdout + searched["proc"].stderr
    grep = subprocess.run(
        ["git", "-C", str(REPO), "grep", "-I", "-q", "-F", "-e", token],
        capture_output=True,
        timeout=60,
    )
    if grep.returncode == 128:
        pytest.skip("not a git checkout")
    assert grep.returncode == 1  # no match in any tracked file


def test_jobs_commands_find_the_search(
    searched: dict[str, Any],
    cluster: LoopbackCluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_token(monkeypatch, cluster, searched["tmp"] / "home")
    address = ["--address", cluster.dashboard_url]
    assert main(["jobs", "list", *address]) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if "multinode-" in line)
    assert "SUCCEEDED" in row
    search_id = row.split()[2]
    assert main(["jobs", "status", search_id, *address]) == 0  # a search id finds its job
    assert "status:     SUCCEEDED" in capsys.readouterr().out
    assert main(["jobs", "logs", f"actsweep-{search_id}", *address]) == 0
    assert f"leaderboard of {search_id}" in capsys.readouterr().out
    assert main(["jobs", "status", "actsweep-no-such-search", *address]) == 2
    assert "JOB: no job 'actsweep-no-such-search'" in capsys.readouterr().err


def test_stopped_search_is_resubmitted_as_a_new_attempt(
    cluster: LoopbackCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from deploy.client import connect
    from deploy.jobs import wait_terminal

    use_token(monkeypatch, cluster, tmp_path / "home")
    long = {**SPEC, "name": "multinode-stop", "budget": {"trials_per_activation": 500}}
    spec = write_spec(tmp_path / "long.yaml", long)
    argv = ["submit", str(spec), "--address", cluster.dashboard_url]
    argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    client = connect(cluster.dashboard_url)
    assert main(argv) == 0
    first = next(
        j.submission_id for j in client.list_jobs() if "multinode-stop" in str(j.submission_id)
    )
    assert main(["jobs", "stop", first, "--address", cluster.dashboard_url]) == 0
    assert str(wait_terminal(client, first, poll_s=0.5).status) == "STOPPED"
    capsys.readouterr()
    assert main(argv) == 0  # the same search again: a new attempt, since the first was stopped
    assert f"as Ray job {first}-r2 " in capsys.readouterr().out
    assert main(["jobs", "stop", f"{first}-r2", "--address", cluster.dashboard_url]) == 0
    assert str(wait_terminal(client, f"{first}-r2", poll_s=0.5).status) == "STOPPED"
    attempts = [j for j in client.list_jobs() if "multinode-stop" in str(j.submission_id)]
    assert sorted(j.submission_id for j in attempts) == [first, f"{first}-r2"]


def test_gpu_spec_on_a_cpu_cluster_fails_fast_with_a_clear_message(
    cluster: LoopbackCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_token(monkeypatch, cluster, tmp_path / "home")
    gpu = {**SPEC, "name": "multinode-gpu", "resources": {"cpus_per_trial": 1, "gpus_per_trial": 1}}
    spec = write_spec(tmp_path / "gpu.yaml", gpu)
    argv = ["submit", str(spec), "--address", cluster.dashboard_url, "--wait"]
    argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(argv) == 2  # the driver's exit code, through the job
    out = capsys.readouterr().out
    assert (
        "resources.gpus_per_trial: asks for 1 GPU per trial but the Ray cluster has 0 GPUs" in out
    )
    assert "FAILED (exit code 2)" in out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert mlflow.search_runs(experiment_names=["multinode-gpu"]).empty  # nothing was run


# Keep this test last in the module: it crashes worker w1 of the shared cluster (starting a
# dedicated cluster would cost a minute of start-up on a 2-CPU machine).
def test_worker_node_killed_mid_search_its_trials_finish_on_the_survivor(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """Issue #7 item 3: a worker node crashes while it runs a trial; nothing is lost."""
    from tests.faults.oracle import check_nothing_lost

    victim, survivor = cluster.node("w1"), cluster.node("w2")
    # Both workers' CPUs free, so the search's two concurrent cohorts land one on each.
    cluster.wait_until_idle()
    spec = write_spec(tmp_path / "nodekill.yaml", {**SPEC, "name": "multinode-nodekill"})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    journal, oracle, markers = tmp_path / "optuna.journal", tmp_path / "oracle.jsonl", tmp_path
    log = tmp_path / "driver.log"
    cmd = [sys.executable, "-m", "tests.faults.oracle_run", str(spec), "--tracking-uri", uri]
    cmd += ["--optuna-storage", str(journal), "--oracle", str(oracle)]
    cmd += ["--address", cluster.gcs_address, "--node-ip", cluster.ip(0)]
    cmd += ["--hold-on", victim.ip, "--marker-dir", str(markers)]
    # A driver (unlike a Jobs API client) must be told the cluster's auth mode too.
    env = client_env(cluster, tmp_path / "home", with_token=True) | {"RAY_AUTH_MODE": "token"}
    with log.open("wb") as out:
        driver = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Crash w1 while its first cohort runs there (parked by HoldOnNode), once another
        # cohort has finished on w2: the search is under way on both nodes.
        held_file = markers / "held.json"
        deadline = time.monotonic() + 600
        while not (held_file.exists() and oracle.exists() and '"final"' in oracle.read_text()):
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        held = json.loads(held_file.read_text())
        killed_ms = int(time.time() * 1000)
        killed = cluster.kill_node("w1")
        assert held["pid"] in killed  # the worker running the held trial went with its node
        rc = driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert rc == 0, log.read_text()[-3000:]
    assert victim.ip not in {n["node_ip"] for n in cluster.alive_nodes()}  # Ray saw it die

    counts = check_nothing_lost(
        oracle,
        parse_spec({**SPEC, "name": "multinode-nodekill"}),
        tracking_uri=uri,
        optuna_storage=str(journal),
    )
    assert counts["oracle_trials"] == counts["child_runs"] == counts["optuna_complete"] == 4
    assert counts["unfinished_child_runs"] == 0
    mlflow.set_tracking_uri(uri)
    children = mlflow.search_runs(
        experiment_names=["multinode-nodekill"], filter_string="tags.`actsweep.role` = 'trial'"
    )
    assert set(children["status"]) == {"FINISHED"}
    # The held cohort was rescheduled on the survivor and trained after the crash; no trial
    # finished on the victim (its only cohort was the held one).
    keys = {f"{held['activation']}/{n}" for n in held["numbers"]}
    moved = children[children["tags.actsweep.trial_key"].map(lambda k: k.split("/", 1)[1] in keys)]
    assert len(moved) == len(keys)
    assert set(moved["tags.actsweep.node_ip"]) == {survivor.ip}
    assert all(t.timestamp() * 1000 >= killed_ms for t in moved["start_time"])
    assert set(children["tags.actsweep.node_ip"]) == {survivor.ip}
