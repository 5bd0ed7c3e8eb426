"""A space-filling start-up design: the first trials of each activation as a Latin hypercube.

TPE and GP start from `n_startup_trials` independent random draws. With the small budgets of
a convergence search (16 trials per activation is typical) random draws leave gaps: two of
six depths unsampled, a decade of learning rates missed. A Latin hypercube puts exactly one
point in each of n equal slices of every parameter: depth and initializer strata are covered
as evenly as n allows and log-lr is spread over its whole range. The points are enqueued as
ordinary fully fixed Optuna trials, so the sampler learns from them like any other trial.

Pure and deterministic: the design depends only on (space, n, seed).
"""

from __future__ import annotations

import math
import random
from typing import Any

from search.spec import SpaceSpec


def latin_hypercube(space: SpaceSpec, n: int, seed: int) -> list[dict[str, Any]]:
    """n parameter dicts (depth, init, lr, optimizer), one per row of a Latin hypercube."""
    if n <= 0:
        return []
    rng = random.Random(seed)

    def strata() -> list[float]:
        # One uniform draw inside each of n equal slices of [0, 1), in random order.
        cells = [(i + rng.random()) / n for i in range(n)]
        rng.shuffle(cells)
        return cells

    depth_u, init_u, lr_u, opt_u = strata(), strata(), strata(), strata()
    lo, hi = space.depth.low, space.depth.high
    log_lo, log_hi = math.log(space.lr.low), math.log(space.lr.high)
    inits, optimizers = list(space.initializers), list(space.optimizers)
    points = []
    for k in range(n):
        depth = lo + min(int(depth_u[k] * (hi - lo + 1)), hi - lo)
        lr = math.exp(log_lo + lr_u[k] * (log_hi - log_lo))
        points.append(
            {
                "depth": depth,
                "init": inits[min(int(init_u[k] * len(inits)), len(inits) - 1)],
                "lr": min(max(lr, space.lr.low), space.lr.high),
                "optimizer": optimizers[min(int(opt_u[k] * len(optimizers)), len(optimizers) - 1)],
            }
        )
    return points
