"""The states a revision and an instance go through."""

from __future__ import annotations

from enum import StrEnum


class RevisionStatus(StrEnum):
    """Knative's Ready condition of a revision: Unknown while its deploy runs, then True or
    False for good (a revision never goes back)."""

    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"


class InstanceState(StrEnum):
    """An instance starts, serves while ready, then drains its requests before it stops."""

    STARTING = "starting"
    READY = "ready"
    # Its readiness probe fails: out of routing until it passes again (Knative's not-ready pod).
    UNREADY = "unready"
    DRAINING = "draining"
