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
from homerun.model.states import RevisionStatus
from homerun.model.suggest import did_you_mean
from homerun.spec import RevisionSpec
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
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
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

    def _transaction(self) -> _Tx:
        # isolation_level=None: we issue BEGIN ourselves; `with` commits or rolls back.
        self._db.execute("BEGIN IMMEDIATE")
        return _Tx(self._db)

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


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


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
