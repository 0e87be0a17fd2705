"""Revisions after their deploy: deleting one, keeping only the newest idle ones (retention),
and the artifact folders and cached virtualenvs they leave behind."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import secrets
import shutil
import string
from collections.abc import Callable, Iterator
from pathlib import Path

from homerun.build.artifact import artifact_digest
from homerun.config import Paths
from homerun.control.live import LiveRevisions
from homerun.control.resolved import resolved_traffic
from homerun.control.retention import FINISHED, doomed_revisions, unused_venvs
from homerun.control.tasks import TRASH_PREFIX, Tasks
from homerun.errors import InvalidSpec
from homerun.observe.logs import LogStore, platform_entry
from homerun.runtime.sandbox import unmount_folder
from homerun.store import RevisionRecord, Store
from homerun.traffic import served_percent, tags_of


class Revisions:
    def __init__(
        self,
        *,
        paths: Paths,
        store: Store,
        logs: LogStore,
        live: LiveRevisions,
        tasks: Tasks,
        retention: int,
        image_venvs: Callable[[], list[Path]] = list,
        engine_images: Callable[[], set[str]] = set,
        release_images: Callable[[set[str]], object] | None = None,
    ) -> None:
        self._paths = paths
        self._store = store
        self._logs = logs
        self._live = live
        self._tasks = tasks
        self._retention = retention  # idle revisions kept per service
        self._image_venvs = image_venvs  # the virtualenvs stored images run on
        self._engine_images = engine_images  # the container images stored images are
        # Blocking: removes the container images homerun built whose ID is not among those
        # given (run in a thread); None without a container engine.
        self._release_images = release_images
        self._builds = 0  # artifacts being built or copied: no virtualenv is collected meanwhile

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        """While an artifact is built or copied: it may use a virtualenv no record names yet."""
        self._builds += 1
        try:
            yield
        finally:
            self._builds -= 1

    async def delete(self, name: str) -> None:
        """Delete a revision that serves nothing; refuse (saying why) one that does."""
        revision = self._store.revision(name)
        service = revision.service
        resolved = resolved_traffic(self._store, service)
        percent = served_percent(resolved, name)
        if percent:
            raise InvalidSpec(
                f"revision {name} serves {percent}% of {service}'s traffic; move it first "
                f"(`homerun services update-traffic {service} --to-revisions OTHER=100`)"
            )
        tags = tags_of(resolved, name)
        if tags:
            listed = ",".join(tags)
            raise InvalidSpec(
                f"revision {name} carries the tag(s) {listed}; remove them first "
                f"(`homerun services update-traffic {service} --remove-tags {listed}`)"
            )
        latest = self._store.latest_created(service)
        if latest is not None and latest.name == name:
            raise InvalidSpec(
                f"revision {name} is the latest revision of {service} (its current template); "
                "deploy a newer one before deleting it"
            )
        if revision.status not in FINISHED:
            raise InvalidSpec(f"revision {name} is still {revision.status}; wait for its deploy")
        self._forget(name)
        self._live.rebuild()
        self.collect_venvs()
        self._logs.emit(platform_entry(service, f"Revision {name} deleted", revision=name))

    async def delete_service(self, service: str) -> None:
        self._store.service(service)  # NotFound for an unknown service
        revisions = self._store.delete_service(service)
        self._live.rebuild()
        for revision in revisions:
            await self._live.stop(revision.name)
            self._discard(self._paths.revisions / revision.name)
            self._discard_inspections(revision.name)
        self._logs.delete(service)
        self.collect_venvs()  # and the container images only its revisions ran

    def digest_of(self, revision: RevisionRecord) -> str | None:
        """The artifact digest; revisions built before digests existed get theirs now."""
        artifact = revision.artifact
        if artifact is None:
            return None
        if artifact.digest is None:
            root = self._paths.revisions / revision.name
            if not root.is_dir():
                return None
            artifact = artifact.model_copy(update={"digest": artifact_digest(root, artifact)})
            self._store.set_artifact(revision.name, artifact)
        return artifact.digest

    async def fill_digests(self) -> None:
        """At startup: the digests of revisions built before digests existed, hashed in a
        thread (every file of the artifact is read), so that describe and deploys never hash
        on the event loop."""
        missing = [
            revision
            for revision in self._store.revisions()
            if revision.artifact is not None and revision.artifact.digest is None
        ]
        for revision in missing:
            root = self._paths.revisions / revision.name
            if revision.artifact is None or not root.is_dir():
                continue
            digest = await asyncio.to_thread(artifact_digest, root, revision.artifact)
            if self._store.has_revision(revision.name):
                update = {"digest": digest}
                self._store.set_artifact(revision.name, revision.artifact.model_copy(update=update))

    def with_digest(self, service: str, digest: str | None) -> RevisionRecord | None:
        """A revision (the service's own first) whose artifact has `digest` and is on disk."""
        if digest is None:
            return None
        own = self._store.revisions(service) if self._store.has_service(service) else []
        for revision in [*own, *self._store.revisions()]:
            if revision.artifact and self.digest_of(revision) == digest:
                if (self._paths.revisions / revision.name).is_dir():
                    return revision
        return None

    # -- retention ------------------------------------------------------------------------

    def collect_garbage(self, service: str) -> None:
        """Delete the service's revisions past the retention count that serve nothing, with
        their artifacts, then the cached virtualenvs no revision uses any more."""
        if not self._store.has_service(service):
            return
        revisions = self._store.revisions(service)
        protected = {
            target.revision for target in resolved_traffic(self._store, service) if target.revision
        }
        if revisions:
            protected.add(revisions[0].name)  # the current template
        latest = self._store.latest_ready(service)
        if latest is not None:
            protected.add(latest.name)
        doomed = doomed_revisions(
            [(revision.name, revision.status) for revision in revisions],
            protected,
            self._retention,
        )
        for name in doomed:
            self._forget(name)
            self._logs.emit(
                platform_entry(
                    service,
                    f"Revision {name} deleted: it served nothing and was past the newest "
                    f"{self._retention} idle revisions kept",
                    revision=name,
                )
            )
        if doomed:
            self.collect_venvs()

    def collect_venvs(self) -> None:
        """Remove cached virtualenvs no revision uses, only in a cache this home owns (a shared
        HOMERUN_VENV_CACHE serves other homes too) and never while a build runs here: a build
        may have just picked a virtualenv it has not recorded yet."""
        if self._builds:
            return
        self._collect_engine_images()
        cache = self._paths.venv_cache
        if not cache.is_dir():
            return
        if not cache.resolve().is_relative_to(self._paths.home.resolve()):
            return
        referenced = [
            Path(revision.artifact.venv)
            for revision in self._store.revisions()
            if revision.artifact and revision.artifact.venv
        ] + self._image_venvs()
        for venv in unused_venvs(cache.iterdir(), referenced):
            lock_path = cache / f"{venv.name}.lock"
            with open(lock_path, "a+b") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another home's build holds it
                self._discard(venv)
                lock_path.unlink(missing_ok=True)
            self._logs.emit(
                platform_entry("homerun", f"Removed virtualenv {venv}: no revision uses it")
            )

    def _collect_engine_images(self) -> None:
        if self._release_images is None:
            return
        used = {
            revision.artifact.engine_image
            for revision in self._store.revisions()
            if revision.artifact and revision.artifact.engine_image
        }
        self._tasks.spawn(asyncio.to_thread(self._release_images, used | self._engine_images()))

    def empty_trash(self) -> None:
        """At startup: finish deletions a stopped daemon left, and drop unrecorded builds."""
        for folder in (self._paths.revisions, self._paths.venv_cache):
            if folder.is_dir():
                for entry in folder.iterdir():
                    if entry.name.startswith(TRASH_PREFIX):
                        self._tasks.spawn(asyncio.to_thread(shutil.rmtree, entry, True))
        # A daemon killed during a build leaves the artifact folder of a revision that was
        # never recorded (the record is written once the build is done): it goes too.
        if self._paths.revisions.is_dir() and not self._builds:
            for entry in self._paths.revisions.iterdir():
                if entry.name.startswith(TRASH_PREFIX) or self._store.has_revision(entry.name):
                    continue
                self._discard(entry)
                self._logs.emit(
                    platform_entry("homerun", f"Removed {entry}: a build the daemon did not finish")
                )

    def _forget(self, name: str) -> None:
        self._live.forget(name)
        self._store.delete_revision(name)
        self._discard(self._paths.revisions / name)
        self._discard_inspections(name)

    def _discard_inspections(self, name: str) -> None:
        """What its instances measured (runtime inspector), written outside the artifact: a
        tmpfs of its own where the sandbox made one, unmounted first."""
        folder = self._paths.inspections / name
        unmount_folder(folder)
        self._discard(folder)

    def _discard(self, path: Path) -> None:
        self._tasks.discard(path)


def random_suffix() -> str:
    """Three lowercase letters, as in Cloud Run's revision names (svc-00001-abc)."""
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(3))
