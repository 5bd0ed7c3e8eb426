"""`actsweep run` with the oracle trainable, as a separate driver process for fault tests.

    python -m tests.faults.oracle_run SPEC --tracking-uri URI --optuna-storage LOC --oracle FILE
        [--address GCS --node-ip IP] [--hold-on IP --marker-dir DIR]

It does what `actsweep run` does (search.cli), except that the trainable writes the oracle
file (tests/faults/oracle.py). With --address it joins that cluster as a driver on the node
with address --node-ip (a loopback test cluster's nodes are not at this machine's outward
address, which is where Ray looks for the local node by default), and ships this checkout to
the workers through the job's runtime environment. --hold-on parks the first cohort that
lands on the node at that address (tests.faults.kills.HoldOnNode), for a test to kill it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="oracle_run")
    p.add_argument("spec")
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--optuna-storage", required=True)
    p.add_argument("--oracle", required=True)
    p.add_argument("--address", default=None)
    p.add_argument("--node-ip", default=None)
    p.add_argument("--hold-on", default=None)
    p.add_argument("--marker-dir", default=None)
    args = p.parse_args(argv)

    from search.orchestrate import run_search
    from search.spec import load_spec
    from tests.faults.kills import HoldOnNode
    from tests.faults.oracle import oracle_trainable

    spec = load_spec(args.spec)
    if args.address:
        import logging

        import ray

        ray.init(
            address=args.address,
            _node_ip_address=args.node_ip,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
            logging_level=logging.WARNING,
        )
    fault = HoldOnNode(args.hold_on, args.marker_dir) if args.hold_on else None
    run_search(
        spec,
        tracking_uri=args.tracking_uri,
        address=args.address,
        optuna_storage_location=args.optuna_storage,
        spec_text=Path(args.spec).read_text(),
        trainable=oracle_trainable(args.oracle, fault=fault),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
