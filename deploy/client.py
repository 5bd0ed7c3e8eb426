"""Connect to a Ray cluster's Jobs API with the cluster's auth token, or say in one line why not.

The token is looked up where Ray itself looks (``RAY_AUTH_TOKEN``, then the file named by
``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``) and travels only in the request's
``Authorization: Bearer`` header: never in a job's entrypoint, runtime environment or
metadata, never in output. A cluster that takes jobs without a token is refused unless the
caller says otherwise: anyone who reaches such a cluster can run code on it (ShadowRay,
CVE-2023-48022), including code that reads what our jobs send there.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from search.errors import SpecError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

TOKEN_FIELD = "auth token"
HOW_TO_GIVE_TOKEN = (
    "set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or save it as "
    "~/.ray/auth_token (print the cluster's token on its head node with `ray get-auth-token`)"
)
ADDRESS_HELP = (
    "the Ray Jobs API of the cluster, e.g. http://127.0.0.1:8265 through "
    "`ray dashboard ray_cluster.yaml` (an SSH tunnel to the head's loopback)"
)
# Ray's JobSubmissionClient lets these override the address it is given; we never want a
# token sent anywhere but the address the user typed.
_ADDRESS_OVERRIDES = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    source: str
    """Where it came from, for messages (never the value)."""


def find_token(env: Mapping[str, str] | None = None, home: Path | None = None) -> Token | None:
    """The token, with Ray's precedence; a named but unreadable token file is an error (as in Ray)."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return Token(env["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN")
    named = env.get("RAY_AUTH_TOKEN_PATH", "")
    if named:
        value = _read_token(Path(named).expanduser())
        if value is None:
            raise SpecError(
                "RAY_AUTH_TOKEN_PATH",
                f"cannot read an auth token from {named}; {HOW_TO_GIVE_TOKEN}",
            )
        return Token(value, f"RAY_AUTH_TOKEN_PATH ({named})")
    default = (home or Path.home()) / ".ray" / "auth_token"
    value = _read_token(default)
    return None if value is None else Token(value, str(default))


def _read_token(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def resolve_address(cli: str | None, env: Mapping[str, str] | None = None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS, else an http(s) RAY_ADDRESS; checked, no trailing /."""
    env = os.environ if env is None else env
    address = cli or env.get("RAY_API_SERVER_ADDRESS") or ""
    if not address and env.get("RAY_ADDRESS", "").startswith(("http://", "https://")):
        address = env["RAY_ADDRESS"]
    if not address:
        raise SpecError("--address", f"missing: give {ADDRESS_HELP}")
    parts = urlsplit(address.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError("--address", f"{address!r} is not {ADDRESS_HELP}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise SpecError("--address", f"{address!r}: give only scheme, host and port")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise SpecError("--address", f"{address!r} has a malformed port") from None
    return address.strip().rstrip("/")


def is_loopback(address: str) -> bool:
    host = urlsplit(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_headers(token: Token | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.value}"} if token is not None else {}


def probe(
    address: str,
    token: Token | None,
    *,
    allow_unauthenticated: bool = False,
    err: TextIO | None = None,
) -> None:
    """Check that the Jobs API answers and accepts our token, before any job is sent.

    Raises SpecError (one line, exit 2) for an unreachable address, a missing or rejected
    token (HTTP 401/403), and a cluster that runs without authentication.
    """
    import requests

    err = sys.stderr if err is None else err
    if token is not None and urlsplit(address).scheme == "http" and not is_loopback(address):
        print(
            f"actsweep: warning: sending the cluster's token to {address} over unencrypted "
            "HTTP; reach the dashboard through `ray dashboard ray_cluster.yaml` "
            "(http://127.0.0.1:8265) or https",
            file=err,
        )
    try:
        mode = requests.get(f"{address}/api/authentication_mode", timeout=_TIMEOUT_S)
        answer = requests.get(
            f"{address}/api/version", headers=auth_headers(token), timeout=_TIMEOUT_S
        )
    except requests.RequestException as exc:
        raise SpecError(
            "--address", f"cannot reach the Ray Jobs API at {address} ({type(exc).__name__})"
        ) from None
    if answer.status_code in (401, 403):
        if token is None:
            raise SpecError(
                TOKEN_FIELD,
                f"the Ray cluster at {address} requires its auth token "
                f"(HTTP {answer.status_code}) and none was found: {HOW_TO_GIVE_TOKEN}",
            )
        raise SpecError(
            TOKEN_FIELD,
            f"the Ray cluster at {address} rejected the token from {token.source} "
            f"(HTTP {answer.status_code}): it is not this cluster's token; {HOW_TO_GIVE_TOKEN}",
        )
    if answer.status_code != 200:
        raise SpecError(
            "--address",
            f"{address} did not answer as a Ray Jobs API (HTTP {answer.status_code} on /api/version)",
        )
    disabled = mode.status_code == 200 and _mode_of(mode) == "disabled"
    if disabled and not allow_unauthenticated:
        raise SpecError(
            "--address",
            f"the Ray cluster at {address} accepts jobs without authentication: anyone who "
            "reaches it can run code there (CVE-2023-48022). Start its nodes with "
            "RAY_AUTH_MODE=token (see deploy/cluster-launcher.md), or pass "
            "--allow-unauthenticated to submit anyway",
        )


def _mode_of(response: Any) -> str:
    try:
        return str(response.json().get("authentication_mode", ""))
    except (ValueError, AttributeError):
        return ""


@contextmanager
def _without_address_overrides() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in _ADDRESS_OVERRIDES if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(
    address: str, *, allow_unauthenticated: bool = False, err: TextIO | None = None
) -> JobSubmissionClient:
    """A JobSubmissionClient for `address` that sends the token (SpecError when it cannot)."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    token = find_token()
    probe(address, token, allow_unauthenticated=allow_unauthenticated, err=err)
    with _without_address_overrides():
        try:
            return JobSubmissionClient(address, headers=auth_headers(token))
        except AuthenticationError:
            raise SpecError(
                TOKEN_FIELD, f"the Ray cluster at {address} refused the token; {HOW_TO_GIVE_TOKEN}"
            ) from None
        except ConnectionError:
            raise SpecError("--address", f"cannot reach the Ray Jobs API at {address}") from None
