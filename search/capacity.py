"""Whether a Ray cluster can ever run one trial, and how many trials it can run at once.

Ray queues a resource request that no node can satisfy without an error, so a search that
asks for a GPU on a CPU-only cluster (or for more CPUs than any one node has) would wait
forever. The driver checks the spec's per-trial resources against the nodes the cluster
has and the node types its autoscaler reports it can still launch, and fails fast instead.
The arithmetic is pure (``concurrent_trials``); ``cluster_shapes`` is the Ray adapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from search.errors import SpecError

# Ray keeps resources in fixed point (1e-4); 0.3 CPUs x 3 must count as fitting into 0.9.
_EPS = 1e-6


@dataclass(frozen=True)
class Capacity:
    slots: int
    """Trials the cluster can run at once."""
    nodes: int
    """Nodes that can host a trial (alive ones, or node types the autoscaler may launch)."""


@dataclass(frozen=True)
class NodeShape:
    """What one node offers a trial; `count` nodes of this shape (-1: the autoscaler sets no cap)."""

    name: str
    cpus: float
    gpus: float
    count: int = 1


def trials_per_node(shape: NodeShape, cpus: float, gpus: float) -> int:
    """How many trials of (cpus, gpus) fit on one node of `shape` (a trial never spans nodes)."""
    n = math.floor(shape.cpus / cpus + _EPS)
    if gpus > 0:
        n = min(n, math.floor(shape.gpus / gpus + _EPS))
    return max(0, n)


def _count(n: float) -> str:
    return f"{n:g}"


def plan_capacity(
    alive: list[NodeShape], launchable: list[NodeShape], cpus: float, gpus: float
) -> Capacity:
    """What the cluster offers trials; SpecError if no node, alive or launchable, fits one.

    `launchable` are the autoscaler's node types (empty when it reports none): a GPU node
    type with zero nodes running still makes a GPU search feasible, the autoscaler will
    start one. A node type without a cap counts as one node, so concurrency (and with it
    how many trials Optuna is asked for before it hears any result) stays bounded.
    """
    shapes = alive + launchable
    total_gpus = sum(s.gpus for s in alive)
    if gpus > 0 and not any(s.gpus > 0 for s in shapes):
        where = " and its autoscaler reports no node type with GPUs" if launchable else ""
        raise SpecError(
            "resources.gpus_per_trial",
            f"asks for {_count(gpus)} GPU per trial but the Ray cluster has "
            f"{_count(total_gpus)} GPUs on its {len(alive)} nodes{where}; "
            "set gpus_per_trial: 0 or add GPU workers",
        )
    if not any(trials_per_node(s, cpus, gpus) > 0 for s in shapes):
        gpu_short = gpus > 0 and not any(s.gpus + _EPS >= gpus for s in shapes)
        field = "resources.gpus_per_trial" if gpu_short else "resources.cpus_per_trial"
        order = (lambda s: (s.gpus, s.cpus)) if gpu_short else (lambda s: (s.cpus, s.gpus))
        has = "no nodes"
        if shapes:
            big = max(shapes, key=order)
            has = f"{_count(big.cpus)} CPUs and {_count(big.gpus)} GPUs"
        raise SpecError(
            field,
            f"one trial needs {_count(cpus)} CPUs and {_count(gpus)} GPUs on a single node, "
            f"but the largest node of the Ray cluster has {has} (a trial never spans nodes)",
        )
    now = sum(trials_per_node(s, cpus, gpus) for s in alive)
    later = sum(trials_per_node(s, cpus, gpus) * max(1, s.count) for s in launchable)
    hosts_now = sum(1 for s in alive if trials_per_node(s, cpus, gpus) > 0)
    hosts_later = sum(max(1, s.count) for s in launchable if trials_per_node(s, cpus, gpus) > 0)
    return Capacity(slots=max(1, now, later), nodes=max(hosts_now, hosts_later))


def cluster_shapes() -> tuple[list[NodeShape], list[NodeShape]]:
    """The alive nodes of the connected Ray cluster, and the node types its autoscaler reports."""
    import ray

    alive = [
        NodeShape(
            name=str(n.get("NodeID", "")),
            cpus=float(n.get("Resources", {}).get("CPU", 0.0)),
            gpus=float(n.get("Resources", {}).get("GPU", 0.0)),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return alive, _autoscaler_node_types()


def _autoscaler_node_types() -> list[NodeShape]:
    # The cluster config the autoscaler publishes in the GCS; Ray Train reads the same to
    # fail fast. The accessor is private Ray API: if it moves, we only lose the autoscaler
    # view (and check against the nodes that are up), we never fail a search over it.
    try:
        from ray._private import state

        config: Any = state.state.get_cluster_config()
    except Exception:
        return []
    if config is None:
        return []
    return [
        NodeShape(
            name=str(group.name),
            cpus=float(group.resources.get("CPU", 0)),
            gpus=float(group.resources.get("GPU", 0)),
            count=int(group.max_count),
        )
        for group in config.node_group_configs
        if group.max_count != 0  # a type that may never be launched offers nothing
    ]
