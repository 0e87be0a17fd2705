"""`homerun builds submit|list` and `homerun images list|delete`: source folders built into
images of the local image store (build/images.py), which `deploy --image` runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from homerun.build.images import ImageStore
from homerun.build.push import push_image
from homerun.config import Paths, Settings
from homerun.control.deploys import BuildFunction
from homerun.control.revisions import Revisions
from homerun.control.tasks import Tasks
from homerun.errors import BuildError, HomerunError
from homerun.model.engine import Engine
from homerun.model.events import BuildLine, Phase
from homerun.model.images import (
    BuildEvent,
    BuildRequest,
    BuildSummary,
    Built,
    ImageName,
    ImageSummary,
    PushedImage,
    parse_image_name,
)

BuildEmit = Callable[[BuildEvent], None]


class Images:
    def __init__(
        self,
        *,
        store: ImageStore,
        settings: Settings,
        paths: Paths,
        build: BuildFunction,
        revisions: Revisions,
        tasks: Tasks,
        engine: Engine | None = None,
    ) -> None:
        self._engine = engine  # pushes the images it built
        self._store = store
        self._settings = settings
        self._paths = paths
        self._build = build
        self._revisions = revisions  # no virtualenv is collected while a build runs
        self._tasks = tasks

    def submit(self, request: BuildRequest) -> AsyncIterator[BuildEvent]:
        """Build `request.source` into the image `request.tag`; the events stream to the
        caller, who may go away without stopping the build."""
        name = parse_image_name(request.tag, "--tag")
        source = Path(request.source)

        async def work(emit: BuildEmit) -> None:
            build_id = str(uuid.uuid4())
            self._store.start_build(build_id, str(source), name)
            emit(Phase(message=f"Building {name.tagged} from {source} (build {build_id})"))
            loop = asyncio.get_running_loop()

            def output(line: str) -> None:
                loop.call_soon_threadsafe(emit, BuildLine(line=line))

            try:
                with self._revisions.building():
                    record, duration = await asyncio.to_thread(
                        self._build_image, build_id, source, name, output
                    )
            except BaseException as error:
                self._store.fail_build(build_id, str(error) or type(error).__name__)
                raise
            emit(
                Built(
                    build=build_id,
                    image=name.tagged,
                    digest=f"sha256:{record}",
                    duration_seconds=round(duration, 3),
                )
            )

        return self._tasks.stream(work)

    def _build_image(
        self,
        build_id: str,
        source: Path,
        name: ImageName,
        output: Callable[[str], None],
    ) -> tuple[str, float]:
        """Blocking (run in a thread): the build, then the image stored under its digest."""
        folder = self._store.building_folder(build_id)
        if not source.is_dir():
            raise BuildError(f"{source} is not a folder on the daemon's machine; give your app's")
        artifact = self._build(
            source,
            folder,
            command=None,
            args=None,
            user_env={},
            venv_cache=self._paths.venv_cache,
            output=output,
            max_source_bytes=self._settings.max_source_bytes,
        )
        record, duration = self._store.finish_build(build_id, name, artifact, str(source))
        output(f"image {name.tagged} is sha256:{record.digest}")
        return str(record.digest), duration

    def builds(self) -> list[BuildSummary]:
        return self._store.builds()

    def images(self) -> list[ImageSummary]:
        return self._store.images()

    def delete(self, name: str) -> list[str]:
        return self._store.delete(name)

    def push(self, name: str) -> PushedImage:
        """Blocking: push a stored image podman built to the registry its name names."""
        stored = self._store.resolve(name, "IMAGE")
        if stored.record.engine_image is None:
            raise HomerunError(
                f"{stored.name.tagged} was built without a container engine: it is homerun's own "
                "artifact (code and a virtualenv), which no registry takes. Only images podman "
                "built (Dockerfiles beyond the Python subset) can be pushed for now."
            )
        if self._engine is None:
            raise HomerunError(
                f"{stored.name.tagged} is a podman image, and this homerun runs without a "
                "container engine now (config.yaml: container-engine); start it with podman "
                "installed and container-engine: auto to push it"
            )
        target = (
            stored.name
            if stored.name.digest is None
            else parse_image_name(stored.name.tagged.split("@")[0])
        )
        digest = push_image(self._engine, stored.record.engine_image, target)
        pushed = PushedImage(name=target.tagged, digest=digest, pinned=target.pinned(digest))
        self._store.record_push(stored.record.engine_image, pushed, local=stored.pinned)
        return pushed

    def discard_unfinished(self) -> None:
        """At startup: what a daemon stopped during a build left."""
        self._store.discard_unfinished()
