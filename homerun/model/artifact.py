"""What the store keeps of a built revision: what to run, where, and the digest that names it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ArtifactRecord(BaseModel):
    """A revision's artifact as recorded: paths as built in its own folder (see
    build.artifact.copy_artifact for how a copy rebases them)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    argv: list[str]  # what to exec; shell form is ["/bin/sh", "-c", "<string>"]
    env: dict[str, str]  # Dockerfile ENV, PATH with the venv first, VIRTUAL_ENV
    cwd: str = "."  # relative to the artifact's folder
    venv: str | None = None
    entrypoint_origin: str = ""  # "Dockerfile CMD (line 14)", "Procfile web:", "--command"...
    server: str = "other"  # "gunicorn" | "uvicorn" | "other", guessed from argv
    digest: str | None = None  # sha256 of files and recipe; None for records made before it
    # The container engine's image (sha256:… ID) the revision runs as containers; None: the
    # revision runs as processes from its folder.
    engine_image: str | None = None
    # That image's ENTRYPOINT (--args alone go after it, in place of its CMD); None for a
    # source build, and for images recorded before it was kept.
    image_entrypoint: list[str] | None = None

    @property
    def command_line(self) -> str:
        return " ".join(self.argv)
