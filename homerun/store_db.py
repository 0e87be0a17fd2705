"""The store's SQLite connection: a short busy timeout, errors of the file (locked by another
program, a full disk, damage) as StoreUnavailable with what to do, and transactions that end
even when their COMMIT fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from homerun.errors import store_failure

# How long a write waits for a lock another program holds. It waits on the event loop (the
# daemon is the store's only writer: the wait is for an sqlite3 shell or a backup), so briefly.
BUSY_SECONDS = 0.5


class _Connection(sqlite3.Connection):
    def __init__(self, database: str | Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self.store_path = str(database)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as error:
            # Constraint and programming errors stay what they are.
            if type(error) in (sqlite3.OperationalError, sqlite3.DatabaseError):
                raise store_failure(error, self.store_path, BUSY_SECONDS) from error
            raise


def connect(path: Path) -> sqlite3.Connection:
    """isolation_level=None: the store issues BEGIN itself (Transaction commits or rolls back)."""
    return sqlite3.connect(
        path,
        timeout=BUSY_SECONDS,
        isolation_level=None,
        check_same_thread=False,
        factory=_Connection,
    )


class Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")  # may fail (a full disk): the transaction must end
                return
            except BaseException:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite may have rolled back already (some errors do), and that is all it takes.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
