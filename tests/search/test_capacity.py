"""Fail fast on trials no node can hold; count what the cluster (and its autoscaler) offers."""

from __future__ import annotations

import pytest

from search.capacity import Capacity, NodeShape, plan_capacity, trials_per_node
from search.errors import SpecError
from search.orchestrate import ray_address

HEAD = NodeShape("head", cpus=0, gpus=0)


def cpu(n: float, name: str = "w") -> NodeShape:
    return NodeShape(name, cpus=n, gpus=0)


def test_two_one_cpu_workers_run_two_trials_on_two_nodes() -> None:
    assert plan_capacity([HEAD, cpu(1), cpu(1)], [], 1, 0) == Capacity(slots=2, nodes=2)


def test_fractional_resources_count_exactly() -> None:
    node = NodeShape("g", cpus=8, gpus=1)
    assert trials_per_node(node, 0.1, 0) == 80  # not 79 from 8 / 0.1 = 79.999...
    assert trials_per_node(node, 1, 0.25) == 4
    assert trials_per_node(node, 1, 0.3) == 3
    assert plan_capacity([HEAD, node], [], 1, 0.5) == Capacity(slots=2, nodes=1)


def test_gpu_spec_on_a_cpu_cluster_fails_with_the_field_and_the_count() -> None:
    with pytest.raises(SpecError) as info:
        plan_capacity([HEAD, cpu(4), cpu(4)], [], 1, 1)
    assert info.value.field == "resources.gpus_per_trial"
    assert "asks for 1 GPU per trial but the Ray cluster has 0 GPUs on its 3 nodes" in str(
        info.value
    )


def test_trial_bigger_than_any_node_fails_even_if_the_cluster_total_suffices() -> None:
    with pytest.raises(SpecError) as info:
        plan_capacity([HEAD, cpu(1), cpu(1)], [], 2, 0)  # 2 CPUs in total, 1 per node
    assert info.value.field == "resources.cpus_per_trial"
    assert "largest node of the Ray cluster has 1 CPUs and 0 GPUs" in str(info.value)
    with pytest.raises(SpecError) as info:
        plan_capacity([HEAD, NodeShape("g", 8, 1), NodeShape("g2", 8, 1)], [], 1, 2)
    assert info.value.field == "resources.gpus_per_trial"


def test_an_autoscaler_gpu_type_makes_a_gpu_spec_feasible_before_any_gpu_node_runs() -> None:
    gpu_type = NodeShape("gpu_worker", cpus=4, gpus=1, count=2)
    assert plan_capacity([HEAD, cpu(4)], [cpu(4, "cpu_worker"), gpu_type], 1, 1) == Capacity(
        slots=2, nodes=2
    )
    with pytest.raises(SpecError, match="autoscaler reports no node type with GPUs"):
        plan_capacity([HEAD, cpu(4)], [cpu(4, "cpu_worker")], 1, 1)


def test_an_uncapped_node_type_counts_as_one_node() -> None:
    # Bounded concurrency: Optuna is not asked for unlimited trials before any result.
    assert plan_capacity([HEAD], [NodeShape("w", 2, 0, count=-1)], 1, 0) == Capacity(2, 1)


def test_ray_address_joins_the_job_cluster_only_inside_a_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert ray_address(None) == "local"
    assert ray_address("10.0.0.1:6379") == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {}}')
    assert ray_address(None) == "auto"
    assert ray_address("local") == "local"
