"""`homerun services advise`: a revision's measurements (the runtime inspector's snapshots)
and its start command, handed to the pure advisor (observe/advisor.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from homerun.build.capacity import command_capacity
from homerun.errors import NotFound
from homerun.model.cost import DEFAULT_PRICES, PriceTable, Usage
from homerun.model.inspection import Advice, Capacity, RampResult, RevisionInspection
from homerun.observe.advisor import advise
from homerun.observe.inspection import read_snapshots, summarize
from homerun.store import RevisionRecord, Store


class Advisor:
    def __init__(
        self,
        *,
        store: Store,
        folder: Path | None,
        prices: PriceTable = DEFAULT_PRICES,
        usage: Callable[[RevisionRecord], Usage | None] = lambda _: None,
    ) -> None:
        self._store = store
        self._folder = folder  # HOMERUN_HOME/inspect; None: the inspector is off
        self._prices = prices
        # What the revision's instances did so far (LiveRevisions.usage), for its cost.
        self._usage = usage
        # The latest ramp of each revision (`services advise --ramp`), until the daemon stops:
        # describe, the dashboard and a later `services advise` show it.
        self._ramps: dict[str, RampResult] = {}

    def remember(self, revision: str, ramp: RampResult) -> None:
        self._ramps[revision] = ramp

    def inspection(self, revision: str, port: int | None = None) -> RevisionInspection | None:
        """Blocking (reads a few small files): what the revision's instances measured (only
        the one on `port`, if given: the ramp's private instance)."""
        if self._folder is None:
            return None
        snapshots = read_snapshots(self._folder / revision)
        return summarize(s for s in snapshots if port is None or s.port == port)

    def advise(self, service: str) -> Advice:
        """Blocking: the advice for the service's latest ready revision (else its latest)."""
        revision = self._store.latest_ready(service) or self._store.latest_created(service)
        if revision is None:
            self._store.service(service)  # NotFound, with its hint, for an unknown service
            raise NotFound(f"service {service!r} has no revision to advise on; deploy it first")
        return self.for_revision(revision)

    def for_revision(
        self,
        revision: RevisionRecord,
        *,
        port: int | None = None,
        ramp: RampResult | None = None,
        target_rps: float | None = None,
    ) -> Advice:
        """Blocking: the advice, from what the revision's instances (or the one on `port`)
        measured and, after `services advise --ramp`, the ramp's steps."""
        return advise(
            service=revision.service,
            revision=revision.name,
            concurrency=revision.spec.container_concurrency,
            declared=declared_capacity(revision),
            inspection=self.inspection(revision.name, port),
            ramp=ramp or self._ramps.get(revision.name),
            target_rps=target_rps,
            usage=self._usage(revision),
            prices=self._prices,
            cpu=revision.spec.cpu,
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
