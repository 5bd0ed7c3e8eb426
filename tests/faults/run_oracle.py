"""The real `actsweep` command line with the oracle trainable, for fault tests that run it
as a process (to SIGKILL it, or to cut its tracking server).

    python -m tests.faults.run_oracle ORACLE_FILE run SPEC [--tracking-uri ...]

Exactly `actsweep ...`, except that `run_search` trains through
`tests.faults.oracle.oracle_trainable(ORACLE_FILE)`; every other command is untouched.
"""

from __future__ import annotations

import functools
import sys

import search.orchestrate as orchestrate
from search.cli import main
from tests.faults.oracle import oracle_trainable

if __name__ == "__main__":
    # The CLI imports run_search at call time, so it picks up this one.
    orchestrate.run_search = functools.partial(  # type: ignore[assignment]
        orchestrate.run_search, trainable=oracle_trainable(sys.argv[1])
    )
    sys.exit(main(sys.argv[2:]))
