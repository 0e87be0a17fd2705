"""A built revision: the folder, what to execute in it, and its environment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homerun.errors import BuildError

MANIFEST = "artifact.json"


@dataclass(frozen=True)
class Artifact:
    root: Path  # the artifact folder (build's dest)
    cwd: Path  # working directory for instances
    argv: list[str]  # what to exec; shell form is ["/bin/sh", "-c", "<string>"]
    # Dockerfile ENV + PATH (venv bin first) + VIRTUAL_ENV; not the user's env, not PORT/K_*.
    env: dict[str, str]
    venv: Path | None
    entrypoint_origin: str  # "Dockerfile CMD (line 14)", "Procfile web:", "--command", ...
    server: str  # "gunicorn" | "uvicorn" | "other", guessed from argv

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "cwd": str(self.cwd),
            "argv": list(self.argv),
            "env": dict(self.env),
            "venv": str(self.venv) if self.venv else None,
            "entrypoint_origin": self.entrypoint_origin,
            "server": self.server,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            root=Path(data["root"]),
            cwd=Path(data["cwd"]),
            argv=[str(item) for item in data["argv"]],
            env={str(name): str(value) for name, value in data["env"].items()},
            venv=Path(data["venv"]) if data.get("venv") else None,
            entrypoint_origin=str(data["entrypoint_origin"]),
            server=str(data["server"]),
        )

    def save(self) -> None:
        """Write root/artifact.json, so a restarted daemon can run the revision again."""
        (self.root / MANIFEST).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def load_artifact(root: Path) -> Artifact:
    """The artifact built into `root`; BuildError when there is none (or it is damaged)."""
    try:
        return Artifact.from_json(json.loads((root / MANIFEST).read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise BuildError(
            f"no usable artifact in {root} ({error}); deploy the revision again"
        ) from error
