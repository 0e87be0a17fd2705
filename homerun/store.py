"""SQLite persistence of services, revisions and live instance pids, with migrations."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from homerun.access.iam import ALL_USERS, INVOKER_ROLE
from homerun.errors import NotFound
from homerun.model.artifact import ArtifactRecord
from homerun.model.jobs import Attempt, ExecutionStatus, TaskSettings
from homerun.model.states import RevisionStatus
from homerun.model.suggest import did_you_mean
from homerun.spec import RevisionSpec
from homerun.store_db import Transaction, connect
from homerun.traffic import TrafficEntry

_MIGRATIONS = [
    """
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        allow_unauthenticated INTEGER,
        traffic TEXT NOT NULL DEFAULT '[]',
        next_seq INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE revisions (
        name TEXT PRIMARY KEY,
        service TEXT NOT NULL REFERENCES services(name) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        ready_at REAL,
        artifact TEXT
    );
    CREATE INDEX revisions_by_service ON revisions(service, seq);
    CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        revision TEXT NOT NULL,
        pid INTEGER NOT NULL,
        start_ticks INTEGER
    );
    """,
    # Knative Service metadata kept by `services replace`, and the generation that counts
    # changes to a service's spec (template or traffic).
    """
    ALTER TABLE services ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE services ADD COLUMN annotations TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE services ADD COLUMN generation INTEGER NOT NULL DEFAULT 1
    """,
    # Access control: invoker bindings and ingress. The allow_unauthenticated column stops
    # being read: a service that was public keeps its allUsers binding, and one deployed before
    # access control existed (NULL) was public in fact, so it stays public.
    """
    CREATE TABLE iam_bindings (
        service TEXT NOT NULL REFERENCES services(name) ON DELETE CASCADE,
        role TEXT NOT NULL,
        member TEXT NOT NULL,
        PRIMARY KEY (service, role, member)
    );
    ALTER TABLE services ADD COLUMN ingress TEXT NOT NULL DEFAULT 'all';
    INSERT INTO iam_bindings (service, role, member)
        SELECT name, 'roles/run.invoker', 'allUsers' FROM services
        WHERE allow_unauthenticated IS NULL OR allow_unauthenticated = 1
    """,
    # Jobs: a job's template (container settings) and task settings; its executions, each
    # with the template, settings and artifact it runs (a job updated meanwhile keeps running
    # executions unchanged); and each task's attempts as a JSON list.
    """
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        generation INTEGER NOT NULL DEFAULT 1,
        template TEXT NOT NULL,
        settings TEXT NOT NULL,
        artifact TEXT NOT NULL,
        artifact_dir TEXT NOT NULL,
        schedule TEXT,
        time_zone TEXT NOT NULL DEFAULT 'UTC',
        scheduled_at REAL
    );
    CREATE TABLE executions (
        name TEXT PRIMARY KEY,
        job TEXT NOT NULL REFERENCES jobs(name) ON DELETE CASCADE,
        generation INTEGER NOT NULL,
        created_at REAL NOT NULL,
        completed_at REAL,
        status TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        template TEXT NOT NULL,
        settings TEXT NOT NULL,
        artifact TEXT NOT NULL,
        artifact_dir TEXT NOT NULL,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX executions_by_job ON executions(job, created_at);
    CREATE TABLE tasks (
        execution TEXT NOT NULL REFERENCES executions(name) ON DELETE CASCADE,
        task_index INTEGER NOT NULL,
        attempts TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (execution, task_index)
    )
    """,
]
# A service row with whether allUsers may invoke it.
_SERVICE_ROWS = (
    "SELECT services.*, EXISTS (SELECT 1 FROM iam_bindings WHERE service = services.name "
    f"AND role = '{INVOKER_ROLE}' AND member = '{ALL_USERS}') AS public FROM services"
)

# Stores of old versions may hold revisions in state "building": they count as starting.
_BUILDING = "building"


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    created_at: float
    allow_unauthenticated: bool  # allUsers holds roles/run.invoker
    traffic: tuple[TrafficEntry, ...]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    generation: int = 1
    ingress: str = "all"


@dataclass(frozen=True)
class RevisionRecord:
    name: str
    service: str
    seq: int
    spec: RevisionSpec
    status: RevisionStatus
    message: str
    created_at: float
    ready_at: float | None
    artifact: ArtifactRecord | None = field(default=None)


class Store:
    def __init__(self, path: Path) -> None:
        self._db = connect(path)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self._transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    def _transaction(self) -> Transaction:
        # isolation_level=None: we issue BEGIN ourselves; `with` commits or rolls back.
        self._db.execute("BEGIN IMMEDIATE")
        return Transaction(self._db)

    # -- services ---------------------------------------------------------------------

    def services(self) -> list[ServiceRecord]:
        rows = self._db.execute(f"{_SERVICE_ROWS} ORDER BY name").fetchall()
        return [_service(row) for row in rows]

    def service(self, name: str) -> ServiceRecord:
        row = self._db.execute(f"{_SERVICE_ROWS} WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [row[0] for row in self._db.execute("SELECT name FROM services")]
            raise NotFound(
                f"service {name!r} not found{did_you_mean(name, names)} "
                "(`homerun services list` shows them)"
            )
        return _service(row)

    def has_service(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM services WHERE name = ?", (name,)).fetchone()
        return row is not None

    def next_seq(self, service: str) -> int:
        row = self._db.execute(
            "SELECT next_seq FROM services WHERE name = ?", (service,)
        ).fetchone()
        return 1 if row is None else int(row[0])

    def create_revision(
        self,
        service: str,
        name: str,
        seq: int,
        spec: RevisionSpec,
        artifact: ArtifactRecord,
        allow_unauthenticated: bool | None,
        ingress: str | None = None,
    ) -> RevisionRecord:
        """Create the service if it is new (private unless told otherwise), and the revision
        in state starting; `allow_unauthenticated` and `ingress`, when given, are applied in
        the same transaction."""
        now = time.time()
        with self._transaction():
            if not self.has_service(service):
                self._db.execute(
                    "INSERT INTO services (name, created_at) VALUES (?, ?)", (service, now)
                )
            else:
                # A new revision is a new template: the service's next generation.
                self._db.execute(
                    "UPDATE services SET generation = generation + 1 WHERE name = ?", (service,)
                )
            self._set_access(service, allow_unauthenticated, ingress)
            self._db.execute("UPDATE services SET next_seq = ? WHERE name = ?", (seq + 1, service))
            self._db.execute(
                "INSERT INTO revisions (name, service, seq, spec, status, created_at, artifact) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    service,
                    seq,
                    spec.model_dump_json(),
                    RevisionStatus.STARTING,
                    now,
                    artifact.model_dump_json(),
                ),  # fmt: skip
            )
        return self.revision(name)

    def set_traffic(self, service: str, traffic: Iterable[TrafficEntry]) -> None:
        """Replace the traffic block; a change counts as a new generation of the service."""
        payload = json.dumps([entry.to_json() for entry in traffic])
        with self._transaction():
            self._db.execute(
                "UPDATE services SET generation = generation + (traffic != ?), traffic = ? "
                "WHERE name = ?",
                (payload, payload, service),
            )

    def set_metadata(
        self, service: str, labels: dict[str, str], annotations: dict[str, str]
    ) -> None:
        labels_json, annotations_json = json.dumps(labels), json.dumps(annotations)
        with self._transaction():
            self._db.execute(
                "UPDATE services SET generation = generation + "
                "(labels != ? OR annotations != ?), labels = ?, annotations = ? WHERE name = ?",
                (labels_json, annotations_json, labels_json, annotations_json, service),
            )

    def set_access(
        self, service: str, allow_unauthenticated: bool | None, ingress: str | None
    ) -> None:
        """`deploy --[no-]allow-unauthenticated` and `--ingress` on an existing service."""
        with self._transaction():
            self._set_access(service, allow_unauthenticated, ingress)

    def _set_access(
        self, service: str, allow_unauthenticated: bool | None, ingress: str | None
    ) -> None:
        if allow_unauthenticated is True:
            self._add_member(service, INVOKER_ROLE, ALL_USERS)
        elif allow_unauthenticated is False:
            self._db.execute(
                "DELETE FROM iam_bindings WHERE service = ? AND role = ? AND member = ?",
                (service, INVOKER_ROLE, ALL_USERS),
            )
        if ingress is not None:
            self._db.execute("UPDATE services SET ingress = ? WHERE name = ?", (ingress, service))

    def members(self, service: str, role: str = INVOKER_ROLE) -> frozenset[str]:
        rows = self._db.execute(
            "SELECT member FROM iam_bindings WHERE service = ? AND role = ?", (service, role)
        ).fetchall()
        return frozenset(row[0] for row in rows)

    def add_member(self, service: str, role: str, member: str) -> bool:
        """Grant `role` to `member`; False when it held it already."""
        with self._transaction():
            return self._add_member(service, role, member)

    def _add_member(self, service: str, role: str, member: str) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO iam_bindings (service, role, member) VALUES (?, ?, ?)",
            (service, role, member),
        )
        return cursor.rowcount > 0

    def remove_member(self, service: str, role: str, member: str) -> bool:
        """Revoke `role` from `member`; False when it did not hold it."""
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM iam_bindings WHERE service = ? AND role = ? AND member = ?",
                (service, role, member),
            )
            return cursor.rowcount > 0

    def delete_service(self, name: str) -> list[RevisionRecord]:
        revisions = self.revisions(name)
        with self._transaction():
            self._db.execute("DELETE FROM revisions WHERE service = ?", (name,))
            self._db.execute("DELETE FROM services WHERE name = ?", (name,))
        return revisions

    # -- revisions --------------------------------------------------------------------

    def revision(self, name: str) -> RevisionRecord:
        row = self._db.execute("SELECT * FROM revisions WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [row[0] for row in self._db.execute("SELECT name FROM revisions")]
            raise NotFound(
                f"revision {name!r} not found{did_you_mean(name, names)} "
                "(`homerun revisions list` shows them)"
            )
        return _revision(row)

    def revisions(self, service: str | None = None) -> list[RevisionRecord]:
        if service is None:
            rows = self._db.execute("SELECT * FROM revisions ORDER BY service, seq DESC")
        else:
            rows = self._db.execute(
                "SELECT * FROM revisions WHERE service = ? ORDER BY seq DESC", (service,)
            )
        return [_revision(row) for row in rows.fetchall()]

    def has_revision(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM revisions WHERE name = ?", (name,)).fetchone()
        return row is not None

    def set_artifact(self, name: str, artifact: ArtifactRecord) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE revisions SET artifact = ? WHERE name = ?",
                (artifact.model_dump_json(), name),
            )

    def latest_created(self, service: str) -> RevisionRecord | None:
        """The revision of the service's current template (Knative's latestCreatedRevision)."""
        row = self._db.execute(
            "SELECT * FROM revisions WHERE service = ? ORDER BY seq DESC LIMIT 1", (service,)
        ).fetchone()
        return _revision(row) if row else None

    def delete_revision(self, name: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM revisions WHERE name = ?", (name,))

    def latest_ready(self, service: str) -> RevisionRecord | None:
        row = self._db.execute(
            "SELECT * FROM revisions WHERE service = ? AND status = ? ORDER BY seq DESC LIMIT 1",
            (service, RevisionStatus.READY),
        ).fetchone()
        return _revision(row) if row else None

    def set_revision_status(
        self,
        name: str,
        status: RevisionStatus,
        message: str = "",
        artifact: ArtifactRecord | None = None,
    ) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE revisions SET status = ?, message = ?, "
                "ready_at = CASE WHEN ? = 'ready' THEN ? ELSE ready_at END, "
                "artifact = COALESCE(?, artifact) WHERE name = ?",
                (
                    status,
                    message,
                    status,
                    time.time(),
                    artifact.model_dump_json() if artifact is not None else None,
                    name,
                ),
            )

    def fail_unfinished_revisions(self, message: str) -> list[str]:
        """Revisions caught mid-deploy by a daemon that stopped are failed, not resumed."""
        rows = self._db.execute(
            "SELECT name FROM revisions WHERE status IN (?, ?)",
            (_BUILDING, RevisionStatus.STARTING),
        ).fetchall()
        for row in rows:
            self.set_revision_status(row[0], RevisionStatus.FAILED, message)
        return [row[0] for row in rows]

    # -- instances (only so that a restarted daemon can kill what a dead one left) -----

    def record_instance(self, name: str, revision: str, pid: int, start_ticks: int | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO instances (name, revision, pid, start_ticks) "
            "VALUES (?, ?, ?, ?)",
            (name, revision, pid, start_ticks),
        )

    def forget_instance(self, name: str) -> None:
        self._db.execute("DELETE FROM instances WHERE name = ?", (name,))

    def leftover_instances(self) -> list[tuple[str, int, int | None]]:
        rows = self._db.execute("SELECT name, pid, start_ticks FROM instances").fetchall()
        return [(row[0], row[1], row[2]) for row in rows]

    # -- jobs -------------------------------------------------------------------------------

    def jobs(self) -> list[JobRecord]:
        return [_job(row) for row in self._db.execute("SELECT * FROM jobs ORDER BY name")]

    def job(self, name: str) -> JobRecord:
        row = self._db.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [row[0] for row in self._db.execute("SELECT name FROM jobs")]
            raise NotFound(
                f"job {name!r} not found{did_you_mean(name, names)} "
                "(`homerun jobs list` shows them)"
            )
        return _job(row)

    def has_job(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone() is not None

    def put_job(
        self,
        name: str,
        template: RevisionSpec,
        settings: TaskSettings,
        artifact: ArtifactRecord,
        artifact_dir: str,
        schedule: str | None = None,
        time_zone: str = "UTC",
        scheduled_from: float | None = None,
    ) -> JobRecord:
        """Create the job, or make this its next generation. A schedule set or changed counts
        from `scheduled_from` (default now): runs it named before are not made up."""
        now = time.time()
        since = now if scheduled_from is None else scheduled_from
        values = (
            template.model_dump_json(),
            settings.model_dump_json(),
            artifact.model_dump_json(),
            artifact_dir,
            schedule,
            time_zone,
        )
        with self._transaction():
            if self.has_job(name):
                self._db.execute(
                    "UPDATE jobs SET scheduled_at = CASE WHEN schedule IS ? AND time_zone = ? "
                    "THEN scheduled_at ELSE ? END WHERE name = ?",
                    (schedule, time_zone, since, name),
                )
                self._db.execute(
                    "UPDATE jobs SET generation = generation + 1, updated_at = ?, template = ?, "
                    "settings = ?, artifact = ?, artifact_dir = ?, schedule = ?, time_zone = ? "
                    "WHERE name = ?",
                    (now, *values, name),
                )
            else:
                self._db.execute(
                    "INSERT INTO jobs (name, created_at, updated_at, template, settings, "
                    "artifact, artifact_dir, schedule, time_zone, scheduled_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, now, now, *values, since),
                )
        return self.job(name)

    def mark_scheduled(self, name: str, up_to: float) -> None:
        """The job's scheduled runs up to `up_to` are done with (made or skipped)."""
        with self._transaction():
            self._db.execute("UPDATE jobs SET scheduled_at = ? WHERE name = ?", (up_to, name))

    def delete_job(self, name: str) -> None:
        """The job, its executions and their tasks."""
        with self._transaction():
            self._db.execute("DELETE FROM jobs WHERE name = ?", (name,))

    # -- executions ---------------------------------------------------------------------------

    def create_execution(
        self,
        name: str,
        job: JobRecord,
        template: RevisionSpec,
        settings: TaskSettings,
        artifact: ArtifactRecord,
    ) -> ExecutionRecord:
        """An execution of `job` as it is now, running `template`, `settings` and `artifact`
        (the job's own, or overridden for this execution: env, task count, args)."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO executions (name, job, generation, created_at, status, template, "
                "settings, artifact, artifact_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    job.name,
                    job.generation,
                    time.time(),
                    ExecutionStatus.RUNNING,
                    template.model_dump_json(),
                    settings.model_dump_json(),
                    artifact.model_dump_json(),
                    job.artifact_dir,
                ),  # fmt: skip
            )
        return self.execution(name)

    def execution(self, name: str) -> ExecutionRecord:
        row = self._db.execute("SELECT * FROM executions WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [row[0] for row in self._db.execute("SELECT name FROM executions")]
            raise NotFound(
                f"execution {name!r} not found{did_you_mean(name, names)} "
                "(`homerun jobs executions list` shows them)"
            )
        return _execution(row)

    def has_execution(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM executions WHERE name = ?", (name,)).fetchone()
        return row is not None

    def executions(
        self, job: str | None = None, status: ExecutionStatus | None = None
    ) -> list[ExecutionRecord]:
        """Newest first."""
        clauses: list[str] = []
        values: list[str] = []
        if job is not None:
            clauses.append("job = ?")
            values.append(job)
        if status is not None:
            clauses.append("status = ?")
            values.append(status)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        rows = self._db.execute(
            f"SELECT * FROM executions {where}ORDER BY created_at DESC, rowid DESC", values
        )
        return [_execution(row) for row in rows.fetchall()]

    def finish_execution(self, name: str, status: ExecutionStatus, message: str) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE executions SET status = ?, message = ?, completed_at = ? WHERE name = ?",
                (status, message, time.time(), name),
            )

    def request_cancel(self, name: str) -> None:
        with self._transaction():
            self._db.execute("UPDATE executions SET cancel_requested = 1 WHERE name = ?", (name,))

    def delete_execution(self, name: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM executions WHERE name = ?", (name,))

    def record_attempt(self, execution: str, index: int, attempt: Attempt) -> None:
        """Add the task's attempt, or replace the one with its number (once it has ended)."""
        with self._transaction():
            row = self._db.execute(
                "SELECT attempts FROM tasks WHERE execution = ? AND task_index = ?",
                (execution, index),
            ).fetchone()
            attempts = [Attempt.model_validate(item) for item in json.loads(row[0])] if row else []
            attempts = [item for item in attempts if item.number != attempt.number]
            attempts.append(attempt)
            attempts.sort(key=lambda item: item.number)
            payload = json.dumps([item.model_dump() for item in attempts])
            self._db.execute(
                "INSERT INTO tasks (execution, task_index, attempts) VALUES (?, ?, ?) "
                "ON CONFLICT (execution, task_index) DO UPDATE SET attempts = excluded.attempts",
                (execution, index, payload),
            )

    def attempts(self, execution: str) -> dict[int, tuple[Attempt, ...]]:
        """Task index -> its attempts, oldest first; tasks never started are absent."""
        rows = self._db.execute(
            "SELECT task_index, attempts FROM tasks WHERE execution = ?", (execution,)
        ).fetchall()
        return {
            row[0]: tuple(Attempt.model_validate(item) for item in json.loads(row[1]))
            for row in rows
        }


def _service(row: sqlite3.Row) -> ServiceRecord:
    return ServiceRecord(
        name=row["name"],
        created_at=row["created_at"],
        allow_unauthenticated=bool(row["public"]),
        traffic=tuple(TrafficEntry(**entry) for entry in json.loads(row["traffic"])),
        labels=json.loads(row["labels"]),
        annotations=json.loads(row["annotations"]),
        generation=row["generation"],
        ingress=row["ingress"],
    )


def _revision(row: sqlite3.Row) -> RevisionRecord:
    return RevisionRecord(
        name=row["name"],
        service=row["service"],
        seq=row["seq"],
        spec=RevisionSpec.model_validate_json(row["spec"]),
        status=RevisionStatus(row["status"])
        if row["status"] != _BUILDING
        else RevisionStatus.STARTING,
        message=row["message"],
        created_at=row["created_at"],
        ready_at=row["ready_at"],
        artifact=ArtifactRecord.model_validate_json(row["artifact"]) if row["artifact"] else None,
    )


@dataclass(frozen=True)
class JobRecord:
    name: str
    created_at: float
    updated_at: float
    generation: int  # counts the job's updates; an execution keeps the one it ran
    template: RevisionSpec  # what each task runs: source, command, env, secrets, limits
    settings: TaskSettings
    artifact: ArtifactRecord
    artifact_dir: str  # the artifact's folder, under HOMERUN_HOME/jobs/artifacts/JOB/
    schedule: str | None = None  # unix-cron, read in `time_zone`
    time_zone: str = "UTC"
    scheduled_at: float | None = None  # runs named up to then are made or skipped


@dataclass(frozen=True)
class ExecutionRecord:
    name: str
    job: str
    generation: int
    created_at: float
    completed_at: float | None
    status: ExecutionStatus
    message: str
    template: RevisionSpec  # the job's, with this execution's overrides
    settings: TaskSettings
    artifact: ArtifactRecord
    artifact_dir: str
    cancel_requested: bool


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        name=row["name"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        generation=row["generation"],
        template=RevisionSpec.model_validate_json(row["template"]),
        settings=TaskSettings.model_validate_json(row["settings"]),
        artifact=ArtifactRecord.model_validate_json(row["artifact"]),
        artifact_dir=row["artifact_dir"],
        schedule=row["schedule"],
        time_zone=row["time_zone"],
        scheduled_at=row["scheduled_at"],
    )


def _execution(row: sqlite3.Row) -> ExecutionRecord:
    return ExecutionRecord(
        name=row["name"],
        job=row["job"],
        generation=row["generation"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        status=ExecutionStatus(row["status"]),
        message=row["message"],
        template=RevisionSpec.model_validate_json(row["template"]),
        settings=TaskSettings.model_validate_json(row["settings"]),
        artifact=ArtifactRecord.model_validate_json(row["artifact"]),
        artifact_dir=row["artifact_dir"],
        cancel_requested=bool(row["cancel_requested"]),
    )
