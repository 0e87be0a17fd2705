"""`homerun services export SERVICE`: the revision that serves the service, as a Knative
Service (or its Cloud Run form) that references the image a registry serves, by digest."""

from __future__ import annotations

from typing import Any

from homerun.build.images import ImageStore, PushRecord
from homerun.control.resolved import resolved_traffic
from homerun.errors import HomerunError
from homerun.knative.export import export_service
from homerun.model.images import parse_image_name
from homerun.store import RevisionRecord, Store


class NotExportable(HomerunError):
    """The serving revision has no image a registry serves."""


class Exports:
    def __init__(self, *, store: Store, images: ImageStore) -> None:
        self._store = store
        self._images = images  # knows what `homerun images push` sent where

    def export(self, service: str, *, cloud_run: bool, image: str | None = None) -> dict[str, Any]:
        """The document; `image` (`REGISTRY/PATH@sha256:…`) stands for the pushed image when
        the revision's was pushed some other way. NotExportable says how to push it."""
        record = self._store.service(service)
        revision = self._serving(service)
        pinned = self._pushed_image(revision, image)
        return export_service(
            service,
            revision.spec,
            pinned,
            labels=record.labels,
            annotations=record.annotations,
            cloud_run=cloud_run,
        )

    def _serving(self, service: str) -> RevisionRecord:
        """The revision with the most traffic (the newest of equals): the one exported."""
        targets = [t for t in resolved_traffic(self._store, service) if t.revision and t.percent]
        if not targets:
            raise NotExportable(
                f"{service} has no revision serving traffic: deploy it (or send traffic to a "
                "ready revision) before exporting"
            )
        percents: dict[str, int] = {}
        for target in targets:
            percents[str(target.revision)] = percents.get(str(target.revision), 0) + target.percent
        revisions = [self._store.revision(name) for name in percents]
        return max(revisions, key=lambda r: (percents[r.name], r.seq))

    def _pushed_image(self, revision: RevisionRecord, image: str | None) -> str:
        if image is not None:
            name = parse_image_name(image, "--image")
            if name.digest is None or not name.registry or name.registry == "localhost":
                raise NotExportable(
                    f"--image {image}: give the image as the registry serves it, pinned to its "
                    "digest: REGISTRY_HOST[:PORT]/PATH@sha256:…"
                )
            return image
        engine_image = revision.artifact.engine_image if revision.artifact else None
        if engine_image is None:
            raise NotExportable(
                f"{revision.name} runs homerun's own artifact (built without a container "
                "engine: code and a virtualenv), which no registry takes and no Knative pod "
                "runs. Build the folder as an image another way (podman or docker build, with "
                f"its Dockerfile), push it, and give it: `homerun services export "
                f"{revision.service} --image REGISTRY/PATH@sha256:…`"
            )
        pushed = self._push_for(revision, engine_image)
        if pushed is None:
            tagged = self._local_name(engine_image)
            how = (
                f"`homerun images push {tagged}`"
                if tagged
                else "`homerun builds submit SOURCE --tag REGISTRY_HOST[:PORT]/PATH` then "
                "`homerun images push REGISTRY_HOST[:PORT]/PATH`"
            )
            raise NotExportable(
                f"{revision.name} runs an image that was never pushed to a registry, so no "
                f"cluster can pull it; push it first with {how}, then export again"
            )
        return pushed.pinned

    def _push_for(self, revision: RevisionRecord, engine_image: str) -> PushRecord | None:
        """The newest push of the revision's image under the name it was deployed by (its
        repository), else the newest push of the same image under any name."""
        pushes = self._images.pushes_of(engine_image)
        if revision.spec.image:
            repository = parse_image_name(revision.spec.image).repository
            named = [p for p in pushes if parse_image_name(p.name).repository == repository]
            pushes = named or pushes
        return pushes[-1] if pushes else None

    def _local_name(self, engine_image: str) -> str | None:
        """A name of the local store for the engine image, tagged with a registry to push to."""
        for summary in self._images.images():
            try:
                stored = self._images.resolve(summary.name, "image")
            except HomerunError:
                continue
            name = stored.name
            if stored.record.engine_image == engine_image and name.registry not in (
                "",
                "localhost",
            ):
                return name.tagged
        return None
