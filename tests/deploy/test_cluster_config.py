"""The checked-in deployment files: ray_cluster.yaml against Ray's own schema, the RayJob manifest.

Ray validates a cluster-launcher config only at `ray up`, on someone's cloud account; here
it is validated with the schema the installed Ray ships, plus the properties issue #5 asks
for (token auth on every node, dashboard on the head's loopback, pinned installs).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from deploy.submit import entrypoint
from search.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "ray_cluster.yaml"
RAYJOB_YAML = REPO / "deploy" / "kuberay" / "rayjob.yaml"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    data = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(data, dict)
    return data


def test_ray_cluster_yaml_validates_against_the_schema_ray_ships(config: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import validate_config

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    validate_config(config)  # the schema plus Ray's own cross-field checks


def test_schema_check_would_catch_a_broken_config(config: dict[str, Any]) -> None:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    broken = {**config, "head_start_ray_command": config["head_start_ray_commands"]}  # typo
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_head_and_a_cpu_and_a_gpu_worker_type(config: dict[str, Any]) -> None:
    types = config["available_node_types"]
    assert config["head_node_type"] == "head"
    assert types["head"]["resources"] == {
        "CPU": 0
    }  # the driver needs no slot, trials go to workers
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    gpu_setup = " ".join(types["gpu_worker"]["worker_setup_commands"])
    assert "whl/cu" in gpu_setup  # torch's CUDA build on GPU nodes
    assert "whl/cpu" in " ".join(config["setup_commands"])
    for commands in (config["setup_commands"], types["gpu_worker"]["worker_setup_commands"]):
        assert any("-c ~/actsweep/requirements.lock" in c for c in commands)  # pinned


def test_every_node_runs_token_auth_and_the_dashboard_stays_on_loopback(
    config: dict[str, Any],
) -> None:
    head = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    workers = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert head and workers
    for command in head + workers:
        assert "RAY_AUTH_MODE=token ray start" in command
    assert "--dashboard-host=127.0.0.1" in head[0]
    assert "--num-cpus=0" in head[0]
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()
    # The token travels by file mount from the user's machine, never inline.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert not re.search(r"RAY_AUTH_TOKEN\s*[=:]", CLUSTER_YAML.read_text())


def test_no_token_file_is_committed() -> None:
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, timeout=60
    )
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    assert not [f for f in files.stdout.splitlines() if "auth_token" in Path(f).name]


def _manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d]


def test_rayjob_runs_the_entrypoint_submit_sends() -> None:
    (job,) = [d for d in _manifests() if d["kind"] == "RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    spec_path = argv[4]
    uri = argv[argv.index("--tracking-uri") + 1]
    storage = argv[argv.index("--optuna-storage") + 1]
    assert job["spec"]["entrypoint"] == entrypoint(uri, storage, spec_file=spec_path)
    assert storage.startswith("/") and uri.startswith("http")  # reachable from every pod


def test_rayjob_cluster_is_authenticated_and_matches_the_installed_ray() -> None:
    (job,) = [d for d in _manifests() if d["kind"] == "RayJob"]
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0" and head["dashboard-host"] == "127.0.0.1"
    assert job["spec"]["submissionMode"] == "SidecarMode"  # submits from inside the head pod
    dockerfile = (REPO / "deploy" / "kuberay" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-" in dockerfile
    assert "-c requirements.lock" in dockerfile


def test_rayjob_spec_is_a_valid_spec_at_the_mounted_path(tmp_path: Path) -> None:
    docs = _manifests()
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    (name,) = config_map["data"]
    (tmp_path / name).write_text(config_map["data"][name])
    spec = load_spec(tmp_path / name)  # the loader `actsweep run` uses (1e-3 is a float)
    assert spec.name == "quickstart"
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in head["volumeMounts"]}
    assert f"{mounts['spec']}/{name}" in job["spec"]["entrypoint"]
    assert f"{mounts['state']}/" in job["spec"]["entrypoint"]  # the journal on the volume
