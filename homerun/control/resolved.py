"""A service's traffic block as it routes now: LATEST read as the latest ready revision."""

from __future__ import annotations

from homerun.store import Store
from homerun.traffic import DEFAULT_TRAFFIC, ResolvedTarget, resolve


def resolved_traffic(store: Store, service: str) -> list[ResolvedTarget]:
    record = store.service(service)
    latest = store.latest_ready(service)
    return resolve(record.traffic or DEFAULT_TRAFFIC, latest.name if latest else None)


def routed_revisions(store: Store) -> set[str]:
    """Revisions any service sends traffic to or tags."""
    return {
        target.revision
        for record in store.services()
        for target in resolved_traffic(store, record.name)
        if target.revision
    }
