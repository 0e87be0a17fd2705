"""Log entries per service, kept as JSON lines under HOMERUN_HOME/logs.

Entries are buffered in memory and written by a periodic flush, so that nothing on a
request's path or an instance's output path waits on the disk.
"""

from __future__ import annotations

import functools
import os
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from homerun.errors import InvalidSpec

SEVERITIES = (
    "DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY",
)  # fmt: skip
RECENT_ENTRIES = 200


def now_iso() -> str:
    return iso_time(time.time())


def iso_time(epoch_seconds: float) -> str:
    """RFC 3339 in UTC with microseconds, e.g. 2026-11-26T01:53:36.123456Z.

    A busy router timestamps thousands of request log entries a second, all in the same few
    seconds: the date and time of day are formatted once per second.
    """
    second, microsecond = divmod(round(epoch_seconds * 1_000_000), 1_000_000)
    return f"{_iso_second(second)}.{microsecond:06d}Z"


@functools.lru_cache(maxsize=8)
def _iso_second(epoch_second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


def instance_entry(
    service: str, revision: str, instance: str, stream: str, line: str
) -> dict[str, Any]:
    """An instance's output line as a log entry; a JSON object line keeps its fields."""
    log_name = "stdout" if stream == "stdout" else "stderr"
    text = line.strip()
    if text.startswith("{") and text.endswith("}"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            severity = str(parsed.get("severity", "DEFAULT")).upper()
            return {
                "jsonPayload": parsed,
                "severity": severity if severity in SEVERITIES else "DEFAULT",
                "message": str(parsed.get("message", text)),
                "timestamp": now_iso(),
                "service": service,
                "revision": revision,
                "instance": instance,
                "logName": log_name,
            }
    # Cloud Run gives plain stdout and stderr lines no severity (DEFAULT).
    return {
        "severity": "DEFAULT",
        "message": line,
        "timestamp": now_iso(),
        "service": service,
        "revision": revision,
        "instance": instance,
        "logName": log_name,
    }


def platform_entry(
    service: str, message: str, severity: str = "INFO", **fields: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "timestamp": now_iso(),
        "severity": severity,
        "service": service,
        "logName": "homerun",
        "message": message,
    }
    entry.update(fields)
    return entry


class LogStore:
    """Per-service JSON-lines files, each kept under `max_bytes` (one older file kept beside)."""

    def __init__(self, directory: Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._directory = directory
        self._max_bytes = max_bytes
        # Serialized entries waiting for the next flush (orjson: several times faster than the
        # standard library's json for a request log entry, which a busy router makes thousands
        # of a second).
        self._pending: dict[str, list[bytes]] = {}
        # The newest entries of each service, for the dashboard (no file read per refresh).
        self._recent: dict[str, deque[dict[str, Any]]] = {}

    def emit(self, entry: dict[str, Any]) -> None:
        service = entry["service"]
        self._pending.setdefault(service, []).append(orjson.dumps(entry))
        recent = self._recent.get(service)
        if recent is None:
            recent = self._recent[service] = deque(maxlen=RECENT_ENTRIES)
        recent.append(entry)

    def recent(self, service: str, limit: int = 50) -> list[dict[str, Any]]:
        entries = self._recent.get(service, ())
        return list(entries)[-limit:]

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        self._directory.mkdir(parents=True, exist_ok=True)
        for service, lines in pending.items():
            path = self._path(service)
            with open(path, "ab") as file:
                file.write(b"\n".join(lines) + b"\n")
                size = file.tell()
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
    ) -> list[dict[str, Any]]:
        """The newest `limit` matching entries, oldest first.

        `since` keeps entries at or after an ISO time; `after` those strictly after it (what
        `logs tail` asks for, with the timestamp of the last entry it printed).
        """
        self.flush()
        rank = severity_rank(min_severity) if min_severity else 0
        newest: deque[dict[str, Any]] = deque(maxlen=limit)
        for path in (self._path(service).with_suffix(".jsonl.1"), self._path(service)):
            if not path.exists():
                continue
            with open(path, "rb") as file:
                for entry in _parse(file):
                    timestamp = entry.get("timestamp", "")
                    if revision is not None and entry.get("revision") != revision:
                        continue
                    if rank and severity_rank(entry.get("severity", "DEFAULT")) < rank:
                        continue
                    if since is not None and timestamp < since:
                        continue
                    if after is not None and timestamp <= after:
                        continue
                    newest.append(entry)
        return list(newest)

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


def severity_rank(severity: str) -> int:
    """Cloud Logging's order: DEFAULT < DEBUG < INFO < NOTICE < WARNING < ERROR < ..."""
    try:
        return SEVERITIES.index(severity.upper())
    except ValueError:
        raise InvalidSpec(
            f"unknown severity {severity!r}; use one of {', '.join(SEVERITIES)}"
        ) from None


def _parse(lines: Iterable[bytes]) -> Iterable[dict[str, Any]]:
    for line in lines:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            yield entry
