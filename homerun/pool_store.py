"""SQLite persistence of worker pools (`homerun worker-pools`), beside store.py's tables in the
same database file: a pool's settings, its instance count and the artifact its instances run."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from homerun import store_db
from homerun.errors import NotFound
from homerun.model.artifact import ArtifactRecord
from homerun.model.suggest import did_you_mean
from homerun.spec import RevisionSpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS worker_pools (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    generation INTEGER NOT NULL,
    template TEXT NOT NULL,
    instances INTEGER NOT NULL,
    artifact TEXT NOT NULL,
    artifact_dir TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class WorkerPoolRecord:
    name: str
    created_at: float
    updated_at: float
    generation: int  # one per deploy: its instances are revision POOL-0000N
    template: RevisionSpec  # source, command, env, secrets, limits
    instances: int  # kept running, whatever they do
    artifact: ArtifactRecord
    artifact_dir: str  # under HOMERUN_HOME/worker-pools/artifacts/POOL/

    @property
    def revision(self) -> str:
        return f"{self.name}-{self.generation:05d}"


class PoolStore:
    def __init__(self, path: Path) -> None:
        self._db = store_db.connect(path)  # store.py's connection, its busy timeout included
        self._db.row_factory = sqlite3.Row
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def pools(self) -> list[WorkerPoolRecord]:
        rows = self._db.execute("SELECT * FROM worker_pools ORDER BY name").fetchall()
        return [_pool(row) for row in rows]

    def has(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM worker_pools WHERE name = ?", (name,)).fetchone()
        return row is not None

    def pool(self, name: str) -> WorkerPoolRecord:
        row = self._db.execute("SELECT * FROM worker_pools WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [row[0] for row in self._db.execute("SELECT name FROM worker_pools")]
            raise NotFound(
                f"worker pool {name!r} not found{did_you_mean(name, names)} "
                "(`homerun worker-pools list` shows them)"
            )
        return _pool(row)

    def put(
        self,
        name: str,
        template: RevisionSpec,
        instances: int,
        artifact: ArtifactRecord,
        artifact_dir: str,
        now: float,
    ) -> WorkerPoolRecord:
        """Record the pool's next generation (the first when it is new)."""
        self._db.execute(
            "INSERT INTO worker_pools (name, created_at, updated_at, generation, template, "
            "instances, artifact, artifact_dir) VALUES (?, ?, ?, 1, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET updated_at = excluded.updated_at, "
            "generation = generation + 1, template = excluded.template, "
            "instances = excluded.instances, artifact = excluded.artifact, "
            "artifact_dir = excluded.artifact_dir",
            (
                name,
                now,
                now,
                template.model_dump_json(),
                instances,
                artifact.model_dump_json(),
                artifact_dir,
            ),
        )
        return self.pool(name)

    def delete(self, name: str) -> None:
        self._db.execute("DELETE FROM worker_pools WHERE name = ?", (name,))


def _pool(row: sqlite3.Row) -> WorkerPoolRecord:
    return WorkerPoolRecord(
        name=row["name"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        generation=row["generation"],
        template=RevisionSpec.model_validate(json.loads(row["template"])),
        instances=row["instances"],
        artifact=ArtifactRecord.model_validate(json.loads(row["artifact"])),
        artifact_dir=row["artifact_dir"],
    )
