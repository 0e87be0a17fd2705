"""Log entries per service, kept as JSON lines under HOMERUN_HOME/logs.

Entries are buffered in memory and written by a periodic flush, so that nothing on a
request's path or an instance's output path waits on the disk.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def instance_entry(
    service: str, revision: str, instance: str, stream: str, line: str
) -> dict[str, Any]:
    """An instance's output line as a log entry; a JSON object line keeps its fields."""
    entry: dict[str, Any] = {}
    text = line.strip()
    if text.startswith("{") and text.endswith("}"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            entry = {"jsonPayload": parsed}
            severity = str(parsed.get("severity", "DEFAULT")).upper()
            entry["severity"] = severity if severity in SEVERITIES else "DEFAULT"
            entry["message"] = str(parsed.get("message", text))
    if not entry:
        # Cloud Run gives plain stdout and stderr lines no severity (DEFAULT).
        entry = {"severity": "DEFAULT", "message": line}
    entry.update(
        timestamp=now_iso(),
        service=service,
        revision=revision,
        instance=instance,
        logName="stdout" if stream == "stdout" else "stderr",
    )
    return entry


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
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._pending: dict[str, list[str]] = {}

    def emit(self, entry: dict[str, Any]) -> None:
        service = entry["service"]
        self._pending.setdefault(service, []).append(json.dumps(entry, ensure_ascii=False))

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        self._directory.mkdir(parents=True, exist_ok=True)
        for service, lines in pending.items():
            with open(self._path(service), "a", encoding="utf-8") as file:
                file.write("\n".join(lines) + "\n")

    def read(
        self, service: str, *, limit: int = 50, revision: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest `limit` entries, oldest first."""
        self.flush()
        path = self._path(service)
        if not path.exists():
            return []
        newest: deque[dict[str, Any]] = deque(maxlen=limit)
        for entry in _parse(path.read_text(encoding="utf-8").splitlines()):
            if revision is None or entry.get("revision") == revision:
                newest.append(entry)
        return list(newest)

    def delete(self, service: str) -> None:
        self._pending.pop(service, None)
        try:
            os.unlink(self._path(service))
        except FileNotFoundError:
            pass

    def _path(self, service: str) -> Path:
        return self._directory / f"{service}.jsonl"


def _parse(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    for line in lines:
        try:
            yield json.loads(line)
        except ValueError:
            continue
