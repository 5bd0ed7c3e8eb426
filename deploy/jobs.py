"""`actsweep jobs list|status|logs|stop`: the searches a Ray cluster runs as Ray jobs.

Also what `actsweep submit --wait` uses to follow a job: stream its logs, then exit with
its outcome (0 when it succeeded, the driver's own exit code when it failed, so a bad spec
found on the cluster still exits 2).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from search.errors import SpecError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

SUBMISSION_PREFIX = "actsweep-"
META_SEARCH_ID = "actsweep.search_id"
META_EXPERIMENT = "actsweep.experiment"
META_TRACKING_URI = "actsweep.tracking_uri"
META_SPEC_HASH = "actsweep.spec_hash"

ACTIVE = ("PENDING", "RUNNING")
EXIT_STOPPED = 1
EXIT_INTERRUPTED = 130
_POLL_S = 2.0


def exit_code(status: str, driver_exit_code: int | None) -> int:
    """The exit code that reports a finished job's outcome."""
    if status == "SUCCEEDED":
        return 0
    if status == "FAILED" and driver_exit_code is not None and 0 < driver_exit_code < 256:
        return driver_exit_code
    return 1 if status == "FAILED" else EXIT_STOPPED


def is_actsweep_job(job: Any) -> bool:
    meta = getattr(job, "metadata", None) or {}
    return META_SEARCH_ID in meta or str(job.submission_id or "").startswith(SUBMISSION_PREFIX)


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _one_line(text: str | None, width: int = 80) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def render_jobs(jobs: Iterable[Any]) -> str:
    """A table of jobs, newest first."""
    rows = sorted(jobs, key=lambda j: j.start_time or 0, reverse=True)
    header = ("SUBMISSION ID", "STATUS", "SEARCH", "STARTED (UTC)", "MESSAGE")
    table = [header] + [
        (
            str(j.submission_id or j.job_id),
            str(j.status),
            (j.metadata or {}).get(META_SEARCH_ID, "-"),
            _when(j.start_time),
            _one_line(j.message, 60),
        )
        for j in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in table
    ]
    return "\n".join(lines) + "\n"


def find_job(client: JobSubmissionClient, ref: str) -> Any:
    """The job named by a submission id, or the latest attempt of a search id (SpecError if none)."""
    jobs = client.list_jobs()
    by_id = {j.submission_id: j for j in jobs if j.submission_id}
    if ref in by_id:
        return by_id[ref]
    attempts = [
        j for j in jobs if is_actsweep_job(j) and (j.metadata or {}).get(META_SEARCH_ID) == ref
    ]
    if attempts:
        return max(attempts, key=lambda j: j.start_time or 0)
    known = sorted(j.submission_id for j in jobs if j.submission_id and is_actsweep_job(j))
    raise SpecError("JOB", f"no job {ref!r} on this cluster", known[-10:] or None)


def wait_terminal(client: JobSubmissionClient, job_id: str, poll_s: float = _POLL_S) -> Any:
    while True:
        info = client.get_job_info(job_id)
        if str(info.status) not in ACTIVE:
            return info
        time.sleep(poll_s)


async def _tail(client: JobSubmissionClient, job_id: str, out: TextIO) -> None:
    async for chunk in client.tail_job_logs(job_id):
        out.write(chunk)
        out.flush()


def follow(client: JobSubmissionClient, job_id: str, out: TextIO | None = None) -> int:
    """Stream a job's logs until it ends; return its exit code (see `exit_code`)."""
    out = sys.stdout if out is None else out
    try:
        try:
            asyncio.run(_tail(client, job_id, out))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # the log stream is a websocket: it can drop on long jobs
            print(
                f"actsweep: log stream of {job_id} ended early ({type(exc).__name__}); "
                "waiting for the job to finish",
                file=sys.stderr,
            )
        info = wait_terminal(client, job_id)
    except KeyboardInterrupt:
        print(
            f"\nactsweep: stopped following; job {job_id} keeps running on the cluster "
            f"(`actsweep jobs logs {job_id} --follow` to follow, `actsweep jobs stop {job_id}` to stop)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    status = str(info.status)
    code = getattr(info, "driver_exit_code", None)
    if code:
        detail = f" (exit code {code})"  # its logs, just streamed, say why
    elif status != "SUCCEEDED" and info.message:
        detail = f": {_one_line(info.message, 200)}"
    else:
        detail = ""
    print(f"job {job_id} {status}{detail}", file=out, flush=True)
    return exit_code(status, code)


def describe(job: Any) -> str:
    meta = job.metadata or {}
    lines = [
        f"job:        {job.submission_id}",
        f"status:     {job.status}" + (f" ({_one_line(job.message, 200)})" if job.message else ""),
        f"search:     {meta.get(META_SEARCH_ID, '-')}",
        f"experiment: {meta.get(META_EXPERIMENT, '-')} at {meta.get(META_TRACKING_URI, '-')}",
        f"started:    {_when(job.start_time)}",
        f"ended:      {_when(job.end_time)}",
    ]
    code = getattr(job, "driver_exit_code", None)
    if code is not None:
        lines.append(f"exit code:  {code}")
    return "\n".join(lines) + "\n"


def run_jobs_command(
    client: JobSubmissionClient, action: str, ref: str | None, *, follow_logs: bool, show_all: bool
) -> int:
    """One `actsweep jobs ACTION [JOB]` against a connected client; returns the exit code."""
    if action == "list":
        jobs = [j for j in client.list_jobs() if show_all or is_actsweep_job(j)]
        print(render_jobs(jobs), end="")
        return 0
    if ref is None:
        raise SpecError("JOB", f"`actsweep jobs {action}` needs a submission id or a search id")
    job = find_job(client, ref)
    job_id = str(job.submission_id)
    if action == "status":
        print(describe(client.get_job_info(job_id)), end="")
        return 0
    if action == "logs":
        if follow_logs:
            return follow(client, job_id)
        print(client.get_job_logs(job_id), end="")
        return 0
    if action == "stop":
        if client.stop_job(job_id):
            print(f"stopping job {job_id}")
        else:
            print(f"job {job_id} is not running ({job.status})")
        return 0
    raise SpecError("ACTION", f"unknown action {action!r}", ["list", "status", "logs", "stop"])
