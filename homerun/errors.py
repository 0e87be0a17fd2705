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
