"""The Python interpreter a revision runs on: which one, and what version it is."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


# `--base-image python312`, or the full name of Google's image that ends the same way.
_BASE_IMAGE = re.compile(r"(?:^|/)python(\d)(\d+)(?:[:@].*)?$")


def python_for_base_image(base_image: str, pyenv_root: Path | None = None) -> str:
    """The interpreter standing for a Cloud Run base image (`python312` → Python 3.12): a
    pyenv version of it, else `python3.12` on PATH; BuildError naming what to install."""
    match = _BASE_IMAGE.search(base_image.strip())
    if match is None:
        raise BuildError(
            f"--base-image {base_image}: homerun runs Python base images, named as Cloud Run "
            "names them: python38 ... python313 (or their full image name ending in /python312)"
        )
    version = f"{match.group(1)}.{match.group(2)}"
    root = pyenv_root or Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(
        root.glob(f"versions/{version}.*/bin/python{version}"),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.parent.name)],
    )
    if found:
        return str(found[-1])
    on_path = shutil.which(f"python{version}")
    if on_path is not None and "/shims/" not in on_path:
        return on_path
    raise BuildError(
        f"--base-image {base_image}: Python {version} is not installed on this machine "
        f"(looked for python{version} on PATH and in {root}/versions); install it "
        f"(apt-get install python{version}, or pyenv install {version}) or choose another "
        "--base-image"
    )
