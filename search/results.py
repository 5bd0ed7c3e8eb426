"""Read leaderboards back from MLflow (for the CLI and for scripts)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from mlflow.tracking import MlflowClient

from search.errors import SpecError
from search.leaderboard import compute_leaderboard, trials_table
from search.paths import resolve_tracking_uri
from search.tracking import TAG_SEARCH_ID, search_runs_of, trial_runs_of


@dataclass(frozen=True)
class FoundSearch:
    """One search located in an experiment: where it is and its parent run's row."""

    tracking_uri: str
    experiment_id: str
    search_id: str
    parent: pd.Series
    """The parent run as `mlflow.search_runs` returns it (params.*, tags.*, ...)."""


def find_search(
    experiment: str, *, tracking_uri: str | None = None, search_id: str | None = None
) -> FoundSearch:
    """The named search of an experiment, or its latest; SpecError naming what is missing."""
    uri = resolve_tracking_uri(tracking_uri, None)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise SpecError("EXPERIMENT", f"no experiment named {experiment!r} at {uri}", names or None)
    searches = search_runs_of(str(exp.experiment_id), uri)
    if searches.empty:
        raise SpecError("EXPERIMENT", f"experiment {experiment!r} holds no actsweep search")
    ids = [str(i) for i in searches[f"tags.{TAG_SEARCH_ID}"]]
    if search_id is None:
        search_id = ids[0]
    elif search_id not in ids:
        raise SpecError("--search", f"no search {search_id!r} in experiment {experiment!r}", ids)
    row = searches[searches[f"tags.{TAG_SEARCH_ID}"] == search_id].iloc[0]
    return FoundSearch(uri, str(exp.experiment_id), search_id, row)


def load_leaderboard(
    experiment: str, *, tracking_uri: str | None = None, search_id: str | None = None
) -> pd.DataFrame:
    """The leaderboard of a search as a DataFrame (the latest search unless `search_id`).

    Computed from the child runs in MLflow, exactly as the search computed it.
    """
    found = find_search(experiment, tracking_uri=tracking_uri, search_id=search_id)
    activations = str(found.parent.get("params.space.activations", "") or "")
    strata = [a for a in activations.split(",") if a] or None
    runs = trial_runs_of(found.experiment_id, found.search_id, found.tracking_uri)
    return compute_leaderboard(trials_table(runs), strata)
