"""SQLite persistence of Cloud Scheduler-style HTTP jobs (`homerun scheduler jobs`), beside
store.py's tables in the same database file: each job's schedule, target and state, up to when
its runs were handled, and its newest calls."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from homerun import store_db
from homerun.errors import InvalidSpec, NotFound
from homerun.model.scheduler import ATTEMPTS_KEPT, CallAttempt, HttpTarget, State
from homerun.model.suggest import did_you_mean

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS scheduler_jobs (
        name TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        schedule TEXT NOT NULL,
        time_zone TEXT NOT NULL,
        target TEXT NOT NULL,
        description TEXT,
        state TEXT NOT NULL,
        scheduled_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS scheduler_attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT NOT NULL,
        attempt TEXT NOT NULL
    )
    """,
)


@dataclass(frozen=True)
class SchedulerJobRecord:
    name: str
    created_at: float
    schedule: str
    time_zone: str
    target: HttpTarget
    description: str | None
    state: State
    scheduled_at: float  # runs named up to this time were handled (made or skipped)


class SchedulerStore:
    def __init__(self, path: Path) -> None:
        self._db = store_db.connect(path)  # store.py's connection, its busy timeout included
        self._db.row_factory = sqlite3.Row
        for statement in _SCHEMA:
            self._db.execute(statement)

    def close(self) -> None:
        self._db.close()

    def jobs(self) -> list[SchedulerJobRecord]:
        rows = self._db.execute("SELECT * FROM scheduler_jobs ORDER BY name").fetchall()
        return [_job(row) for row in rows]

    def job(self, name: str) -> SchedulerJobRecord:
        row = self._db.execute("SELECT * FROM scheduler_jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [row[0] for row in self._db.execute("SELECT name FROM scheduler_jobs")]
            raise NotFound(
                f"scheduler job {name!r} not found{did_you_mean(name, names)} "
                "(`homerun scheduler jobs list` shows them)"
            )
        return _job(row)

    def create(
        self,
        name: str,
        schedule: str,
        time_zone: str,
        target: HttpTarget,
        description: str | None,
        now: float,
    ) -> SchedulerJobRecord:
        try:
            self._db.execute(
                "INSERT INTO scheduler_jobs (name, created_at, schedule, time_zone, target, "
                "description, state, scheduled_at) VALUES (?, ?, ?, ?, ?, ?, 'ENABLED', ?)",
                (name, now, schedule, time_zone, target.model_dump_json(), description, now),
            )
        except sqlite3.IntegrityError:
            raise InvalidSpec(
                f"scheduler job {name} already exists; delete it first "
                f"(`homerun scheduler jobs delete {name}`)"
            ) from None
        return self.job(name)

    def set_state(self, name: str, state: State, scheduled_at: float) -> SchedulerJobRecord:
        """Pause or resume: a resumed job counts from `scheduled_at` (runs named while it was
        paused are not made up)."""
        self.job(name)  # NotFound
        self._db.execute(
            "UPDATE scheduler_jobs SET state = ?, scheduled_at = ? WHERE name = ?",
            (state, scheduled_at, name),
        )
        return self.job(name)

    def mark_scheduled(self, name: str, at: float) -> None:
        self._db.execute("UPDATE scheduler_jobs SET scheduled_at = ? WHERE name = ?", (at, name))

    def delete(self, name: str) -> None:
        self.job(name)  # NotFound
        self._db.execute("DELETE FROM scheduler_jobs WHERE name = ?", (name,))
        self._db.execute("DELETE FROM scheduler_attempts WHERE job = ?", (name,))

    def record_attempt(self, name: str, attempt: CallAttempt) -> None:
        """Keep the call, and the newest ATTEMPTS_KEPT of the job's calls."""
        self._db.execute(
            "INSERT INTO scheduler_attempts (job, attempt) VALUES (?, ?)",
            (name, attempt.model_dump_json()),
        )
        self._db.execute(
            "DELETE FROM scheduler_attempts WHERE job = ? AND id NOT IN "
            "(SELECT id FROM scheduler_attempts WHERE job = ? ORDER BY id DESC LIMIT ?)",
            (name, name, ATTEMPTS_KEPT),
        )

    def attempts(self, name: str) -> list[CallAttempt]:
        """The newest first."""
        rows = self._db.execute(
            "SELECT attempt FROM scheduler_attempts WHERE job = ? ORDER BY id DESC", (name,)
        ).fetchall()
        return [CallAttempt.model_validate_json(row[0]) for row in rows]


def _job(row: sqlite3.Row) -> SchedulerJobRecord:
    return SchedulerJobRecord(
        name=row["name"],
        created_at=row["created_at"],
        schedule=row["schedule"],
        time_zone=row["time_zone"],
        target=HttpTarget.model_validate_json(row["target"]),
        description=row["description"],
        state=row["state"],
        scheduled_at=row["scheduled_at"],
    )
