"""The local image store: images built without an engine (homerun's artifact format) kept by
digest under HOMERUN_HOME/images, the names that point at them, and the builds that made them.

    images/
      blobs/HEX/         one artifact folder per digest (code, rootfs, artifact.json)
      blobs/HEX.json     its ArtifactRecord, as a revision records it
      names.json         "gcr.io/p/hello:latest" -> digest, when, which build, from which folder
      builds.json        the newest builds, as `homerun builds list` shows them
      pushes.json        what `homerun images push` sent where: the engine's image ID, the
                         registry's name and digest (what `services export` references)

An image is immutable: a rebuild of changed code gets another digest and moves the name; the
old digest stays until `homerun images delete` removes it (revisions hold their own copy).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from homerun.build.artifact import Artifact, artifact_record, move_artifact
from homerun.errors import HomerunError, NotFound
from homerun.model.artifact import ArtifactRecord
from homerun.model.images import (
    BuildSummary,
    ImageName,
    ImageSummary,
    PushedImage,
    parse_image_name,
)
from homerun.model.suggest import closest

MAX_BUILDS_KEPT = 200  # builds.json keeps the newest; Cloud Build lists the newest first too
_BUILDING_PREFIX = ".building-"


@dataclass(frozen=True)
class StoredImage:
    """An image a deploy can use: its name pinned to its digest, and its artifact."""

    name: ImageName  # as asked for
    pinned: str  # repository@sha256:…
    digest: str  # hex, as ArtifactRecord.digest
    root: Path  # the artifact folder
    record: ArtifactRecord
    source: str | None  # the folder it was built from


class _Names(BaseModel):
    digest: str  # hex
    created_at: float
    build: str | None = None
    source: str | None = None


class PushRecord(BaseModel):
    """One `homerun images push`: the engine's image, and how the registry knows it."""

    engine_image: str  # podman's image ID
    name: str  # registry/path:tag
    digest: str  # the registry's sha256:… (the manifest's)
    pinned: str  # registry/path@sha256:…
    local: str  # the stored image's own pinned name (homerun's digest)
    pushed_at: float


MAX_PUSHES_KEPT = 200


class ImageStore:
    """Thread-safe: builds run in threads and the admin API lists meanwhile."""

    def __init__(self, root: Path, clock: Callable[[], float]) -> None:
        self._root = root
        self._clock = clock  # wall-clock seconds, for created_at
        self._lock = threading.Lock()

    # Folders

    @property
    def blobs(self) -> Path:
        return self._root / "blobs"

    def building_folder(self, build_id: str) -> Path:
        """Where a build puts its artifact until its digest is known."""
        return self.blobs / f"{_BUILDING_PREFIX}{build_id}"

    def engine_images(self) -> set[str]:
        """The container engine's images stored images are (they must not be removed)."""
        return {record.engine_image for record in self._blob_records() if record.engine_image}

    def venvs(self) -> list[Path]:
        """The cached virtualenvs stored images run on: they must not be collected."""
        found = []
        for entry in self._blob_records():
            if entry.venv:
                found.append(Path(entry.venv))
        return found

    # Builds

    def start_build(self, build_id: str, source: str, name: ImageName) -> None:
        self._save_build(
            BuildSummary(
                id=build_id,
                created_at=self._clock(),
                source=source,
                images=[name.tagged],
                status="WORKING",
            )
        )

    def finish_build(
        self, build_id: str, name: ImageName, artifact: Artifact, source: str
    ) -> tuple[ArtifactRecord, float]:
        """Blocking: store the artifact the build made under its digest and point `name` at
        it; the record and the build's duration."""
        built = artifact.root
        record = artifact_record(artifact)
        digest = record.digest or ""  # artifact_record always computes it
        final = self.blobs / digest
        with self._lock:
            if final.is_dir():
                shutil.rmtree(built, ignore_errors=True)  # the same image, built before
                record = self._record(digest)
            else:
                record = move_artifact(built, record, final)
                _write_json(self.blobs / f"{digest}.json", record.model_dump())
            names = self._names()
            names[name.tagged] = _Names(
                digest=digest, created_at=self._clock(), build=build_id, source=source
            )
            self._save_names(names)
            build = self._build(build_id)
            duration = self._clock() - build.created_at if build else 0.0
            if build is not None:
                self._replace_build(
                    build.model_copy(
                        update={
                            "status": "SUCCESS",
                            "digest": f"sha256:{digest}",
                            "duration_seconds": round(duration, 3),
                        }
                    )
                )
        return record, duration

    def fail_build(self, build_id: str, detail: str) -> None:
        shutil.rmtree(self.building_folder(build_id), ignore_errors=True)
        with self._lock:
            build = self._build(build_id)
            if build is not None:
                self._replace_build(
                    build.model_copy(
                        update={
                            "status": "FAILURE",
                            "detail": detail,
                            "duration_seconds": round(self._clock() - build.created_at, 3),
                        }
                    )
                )

    def builds(self) -> list[BuildSummary]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._builds()))

    def discard_unfinished(self) -> None:
        """At startup: a daemon stopped during a build leaves its folder and a WORKING build."""
        if self.blobs.is_dir():
            for entry in self.blobs.iterdir():
                if entry.name.startswith(_BUILDING_PREFIX):
                    shutil.rmtree(entry, ignore_errors=True)
        with self._lock:
            builds = self._builds()
            changed = [
                build.model_copy(
                    update={"status": "FAILURE", "detail": "the daemon stopped during the build"}
                )
                if build.status == "WORKING"
                else build
                for build in builds
            ]
            if changed != builds:
                _write_json(self._root / "builds.json", [b.model_dump() for b in changed])

    # Images

    def images(self) -> list[ImageSummary]:
        with self._lock:
            return [
                ImageSummary(
                    name=name,
                    digest=f"sha256:{entry.digest}",
                    created_at=entry.created_at,
                    build=entry.build,
                    source=entry.source,
                    runtime=self._runtime_of(entry.digest),
                )
                for name, entry in sorted(self._names().items())
            ]

    def _runtime_of(self, digest: str) -> str:
        """ "homerun" for an engine-less artifact, the engine's name for its image."""
        try:
            record = self._record(digest)
        except HomerunError:
            return "damaged"
        return "podman" if record.engine_image else "homerun"

    def resolve(self, text: str, where: str = "--image") -> StoredImage:
        """The stored image `text` names (by tag or by digest); NotFound says what there is."""
        name = parse_image_name(text, where)
        with self._lock:
            names = self._names()
            if name.digest is not None:
                digest = name.digest.removeprefix("sha256:")
                entry = next(
                    (
                        e
                        for n, e in names.items()
                        if e.digest == digest and parse_image_name(n).repository == name.repository
                    ),
                    None,
                )
                if entry is None and not (self.blobs / digest).is_dir():
                    raise NotFound(self._missing(str(name), names, where))
                source = entry.source if entry else None
            else:
                found = names.get(name.tagged)
                if found is None:
                    raise NotFound(self._missing(name.tagged, names, where))
                digest, source = found.digest, found.source
            record = self._record(digest)
        return StoredImage(
            name=name,
            pinned=name.pinned(digest),
            digest=digest,
            root=self.blobs / digest,
            record=record,
            source=source,
        )

    def adopt(self, name: ImageName, record: ArtifactRecord) -> StoredImage:
        """Blocking: store an image of the container engine's own storage (built by hand,
        pulled) under `name`, as a record that runs it (engine_build.engine_image_record)
        and an empty artifact folder: a deploy of it then reads it like any stored image."""
        digest = record.digest or ""
        with self._lock:
            (self.blobs / digest).mkdir(parents=True, exist_ok=True)
            _write_json(self.blobs / f"{digest}.json", record.model_dump())
            names = self._names()
            names[name.tagged] = _Names(digest=digest, created_at=self._clock())
            self._save_names(names)
        return self.resolve(name.tagged)

    def delete(self, text: str) -> list[str]:
        """Remove a name (NAME[:TAG]) or every name of a digest (NAME@sha256:…); a digest no
        name points at any more goes with its folder. The names removed."""
        name = parse_image_name(text, "image")
        with self._lock:
            names = self._names()
            if name.digest is not None:
                digest = name.digest.removeprefix("sha256:")
                removed = [
                    n
                    for n, e in names.items()
                    if e.digest == digest and parse_image_name(n).repository == name.repository
                ]
            else:
                removed = [name.tagged] if name.tagged in names else []
            if not removed:
                raise NotFound(self._missing(str(name), names, "image"))
            digests = {names[n].digest for n in removed}
            for n in removed:
                del names[n]
            self._save_names(names)
            for digest in digests - {e.digest for e in names.values()}:
                (self.blobs / f"{digest}.json").unlink(missing_ok=True)
                shutil.rmtree(self.blobs / digest, ignore_errors=True)
        return removed

    # Pushes

    def record_push(self, engine_image: str, pushed: PushedImage, local: str) -> None:
        push = PushRecord(
            engine_image=engine_image,
            name=pushed.name,
            digest=pushed.digest,
            pinned=pushed.pinned,
            local=local,
            pushed_at=self._clock(),
        )
        with self._lock:
            pushes = [*self._pushes(), push][-MAX_PUSHES_KEPT:]
            _write_json(self._root / "pushes.json", [p.model_dump() for p in pushes])

    def pushes_of(self, engine_image: str) -> list[PushRecord]:
        """Every push of the engine's image `engine_image`, oldest first."""
        with self._lock:
            pushes = [p for p in self._pushes() if p.engine_image == engine_image]
        return sorted(pushes, key=lambda p: p.pushed_at)

    def push_of(self, pinned: str) -> PushRecord | None:
        """The push a registry's pinned name (`registry/path@sha256:…`) came from."""
        with self._lock:
            pushes = [p for p in self._pushes() if p.pinned == pinned]
        return max(pushes, key=lambda p: p.pushed_at) if pushes else None

    # Files (callers hold the lock)

    def _pushes(self) -> list[PushRecord]:
        return [PushRecord.model_validate(p) for p in _read_json(self._root / "pushes.json", [])]

    def _record(self, digest: str) -> ArtifactRecord:
        path = self.blobs / f"{digest}.json"
        try:
            return ArtifactRecord.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError, ValidationError) as error:
            raise HomerunError(
                f"the image sha256:{digest} is damaged or gone ({error}); build it again with "
                "`homerun builds submit SOURCE --tag IMAGE`"
            ) from error

    def _blob_records(self) -> list[ArtifactRecord]:
        if not self.blobs.is_dir():
            return []
        records = []
        for path in self.blobs.glob("*.json"):
            try:
                records.append(ArtifactRecord.model_validate(json.loads(path.read_text())))
            except (OSError, ValueError, ValidationError):
                continue
        return records

    def _missing(self, text: str, names: dict[str, _Names], where: str) -> str:
        near = closest(text, list(names))
        hint = f" Did you mean {near}?" if near else ""
        known = f" Images here: {', '.join(sorted(names))}." if names and not near else ""
        return (
            f"{where}: there is no image {text} in homerun's image store.{hint}{known} Build "
            f"it first with `homerun builds submit SOURCE --tag {text.split('@')[0]}`."
        )

    def _names(self) -> dict[str, _Names]:
        raw = _read_json(self._root / "names.json", {})
        return {name: _Names.model_validate(entry) for name, entry in raw.items()}

    def _save_names(self, names: dict[str, _Names]) -> None:
        _write_json(
            self._root / "names.json", {name: entry.model_dump() for name, entry in names.items()}
        )

    def _builds(self) -> list[BuildSummary]:
        return [BuildSummary.model_validate(b) for b in _read_json(self._root / "builds.json", [])]

    def _build(self, build_id: str) -> BuildSummary | None:
        return next((b for b in self._builds() if b.id == build_id), None)

    def _save_build(self, build: BuildSummary) -> None:
        with self._lock:
            builds = [*self._builds(), build][-MAX_BUILDS_KEPT:]
            _write_json(self._root / "builds.json", [b.model_dump() for b in builds])

    def _replace_build(self, build: BuildSummary) -> None:
        builds = [build if b.id == build.id else b for b in self._builds()]
        _write_json(self._root / "builds.json", [b.model_dump() for b in builds])


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except ValueError as error:
        raise HomerunError(
            f"{path} is damaged ({error}); remove it to start the image store afresh"
        ) from error


def _write_json(path: Path, value: Any) -> None:
    """Write whole or not at all: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(partial, path)
