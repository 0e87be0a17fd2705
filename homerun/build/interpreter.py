"""The Python interpreter a revision runs on: which one, and what version it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from homerun.errors import BuildError

_PROBE = (
    "import json, platform, sys; print(json.dumps({"
    "'version': platform.python_version(), 'full': sys.version, "
    "'implementation': sys.implementation.cache_tag, 'platform': sys.platform, "
    "'machine': platform.machine(), 'executable': sys.executable}))"
)


@dataclass(frozen=True)
class Interpreter:
    executable: str  # as given (what `python -m venv` is run with)
    version: str  # "3.11.7"
    identity: str  # everything that makes a virtualenv built with it different from another

    @property
    def short_version(self) -> str:
        return ".".join(self.version.split(".")[:2])


def default_python() -> str:
    """The base interpreter running homerun: not homerun's own virtualenv."""
    return getattr(sys, "_base_executable", None) or sys.executable


def probe_interpreter(python: str | None = None) -> Interpreter:
    """Ask the interpreter who it is; BuildError when it cannot be run."""
    executable = python or default_python()
    try:
        completed = subprocess.run(
            [executable, "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildError(
            f"cannot run the Python interpreter {executable}: {error}; pass an existing interpreter"
        ) from error
    if completed.returncode != 0:
        raise BuildError(
            f"the Python interpreter {executable} failed to start "
            f"(exit {completed.returncode}): {completed.stderr.strip()[-500:]}"
        )
    facts = json.loads(completed.stdout)
    # The real path matters as much as the version: a virtualenv links to its base
    # interpreter, so 3.11.7 from pyenv and 3.11.7 from /usr/bin are different bases.
    facts["realpath"] = os.path.realpath(executable)
    return Interpreter(
        executable=executable, version=facts["version"], identity=json.dumps(facts, sort_keys=True)
    )
