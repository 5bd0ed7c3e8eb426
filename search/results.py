"""Read leaderboards back from MLflow (for the CLI and for scripts)."""

from __future__ import annotations

import pandas as pd
from mlflow.tracking import MlflowClient

from search.errors import SpecError
from search.leaderboard import compute_leaderboard, trials_table
from search.paths import resolve_tracking_uri
from search.tracking import TAG_SEARCH_ID, search_runs_of, trial_runs_of


def load_leaderboard(
    experiment: str, *, tracking_uri: str | None = None, search_id: str | None = None
) -> pd.DataFrame:
    """The leaderboard of a search as a DataFrame (the latest search unless `search_id`).

    Computed from the child runs in MLflow, exactly as the search computed it.
    """
    uri = resolve_tracking_uri(tracking_uri, None)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise SpecError("EXPERIMENT", f"no experiment named {experiment!r} at {uri}", names or None)
    searches = search_runs_of(str(exp.experiment_id), uri)
    if searches.empty:
        raise SpecError("EXPERIMENT", f"experiment {experiment!r} holds no actsweep search")
    ids = list(searches[f"tags.{TAG_SEARCH_ID}"])
    if search_id is None:
        search_id = str(ids[0])
    elif search_id not in ids:
        raise SpecError("--search", f"no search {search_id!r} in experiment {experiment!r}", ids)
    row = searches[searches[f"tags.{TAG_SEARCH_ID}"] == search_id].iloc[0]
    activations = str(row.get("params.space.activations", "") or "")
    strata = [a for a in activations.split(",") if a] or None
    runs = trial_runs_of(str(exp.experiment_id), search_id, uri)
    return compute_leaderboard(trials_table(runs), strata)
