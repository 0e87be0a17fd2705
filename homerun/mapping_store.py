"""SQLite persistence of domain mappings (`homerun domain-mappings`), beside store.py's tables in
the same database file: which service each of the user's domains routes to."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from homerun import store_db
from homerun.errors import NotFound
from homerun.model.suggest import did_you_mean

_SCHEMA = """
CREATE TABLE IF NOT EXISTS domain_mappings (
    domain TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class DomainMappingRecord:
    domain: str  # lowercase, no trailing dot (model/domains.validate_domain)
    service: str
    created_at: float


class MappingStore:
    def __init__(self, path: Path) -> None:
        self._db = store_db.connect(path)  # store.py's connection, its busy timeout included
        self._db.row_factory = sqlite3.Row
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def mappings(self) -> list[DomainMappingRecord]:
        rows = self._db.execute("SELECT * FROM domain_mappings ORDER BY domain").fetchall()
        return [_mapping(row) for row in rows]

    def routes(self) -> dict[str, str]:
        """domain -> service: what the routing table routes."""
        return dict(self._db.execute("SELECT domain, service FROM domain_mappings").fetchall())

    def find(self, domain: str) -> DomainMappingRecord | None:
        row = self._db.execute(
            "SELECT * FROM domain_mappings WHERE domain = ?", (domain,)
        ).fetchone()
        return None if row is None else _mapping(row)

    def mapping(self, domain: str) -> DomainMappingRecord:
        found = self.find(domain)
        if found is None:
            domains = [row[0] for row in self._db.execute("SELECT domain FROM domain_mappings")]
            raise NotFound(
                f"domain mapping {domain!r} not found{did_you_mean(domain, domains)} "
                "(`homerun domain-mappings list` shows them)"
            )
        return found

    def put(self, domain: str, service: str, now: float) -> DomainMappingRecord:
        """Map `domain` to `service`, replacing the service it was mapped to (its creation
        time then stays)."""
        self._db.execute(
            "INSERT INTO domain_mappings (domain, service, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(domain) DO UPDATE SET service = excluded.service",
            (domain, service, now),
        )
        return self.mapping(domain)

    def delete(self, domain: str) -> None:
        self._db.execute("DELETE FROM domain_mappings WHERE domain = ?", (domain,))


def _mapping(row: sqlite3.Row) -> DomainMappingRecord:
    return DomainMappingRecord(row["domain"], row["service"], row["created_at"])
