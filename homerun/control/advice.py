"""`homerun services advise`: a revision's measurements (the runtime inspector's snapshots)
and its start command, handed to the pure advisor (observe/advisor.py)."""

from __future__ import annotations

from pathlib import Path

from homerun.build.capacity import command_capacity
from homerun.errors import NotFound
from homerun.model.inspection import Advice, Capacity, RevisionInspection
from homerun.observe.advisor import advise
from homerun.observe.inspection import read_snapshots, summarize
from homerun.store import RevisionRecord, Store


class Advisor:
    def __init__(self, *, store: Store, folder: Path | None) -> None:
        self._store = store
        self._folder = folder  # HOMERUN_HOME/inspect; None: the inspector is off

    def inspection(self, revision: str) -> RevisionInspection | None:
        """Blocking (reads a few small files): what the revision's instances measured."""
        if self._folder is None:
            return None
        return summarize(read_snapshots(self._folder / revision))

    def advise(self, service: str) -> Advice:
        """Blocking: the advice for the service's latest ready revision (else its latest)."""
        revision = self._store.latest_ready(service) or self._store.latest_created(service)
        if revision is None:
            self._store.service(service)  # NotFound, with its hint, for an unknown service
            raise NotFound(f"service {service!r} has no revision to advise on; deploy it first")
        return self.for_revision(revision)

    def for_revision(self, revision: RevisionRecord) -> Advice:
        return advise(
            service=revision.service,
            revision=revision.name,
            concurrency=revision.spec.container_concurrency,
            declared=declared_capacity(revision),
            inspection=self.inspection(revision.name),
        )


def declared_capacity(revision: RevisionRecord) -> Capacity | None:
    """The capacity the revision's start command asks for (its image's ENV and the user's
    env vars can set WEB_CONCURRENCY)."""
    artifact = revision.artifact
    if artifact is None:
        return None
    return command_capacity(artifact.argv, {**artifact.env, **revision.spec.env})


def capacity_warning(revision: RevisionRecord) -> str | None:
    """What a deploy says when the start command takes fewer requests at once than the
    revision's --concurrency (gunicorn 1 x 8 behind 80): a suggestion, never a change."""
    advice = advise(
        service=revision.service,
        revision=revision.name,
        concurrency=revision.spec.container_concurrency,
        declared=declared_capacity(revision),
        inspection=None,
    )
    for finding in advice.findings:
        if finding.kind == "capacity-below-concurrency":
            return finding.message
    return None
