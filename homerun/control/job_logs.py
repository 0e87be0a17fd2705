"""A job's log: its tasks' output lines and the platform's events about its executions, kept by
the LogStore under the job's own log name, each entry labelled with its execution, task and
attempt (Cloud Logging's run.googleapis.com/execution_name, task_index and task_attempt)."""

from __future__ import annotations

import asyncio
import functools

import orjson

from homerun.model.logs import LogEntry
from homerun.observe.logs import SEVERITIES, LogStore, now_iso


def log_name(job: str) -> str:
    """The LogStore's name for a job's log: `JOB.job` (a file JOB.job.jsonl). Jobs and services
    have names of their own, so a job may share its name with a service: the dot, which no
    service name has, keeps their logs apart."""
    return f"{job}.job"


def task_entry(
    job: str, execution: str, task: int, attempt: int, stream: str, line: str
) -> LogEntry:
    """A task's output line as a log entry; a JSON object line keeps its fields, as an
    instance's does (observe/logs.instance_entry)."""
    entry: LogEntry = {"severity": "DEFAULT", "message": line}
    text = line.strip()
    if text.startswith("{") and text.endswith("}"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            severity = str(parsed.get("severity", "DEFAULT")).upper()
            entry = {
                "jsonPayload": parsed,
                "severity": severity if severity in SEVERITIES else "DEFAULT",
                "message": str(parsed.get("message", text)),
            }
    entry["timestamp"] = now_iso()
    entry["job"] = job
    entry["execution"] = execution
    entry["task"] = task
    entry["attempt"] = attempt
    entry["logName"] = "stdout" if stream == "stdout" else "stderr"
    return entry


def job_event(
    job: str,
    message: str,
    severity: str = "INFO",
    *,
    execution: str | None = None,
    task: int | None = None,
    attempt: int | None = None,
) -> LogEntry:
    """An entry the platform writes about a job (a build, an execution, a task's attempt); the
    fields given, and only those, follow its message in this order."""
    entry: LogEntry = {
        "timestamp": now_iso(),
        "severity": severity,
        "job": job,
        "logName": "homerun",
        "message": message,
    }
    if execution is not None:
        entry["execution"] = execution
    if task is not None:
        entry["task"] = task
    if attempt is not None:
        entry["attempt"] = attempt
    return entry


class JobLogs:
    """Writes and reads job logs through the LogStore."""

    def __init__(self, logs: LogStore) -> None:
        self._logs = logs

    def emit(self, entry: LogEntry) -> None:
        self._logs.emit_serialized(log_name(entry["job"]), orjson.dumps(entry))

    def recent(self, job: str, limit: int) -> list[LogEntry]:
        return self._logs.recent(log_name(job), limit)

    def flush(self) -> None:
        """Write what is pending now rather than at the next periodic flush."""
        self._logs.flush()

    def delete(self, job: str) -> None:
        self._logs.delete(log_name(job))

    async def read(
        self,
        job: str,
        limit: int,
        *,
        execution: str | None = None,
        since: str | None = None,
        task: int | None = None,
        after: str | None = None,
    ) -> list[LogEntry]:
        """The newest `limit` entries, oldest first; of one execution (read back only to its
        start, `since`) and one task when given; only those written after `after` (a tail's
        last timestamp) when given. Files are read in a thread."""
        self._logs.flush()
        if execution is None and task is None:
            return await asyncio.to_thread(
                functools.partial(self._logs.read_written, log_name(job), limit=limit, after=after)
            )
        # The LogStore filters on services' fields only: an execution's entries are read back
        # to its start and filtered here. Bounded by the entries written since it began.
        entries = await asyncio.to_thread(
            functools.partial(
                self._logs.read_written, log_name(job), limit=1_000_000, since=since, after=after
            )
        )
        kept = [
            entry
            for entry in entries
            if (execution is None or entry.get("execution") == execution)
            and (task is None or entry.get("task") == task)
        ]
        return kept[-limit:]
