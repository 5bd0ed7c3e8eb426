"""Where things live: the tracking URI, and the private state directory beside it.

State (the Optuna journal, Ray Tune's experiment files) sits next to the embedded SQLite
store, or under ~/.actsweep for a remote tracking server, so one store means one place.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from search.errors import SpecError

URI_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks")


def default_tracking_uri() -> str:
    """MLflow's own default: MLFLOW_TRACKING_URI, else a SQLite file in the working directory."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return env if env else "sqlite:///mlflow.db"


def resolve_tracking_uri(
    cli: str | None, spec_uri: str | None, field: str = "--tracking-uri"
) -> str:
    """The CLI flag wins over the spec, the spec over the environment and MLflow's default."""
    uri = cli or spec_uri or default_tracking_uri()
    return check_tracking_uri(uri, field if cli else "tracking.uri")


def check_tracking_uri(uri: str, field: str = "--tracking-uri") -> str:
    if not isinstance(uri, str) or not uri.strip() or any(c in uri for c in "\n\r\x00"):
        raise SpecError(field, f"not a tracking URI: {uri!r}", [f"{s}://..." for s in URI_SCHEMES])
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme not in URI_SCHEMES:
        raise SpecError(
            field, f"unsupported tracking URI {uri!r}", [f"{s}://..." for s in URI_SCHEMES]
        )
    if scheme in ("http", "https") and not parsed.hostname:
        raise SpecError(field, f"tracking URI {uri!r} has no host")
    if scheme == "sqlite":
        db = sqlite_path(uri)
        if db is None:
            raise SpecError(
                field, f"SQLite URI needs a file path, e.g. sqlite:///mlflow.db; got {uri!r}"
            )
        if not db.parent.is_dir():
            raise SpecError(field, f"directory of the SQLite store does not exist: {db.parent}")
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative paths are relative to the cwd)."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri[len("sqlite:///") :].split("?")[0]
    if not raw or raw == ":memory:":
        return None
    return Path(raw).expanduser().resolve()


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) with owner-only permissions on the leaf."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def state_dir(tracking_uri: str) -> Path:
    """The private directory for this store's Optuna journal and Tune files."""
    override = os.environ.get("ACTSWEEP_HOME")
    if override:
        return private_dir(Path(override).expanduser().resolve())
    db = sqlite_path(tracking_uri)
    if db is not None:
        return private_dir(db.parent / ".actsweep")
    return private_dir(Path.home() / ".actsweep")


def artifact_root(tracking_uri: str) -> str | None:
    """Artifact location for new experiments: beside a SQLite store, else the server's choice."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    return (db.parent / "mlruns").as_uri()
