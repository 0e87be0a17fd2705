"""Named errors for expected conditions; each carries a message a user can act on."""


class HomerunError(Exception):
    """An expected failure with a message meant for the user."""


class InvalidSpec(HomerunError):
    """A deploy request or setting is malformed (bad name, bad env var, bad flag value)."""


class BuildError(HomerunError):
    """Turning a source folder into a revision artifact failed."""


class DockerfileError(BuildError):
    """A Dockerfile uses something outside the subset homerun runs without an engine."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line


class NotFound(HomerunError):
    """A service or revision that was asked for does not exist."""


class DaemonUnavailable(HomerunError):
    """No daemon answers at HOMERUN_HOME."""


class StoreUnavailable(HomerunError):
    """The store's file cannot be used now: locked by another program, a full disk, damage."""


def store_failure(error: Exception, path: object, waited: float) -> StoreUnavailable:
    """What to tell the user about an SQLite error of the store's file at `path`."""
    text = str(error)
    if "locked" in text or "busy" in text:
        return StoreUnavailable(
            f"the store {path} is locked by another program (an sqlite3 shell or a backup in a "
            f"transaction): this request failed after {waited:g}s. Close that program and try "
            "again"
        )
    if "full" in text:
        return StoreUnavailable(
            f"the store {path} cannot be written: the disk is full ({text}). Free some space "
            "on the disk that holds it and try again"
        )
    if "malformed" in text or "not a database" in text:
        return StoreUnavailable(
            f"the store {path} is damaged ({text}): stop homerun (`homerun down`) and restore "
            "it from a backup; `homerun up` checks it before it serves"
        )
    return StoreUnavailable(
        f"the store {path} cannot be used: {text}. Check the disk that holds it and try again"
    )
