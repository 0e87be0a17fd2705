"""The store's SQLite connection: a short busy timeout, errors of the file (locked by another
program, a full disk, damage) as StoreUnavailable with what to do, and transactions that end
even when their COMMIT fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from homerun.errors import HomerunError, store_failure
from homerun.procfs import lock_holders, process_name

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


def check(path: Path, lock_timeout: float = 5.0) -> None:
    """Nothing, once SQLite can read all of the store's file and write to it; else a clear
    error.

    A damaged file (not a database, a page that does not check) or a write lock that another
    program holds for `lock_timeout` stops the start here, before anything is served, rather
    than as an internal error at the first deploy."""
    try:
        probe = sqlite3.connect(path, timeout=lock_timeout, isolation_level=None)
    except sqlite3.Error as error:
        raise HomerunError(f"cannot open the store {path}: {error}") from None
    try:
        problems = [row[0] for row in probe.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems[:3]))
        probe.execute("BEGIN IMMEDIATE")  # a write lock, as the first deploy would take
        probe.execute("ROLLBACK")
    except sqlite3.OperationalError as error:
        if "locked" not in str(error) and "busy" not in str(error):
            raise HomerunError(f"cannot use the store {path}: {error}") from None
        holders = sorted(lock_holders([path, Path(f"{path}-wal"), Path(f"{path}-shm")]))
        named = ", ".join(f"{pid} ({process_name(pid)})" for pid in holders)
        raise HomerunError(
            f"the store {path} is locked by another program"
            + (f" (pid {named})" if named else "")
            + f": homerun waited {lock_timeout:g}s for it. Close that program (an sqlite3 "
            "shell, a backup) and start homerun again"
        ) from None
    except sqlite3.DatabaseError as error:
        raise HomerunError(
            f"the store {path} is damaged ({error}): homerun cannot read it. Restore it from a "
            f"backup, or move it and its -wal and -shm files away to start with an empty store "
            "(services, revisions and jobs are then forgotten, and their artifacts removed)"
        ) from None
    finally:
        probe.close()
