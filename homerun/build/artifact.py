"""A built revision: the folder, what to execute in it, and its environment."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from homerun.build.entrypoint import fit_default_threads
from homerun.errors import BuildError, HomerunError
from homerun.model.artifact import ArtifactRecord

MANIFEST = "artifact.json"


class ArtifactJson(TypedDict):
    """An artifact as root/artifact.json holds it (Artifact.to_json, from_json)."""

    root: str
    cwd: str
    argv: list[str]
    env: dict[str, str]
    venv: str | None
    entrypoint_origin: str
    server: str
    engine_image: NotRequired[str | None]  # absent from artifacts built before engines
    image_entrypoint: NotRequired[list[str] | None]  # absent from those built before it


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
    engine_image: str | None = None  # built by a container engine: its image ID
    image_entrypoint: list[str] | None = None  # and that image's ENTRYPOINT

    def to_json(self) -> ArtifactJson:
        return {
            "root": str(self.root),
            "cwd": str(self.cwd),
            "argv": list(self.argv),
            "env": dict(self.env),
            "venv": str(self.venv) if self.venv else None,
            "entrypoint_origin": self.entrypoint_origin,
            "server": self.server,
            "engine_image": self.engine_image,
            "image_entrypoint": self.image_entrypoint,
        }

    @classmethod
    def from_json(cls, data: ArtifactJson) -> Artifact:
        return cls(
            root=Path(data["root"]),
            cwd=Path(data["cwd"]),
            argv=[str(item) for item in data["argv"]],
            env={str(name): str(value) for name, value in data["env"].items()},
            venv=Path(venv) if (venv := data.get("venv")) else None,
            entrypoint_origin=str(data["entrypoint_origin"]),
            server=str(data["server"]),
            engine_image=data.get("engine_image"),
            image_entrypoint=data.get("image_entrypoint"),
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


def artifact_record(artifact: Artifact) -> ArtifactRecord:
    """What the store keeps of a built artifact (paths as built; see copy_artifact), with
    the digest of its folder."""
    record = ArtifactRecord(
        argv=artifact.argv,
        env=artifact.env,
        cwd=str(artifact.cwd.relative_to(artifact.root)),
        venv=str(artifact.venv) if artifact.venv else None,
        entrypoint_origin=artifact.entrypoint_origin,
        server=artifact.server,
        engine_image=artifact.engine_image,
        image_entrypoint=artifact.image_entrypoint,
    )
    return record.model_copy(update={"digest": artifact_digest(artifact.root, record)})


def copy_artifact(
    root: Path,
    record: ArtifactRecord | None,
    owner: str,
    dest: Path,
    concurrency: int | None = None,
) -> ArtifactRecord:
    """Blocking: a new revision's artifact folder as a copy of the artifact of revision `owner`
    at `root`, stored as `record` (a few files of code; the virtualenv is shared), with paths
    that named the old folder pointing at the new, and homerun's default gunicorn command
    given `concurrency` threads (the new revision's --concurrency)."""
    if not root.is_dir() or not record:
        raise HomerunError(f"the artifact of {owner} is gone ({root}); deploy again with --source")
    try:
        shutil.copytree(root, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        copied = ArtifactRecord.model_validate(
            _rebase(record.model_dump(exclude={"digest"}), str(root), str(dest))
        )
        if concurrency is not None:
            argv = fit_default_threads(copied.argv, copied.entrypoint_origin, concurrency)
            copied = copied.model_copy(update={"argv": argv})
        # The digest covers what runs: a refitted command is another artifact.
        refitted = copied.argv != _rebase(record.argv, str(root), str(dest))
        digest = record.digest if record.digest and not refitted else None
        copied = copied.model_copy(update={"digest": digest or artifact_digest(dest, copied)})
        manifest = dest / MANIFEST
        if manifest.exists():
            rebased = _rebase(json.loads(manifest.read_text()), str(root), str(dest))
            rebased["argv"] = copied.argv
            manifest.write_text(json.dumps(rebased, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return copied


def move_artifact(root: Path, record: ArtifactRecord, dest: Path) -> ArtifactRecord:
    """Blocking: rename the artifact folder `root` to `dest` (same file system), with the
    paths that named it pointing at `dest`; its digest does not change (it leaves paths out)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    root.rename(dest)
    moved = ArtifactRecord.model_validate(_rebase(record.model_dump(), str(root), str(dest)))
    manifest = dest / MANIFEST
    if manifest.exists():
        rebased = _rebase(json.loads(manifest.read_text()), str(root), str(dest))
        manifest.write_text(json.dumps(rebased, indent=2) + "\n")
    return moved


def _rebase(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        if value == old or value.startswith(old + os.sep):
            return new + value[len(old) :]
        return value
    if isinstance(value, list):
        return [_rebase(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _rebase(item, old, new) for key, item in value.items()}
    return value


def artifact_digest(root: Path, record: ArtifactRecord) -> str:
    """sha256 of an artifact: its files (bytes, exec bit, symlinks) and what runs it, with
    its own folder's path left out, so that a copy, or a rebuild of the same source with the
    same dependencies, has the same digest and so the same image name."""
    digest = hashlib.sha256()
    # A field added since is left out where it is unset: a source build keeps its digest.
    unset = {"image_entrypoint"} if record.image_entrypoint is None else set()
    recipe = _rebase(record.model_dump(exclude={"digest", *unset}), str(root), ".")
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        base = Path(folder)
        relative_folder = base.relative_to(root)
        digest.update(b"D" + str(relative_folder).encode() + b"\0")
        for name in sorted(files):
            path = base / name
            relative = str(relative_folder / name)
            if relative == MANIFEST:
                continue  # it names the artifact's own folder
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                digest.update(b"L" + relative.encode() + b"\0" + os.readlink(path).encode())
                continue
            executable = b"x" if info.st_mode & stat.S_IXUSR else b"-"
            content = hashlib.sha256(path.read_bytes()).digest()
            digest.update(b"F" + relative.encode() + b"\0" + executable + content)
    return digest.hexdigest()


_OUT_OF_ROOM = {errno.ENOSPC, errno.EDQUOT}


def write_failure(error: OSError, dest: Path, unchanged: str) -> BuildError:
    """What to tell a user whose build could not write its artifact (a full disk, a quota, a
    read-only or failing filesystem) under `dest`; `unchanged` says what goes on as before."""
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list):
        # copytree gathers (source, destination, reason) of each file it could not copy.
        first = error.args[0][0]
        reason, where = str(first[2]), str(first[1])
    else:
        reason = error.strerror or str(error)
        where = str(error.filename or dest)
    if error.errno in _OUT_OF_ROOM or "No space left" in reason or "quota" in reason.lower():
        advice = (
            f"free some space on the filesystem that holds {dest.parent} (`df -h "
            f"{dest.parent}`) and deploy again"
        )
    else:
        advice = f"check the filesystem that holds {dest.parent} and deploy again"
    return BuildError(
        f"the build stopped at {where}: {reason}. Nothing of it was kept and {unchanged}; {advice}"
    )
