"""Log entries per service, kept as JSON lines under HOMERUN_HOME/logs.

Entries are buffered in memory and written by a periodic flush, so that nothing on a
request's path or an instance's output path waits on the disk.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import orjson

from homerun.errors import InvalidSpec
from homerun.model.logs import LogEntry

SEVERITIES = (
    "DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY",
)  # fmt: skip
RECENT_ENTRIES = 200


def now_iso() -> str:
    return iso_time(time.time())


def iso_time(epoch_seconds: float) -> str:
    """RFC 3339 in UTC with microseconds, e.g. 2026-11-26T01:53:36.123456Z."""
    return iso_time_bytes(epoch_seconds).decode()


def iso_time_bytes(epoch_seconds: float) -> bytes:
    """The same as ASCII bytes.

    A busy router timestamps thousands of request log entries a second, all in the same few
    seconds: the date and time of day are formatted once per second.
    """
    second, microsecond = divmod(round(epoch_seconds * 1_000_000), 1_000_000)
    return b"%s.%06dZ" % (_iso_second(second), microsecond)


@functools.lru_cache(maxsize=8)
def _iso_second(epoch_second: int) -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second)).encode()


@functools.lru_cache(maxsize=1024)
def entry_tail(service: str, revision: str | None, instance: str | None, log_name: str) -> bytes:
    """The fields that close a serialized entry of one instance's (or revision's) log,
    `,"service":...,"logName":...}`: the same for all its lines, so built once."""
    fields = {"service": service, "revision": revision, "instance": instance}
    fields = {name: value for name, value in fields.items() if value is not None}
    return b"," + orjson.dumps({**fields, "logName": log_name})[1:]


# Fields of an app's JSON line that Cloud Logging lifts out of the payload onto the entry
# (its "special JSON fields"), so that an app's line and its request's log share a trace.
_PROMOTED = {
    "logging.googleapis.com/trace": "trace",
    "logging.googleapis.com/spanId": "spanId",
    "logging.googleapis.com/trace_sampled": "traceSampled",
    "logging.googleapis.com/labels": "labels",
    "logging.googleapis.com/sourceLocation": "sourceLocation",
    "logging.googleapis.com/insertId": "insertId",
    "logging.googleapis.com/operation": "operation",
    "httpRequest": "httpRequest",
}


def instance_entry(service: str, revision: str, instance: str, stream: str, line: str) -> bytes:
    """An instance's output line as a serialized log entry; a JSON object line keeps its
    fields. Built from pieces (an app may print a line per request): for LogStore.emit_serialized.
    """
    log_name = "stdout" if stream == "stdout" else "stderr"
    text = line.strip()
    if text.startswith("{") and text.endswith("}"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            severity = str(parsed.get("severity", "DEFAULT")).upper()
            promoted = {field: parsed.pop(key) for key, field in _PROMOTED.items() if key in parsed}
            try:
                return orjson.dumps(
                    {
                        "jsonPayload": parsed,
                        "severity": severity if severity in SEVERITIES else "DEFAULT",
                        "message": str(parsed.get("message", text)),
                        **promoted,
                        "timestamp": now_iso(),
                        "service": service,
                        "revision": revision,
                        "instance": instance,
                        "logName": log_name,
                    }
                )
            except orjson.JSONEncodeError:
                pass  # nested deeper than orjson writes (it reads deeper): kept as text
    # Cloud Run gives plain stdout and stderr lines no severity (DEFAULT).
    return b'{"severity":"DEFAULT","message":%s,"timestamp":"%s"%s' % (
        orjson.dumps(line),
        iso_time_bytes(time.time()),
        entry_tail(service, revision, instance, log_name),
    )


def platform_entry(
    service: str,
    message: str,
    severity: str = "INFO",
    *,
    revision: str | None = None,
    instance: str | None = None,
    desired: int | None = None,
    mode: str | None = None,
) -> LogEntry:
    """An entry the platform writes about a service; the fields given, and only those, follow
    its message in this order."""
    entry: LogEntry = {
        "timestamp": now_iso(),
        "severity": severity,
        "service": service,
        "logName": "homerun",
        "message": message,
    }
    if revision is not None:
        entry["revision"] = revision
    if instance is not None:
        entry["instance"] = instance
    if desired is not None:
        entry["desired"] = desired
    if mode is not None:
        entry["mode"] = mode
    return entry


class LogStore:
    """Per-service JSON-lines files, each kept under `max_bytes` (one older file kept beside)."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 64 * 1024 * 1024,
        report: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._directory = directory
        self._max_bytes = max_bytes
        # Told when writing a service's log starts failing (a full disk) and when it works
        # again: the daemon prints it on its stderr.
        self._report = report
        # Service -> (entries dropped since its writes began to fail, the first error).
        self._lost: dict[str, tuple[int, str]] = {}
        # Serialized entries waiting for the next flush. Request log entries and instance output
        # lines, which a busy router makes thousands of a second, come serialized already (built
        # from byte templates); other entries go through orjson.
        self._pending: dict[str, list[bytes]] = {}
        # The newest entries of each service, for the dashboard (no file read per refresh),
        # kept serialized: they are read far less often than they are written.
        self._recent: dict[str, deque[bytes]] = {}

    def emit(self, entry: LogEntry) -> None:
        self.emit_serialized(entry["service"], orjson.dumps(entry))

    def emit_serialized(self, service: str, entry: bytes) -> None:
        """An entry already serialized as one JSON object (no newline)."""
        pending = self._pending.get(service)
        if pending is None:
            pending = self._pending[service] = []
        pending.append(entry)
        recent = self._recent.get(service)
        if recent is None:
            recent = self._recent[service] = deque(maxlen=RECENT_ENTRIES)
        recent.append(entry)

    def recent(self, service: str, limit: int = 50) -> list[LogEntry]:
        entries = list(self._recent.get(service, ()))[-limit:] if limit > 0 else []
        # Entries kept are what homerun serialized: they read back as entries.
        return [cast(LogEntry, orjson.loads(entry)) for entry in entries]

    async def flush_every(self, seconds: float) -> None:
        """Flush every `seconds` until cancelled."""
        while True:
            await asyncio.sleep(seconds)
            self.flush()

    def flush(self) -> None:
        """Write the pending entries. A write that fails (no space left, a read-only disk)
        leaves no part of a line behind: the file is cut back to where it was, the entries are
        dropped (memory stays bounded) and counted, and once a write of the service's log
        works again a WARNING entry there says how many were lost and why."""
        pending, self._pending = self._pending, {}
        for service, lines in pending.items():
            lost = self._lost.get(service)
            if lost is not None:
                count, reason = lost
                notice = platform_entry(
                    service,
                    f"{count} log entries were lost: they could not be written ({reason})",
                    severity="WARNING",
                )
                lines = [orjson.dumps(notice), *lines]
            try:
                self._append(self._path(service), b"\n".join(lines) + b"\n")
            except OSError as error:
                reason = error.strerror or str(error)
                count = len(lines) - (lost is not None)
                if lost is None:
                    self._report(
                        f"cannot write the log of {service} to {self._path(service)}: {reason}; "
                        "its entries are dropped until writing works again (free some space)"
                    )
                    self._lost[service] = (count, reason)
                else:
                    self._lost[service] = (lost[0] + count, lost[1])
                continue
            if lost is not None:
                del self._lost[service]
                self._report(f"the log of {service} is written again; {lost[0]} entries were lost")

    def _append(self, path: Path, data: bytes) -> None:
        """Append `data` whole or not at all; keep the file under its size (rotation)."""
        self._directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                os.ftruncate(fd, start)  # no half line that the next entries would run into
                raise
            size = start + len(data)
        finally:
            os.close(fd)
        if size > self._max_bytes:
            # Size-based retention: the full file becomes the older one, replacing it.
            os.replace(path, path.with_suffix(".jsonl.1"))

    def read(
        self,
        service: str,
        *,
        limit: int = 50,
        revision: str | None = None,
        min_severity: str | None = None,
        since: str | None = None,
        after: str | None = None,
        trace: str | None = None,
    ) -> list[LogEntry]:
        """The newest `limit` matching entries, oldest first.

        `since` keeps entries at or after an ISO time; `after` those strictly after it (what
        `logs tail` asks for, with the timestamp of the last entry it printed).
        """
        self.flush()
        return self.read_written(
            service,
            limit=limit,
            revision=revision,
            min_severity=min_severity,
            since=since,
            after=after,
            trace=trace,
        )

    def read_written(
        self,
        service: str,
        *,
        limit: int = 50,
        revision: str | None = None,
        min_severity: str | None = None,
        since: str | None = None,
        after: str | None = None,
        trace: str | None = None,
    ) -> list[LogEntry]:
        """`read` of what is on disk (no flush: safe in a thread while the loop logs).

        Files are read from their end, newest entry first, and reading stops once `limit`
        entries matched or the entries are older than `since`/`after`: the newest 50 of a
        130 MB log cost a few blocks, not the whole file."""
        rank = severity_rank(min_severity) if min_severity else 0
        bound = max(filter(None, (since, after)), default=None)
        # Entries are written nearly in time order: a request's entry is written with the next
        # second's batch, after lines its instance printed later. So reading backwards stops
        # only at entries a minute older than the bound.
        stop_before = _minute_before(bound) if bound is not None else None
        newest: list[LogEntry] = []
        for path in (self._path(service), self._path(service).with_suffix(".jsonl.1")):
            if len(newest) >= limit:
                break
            try:
                file = open(path, "rb")  # noqa: SIM115 - closed below, read lazily
            except FileNotFoundError:
                continue
            with file:
                for entry in _parse(_lines_backwards(file)):
                    timestamp = entry.get("timestamp", "")
                    if stop_before is not None and timestamp and timestamp < stop_before:
                        return newest[::-1]  # older entries follow: none can match
                    if revision is not None and entry.get("revision") != revision:
                        continue
                    if rank and severity_rank(entry.get("severity", "DEFAULT")) < rank:
                        continue
                    if since is not None and timestamp < since:
                        continue
                    if after is not None and timestamp <= after:
                        continue
                    if trace is not None and not _same_trace(entry.get("trace"), trace):
                        continue
                    newest.append(entry)
                    if len(newest) >= limit:
                        break
        return newest[::-1]

    def delete(self, service: str) -> None:
        self._pending.pop(service, None)
        self._recent.pop(service, None)
        for path in (self._path(service), self._path(service).with_suffix(".jsonl.1")):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _path(self, service: str) -> Path:
        return self._directory / f"{service}.jsonl"


def _same_trace(value: Any, trace: str) -> bool:
    """`trace` is a trace id or projects/P/traces/ID: an entry's trace matches either form (an
    app may log the bare id)."""
    if not isinstance(value, str):
        return False
    return value.rpartition("/")[2].lower() == trace.rpartition("/")[2].lower()


def severity_rank(severity: str) -> int:
    """Cloud Logging's order: DEFAULT < DEBUG < INFO < NOTICE < WARNING < ERROR < ..."""
    try:
        return SEVERITIES.index(severity.upper())
    except ValueError:
        raise InvalidSpec(
            f"unknown severity {severity!r}; use one of {', '.join(SEVERITIES)}"
        ) from None


def _minute_before(timestamp: str) -> str:
    """The ISO time a minute before `timestamp` (itself, when it cannot be read)."""
    try:
        moment = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    return iso_time(moment.timestamp() - 60)


# How often a thread reading a log hands the GIL to the event loop, and for how long. Each
# block's read() releases the GIL and the reader takes it straight back: the loop, woken each
# time only to find it taken again, restarts its switch interval (5 ms) and can wait for the whole
# file (60-140 ms in 110 MB). A real sleep every few milliseconds of work lets it in for sure.
HAND_OVER_EVERY = 0.002
HAND_OVER_FOR = 0.0002


def _lines_backwards(file: BinaryIO, block: int = 64 * 1024) -> Iterator[bytes]:
    """The lines of a file, last first, read in blocks from its end. Meant for a thread: every
    HAND_OVER_EVERY seconds of reading and of the caller's work it sleeps HAND_OVER_FOR."""
    file.seek(0, os.SEEK_END)
    position = file.tell()
    partial = b""
    worked_since = time.monotonic()
    while position > 0:
        if time.monotonic() - worked_since > HAND_OVER_EVERY:
            time.sleep(HAND_OVER_FOR)
            worked_since = time.monotonic()
        step = min(block, position)
        position -= step
        file.seek(position)
        lines = (file.read(step) + partial).split(b"\n")
        partial = lines.pop(0)  # may continue in the block before
        for line in reversed(lines):
            if line:
                yield line
    if partial:
        yield partial


def _parse(lines: Iterable[bytes]) -> Iterable[LogEntry]:
    for line in lines:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            # An object line on disk is an entry homerun wrote (a torn line is skipped above).
            yield cast(LogEntry, entry)
