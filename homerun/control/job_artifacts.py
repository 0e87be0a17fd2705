"""Where jobs' artifacts and virtualenvs live, and their removal once nothing runs them.

A job's artifacts are `HOMERUN_HOME/jobs/artifacts/JOB/DIR` (one folder per build: an update
that changes only settings keeps the folder). They are not under `revisions/`, where the
revisions' retention removes any folder that is not a revision's. Their virtualenvs go to the
platform's cache when it is shared (HOMERUN_VENV_CACHE outside HOMERUN_HOME: the services'
retention never collects that one), else to `HOMERUN_HOME/jobs/venvs`, which only jobs use and
only this module collects.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from homerun.config import Paths
from homerun.control.retention import unused_venvs
from homerun.control.tasks import TRASH_PREFIX, Tasks
from homerun.model.jobs import ExecutionStatus
from homerun.store import ExecutionRecord, Store


class JobArtifacts:
    def __init__(self, paths: Paths, store: Store, tasks: Tasks) -> None:
        self._store = store
        self._tasks = tasks  # folders are deleted in threads (Tasks.discard)
        self.root = paths.home / "jobs" / "artifacts"
        shared = not paths.venv_cache.resolve().is_relative_to(paths.home.resolve())
        self.venv_cache = paths.venv_cache if shared else paths.home / "jobs" / "venvs"
        self._own_cache = not shared
        self.builds = 0  # builds running: no virtualenv is collected meanwhile

    def folder(self, job: str, artifact_dir: str) -> Path:
        return self.root / job / artifact_dir

    def collect(self, job: str) -> None:
        """Remove the job's artifact folders that neither the job nor a running execution
        uses (all of them once the job is deleted), then unused virtualenvs."""
        keep = {record.artifact_dir for record in self._store.executions(job) if _runs(record)}
        if self._store.has_job(job):
            keep.add(self._store.job(job).artifact_dir)
        folder = self.root / job
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name not in keep and not entry.name.startswith(TRASH_PREFIX):
                    self._tasks.discard(entry)
            if not keep:
                self._tasks.discard(folder)
        self.collect_venvs()

    def collect_venvs(self) -> None:
        if not self._own_cache or self.builds or not self.venv_cache.is_dir():
            return
        referenced = [Path(venv) for venv in self._venvs_in_use() if venv]
        for venv in unused_venvs(self.venv_cache.iterdir(), referenced):
            self._tasks.discard(venv)

    def engine_images(self) -> set[str]:
        """The container engine's images that jobs and their running executions run: the
        services' collection of unused images must keep them."""
        used = {job.artifact.engine_image for job in self._store.jobs()}
        used |= {
            execution.artifact.engine_image
            for execution in self._store.executions()
            if _runs(execution)
        }
        return {image for image in used if image}

    def _venvs_in_use(self) -> Iterable[str | None]:
        for job in self._store.jobs():
            yield job.artifact.venv
        for execution in self._store.executions():
            if _runs(execution):
                yield execution.artifact.venv


def _runs(record: ExecutionRecord) -> bool:
    return record.status == ExecutionStatus.RUNNING
