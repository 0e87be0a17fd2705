"""What telemetry and the metrics read of a running revision, as protocols: observe never
imports scaling (scaling's RevisionUnit fits `RevisionSource`; the daemon hands it over)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from homerun.model.states import InstanceState


class InstanceSource(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int: ...  # its main process: CPU and memory are summed over its tree


class RequestSource(Protocol):
    """The router's counts for a revision (its throttler)."""

    @property
    def in_flight(self) -> int: ...

    @property
    def queue_length(self) -> int: ...

    @property
    def waits(self) -> Sequence[float]: ...  # seconds waited for a slot, the latest, newest last

    @property
    def wait_count(self) -> int: ...  # waits ever recorded (`waits` keeps the latest)


class RevisionSource(Protocol):
    @property
    def service(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def concurrency(self) -> int: ...  # requests one instance takes at once

    @property
    def throttler(self) -> RequestSource: ...

    @property
    def instances(self) -> Sequence[InstanceSource]: ...

    def count(self, state: InstanceState) -> int: ...

    @property
    def startup_seconds(self) -> Sequence[float]: ...  # of the latest starts, newest last

    @property
    def startups(self) -> int: ...  # instances that became ready, ever

    @property
    def cold_starts(self) -> int: ...  # instances started while none was ready, ever

    @property
    def memory_exceeded(self) -> int: ...  # instances ended past their memory limit, ever

    @property
    def overloaded_requests(self) -> int: ...  # answered 429 at max-instances, ever

    @property
    def liveness_restarts(self) -> int: ...  # instances replaced for failing liveness, ever
