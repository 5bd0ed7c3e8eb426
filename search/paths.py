"""Where things live: the tracking URI, and the private state directory beside it.

State (the Optuna journal, Ray Tune's experiment files) sits next to the embedded SQLite
store, or under ~/.actsweep for a remote tracking server, so one store means one place.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import urlparse

from search.errors import SpecError, brief

URI_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks")


def default_tracking_uri() -> str:
    """MLflow's own default: MLFLOW_TRACKING_URI, else a SQLite file in the working directory."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return env if env else "sqlite:///mlflow.db"


def resolve_tracking_uri(
    cli: str | None, spec_uri: str | None, field: str = "--tracking-uri"
) -> str:
    """The CLI flag wins over the spec, the spec over the environment and MLflow's default."""
    # `is not None`, not truthiness: `--tracking-uri ""` is a mistake to report, not a request
    # for the default store (it used to start a search in ./mlflow.db).
    if cli is not None:
        return check_tracking_uri(cli, field)
    if spec_uri is not None:
        return check_tracking_uri(spec_uri, "tracking.uri")
    return check_tracking_uri(default_tracking_uri(), "MLFLOW_TRACKING_URI")


def check_tracking_uri(uri: str, field: str = "--tracking-uri", local: bool = True) -> str:
    """`uri` if it is a tracking URI actsweep can use, else SpecError naming `field`.

    With ``local=False`` only the form is checked (a spec may name a store on another
    machine); with ``local=True`` a SQLite store's directory must also exist here.
    """
    allowed = [f"{s}://..." for s in URI_SCHEMES]
    if not isinstance(uri, str) or not uri.strip() or any(c in uri for c in "\n\r\x00"):
        raise SpecError(field, f"not a tracking URI: {brief(uri)}", allowed)
    try:
        parsed = urlparse(uri)
        host = parsed.hostname
    except ValueError as err:  # e.g. "http://[" (an unclosed IPv6 literal)
        raise SpecError(field, f"not a tracking URI: {brief(uri)} ({err})", allowed) from None
    scheme = parsed.scheme.split("+")[0]
    if scheme not in URI_SCHEMES:
        raise SpecError(field, f"unsupported tracking URI {brief(uri)}", allowed)
    if scheme in ("http", "https") and not host:
        raise SpecError(field, f"tracking URI {brief(uri)} has no host")
    if scheme == "sqlite":
        try:
            db = sqlite_path(uri)
            parent_ok = db is None or not local or db.parent.is_dir()
        except (OSError, RuntimeError, ValueError) as err:
            # A name too long for the file system, "~nosuchuser", undecodable bytes, ...
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise SpecError(
                field, f"unusable SQLite path in {brief(uri)}: {reason[:200]}"
            ) from None
        if db is None:
            raise SpecError(
                field, f"SQLite URI needs a file path, e.g. sqlite:///mlflow.db; got {brief(uri)}"
            )
        if not parent_ok:
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


def unsafe_reason(st: os.stat_result, uid: int) -> str | None:
    """Why state with this stat result must not be trusted by user `uid`, or None if it may.

    State is unpickled or replayed on resume (Tune's experiment files, the Optuna journal,
    the spool), so it must be owned by the user and writable by nobody else: anyone who can
    write it can run code as the user. Pure, so the owner rule is testable without root.
    """
    if st.st_uid != uid:
        return f"is owned by uid {st.st_uid}, not by you (uid {uid})"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return f"is writable by group or others (mode {mode:04o})"
    return None


def check_private(path: Path, field: str = "state directory") -> Path:
    """Refuse an existing state path another user could have written (SpecError, exit 2).

    Never repairs: chmod-ing a directory someone else could write would bless whatever they
    left in it. The message names the path and the fix.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    reason = unsafe_reason(st, os.getuid())
    if reason is not None:
        fix = "`chmod go-w` it" if st.st_uid == os.getuid() else "take ownership of it"
        raise SpecError(
            field,
            f"{path} {reason}; actsweep resumes from (unpickles) what it holds, so it refuses "
            f"state another user could have written. Check its contents and {fix}, "
            "or move it away to start afresh",
        )
    return path


def check_private_tree(root: Path, field: str = "state directory") -> Path:
    """`check_private` on `root` and everything under it (a symlink is checked at its target,
    never descended into)."""
    check_private(root, field)
    if not root.is_dir():
        return root
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            check_private(Path(top) / name, field)
    return root


def private_dir(path: Path, field: str = "state directory") -> Path:
    """Create `path` owner-only (0o700), or accept an existing one only if it is private."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if not path.is_dir():
            raise SpecError(field, f"{path} exists and is not a directory") from None
        return check_private(path, field)
    # mkdir's mode is masked by the umask; the directory is new and ours, so set it exactly.
    os.chmod(path, 0o700)
    return path


def private_file(path: Path, field: str = "state directory") -> Path:
    """Create an empty `path` 0o600 if it is missing; refuse an existing one that is not private."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return check_private(path, field)
    os.close(fd)
    return path


def state_dir(tracking_uri: str) -> Path:
    """The private directory for this store's Optuna journal and Tune files."""
    override = os.environ.get("ACTSWEEP_HOME")
    if override:
        return private_dir(Path(override).expanduser().resolve(), "ACTSWEEP_HOME")
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
