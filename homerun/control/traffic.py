"""`homerun services update-traffic`, and what follows any change of a service's traffic."""

from __future__ import annotations

from homerun.control.live import LiveRevisions
from homerun.control.resolved import resolved_traffic
from homerun.control.revisions import Revisions
from homerun.control.secrets import SecretValues
from homerun.errors import InvalidSpec
from homerun.observe.logs import LogStore, platform_entry
from homerun.store import Store
from homerun.traffic import TrafficUpdate, resolve, update_traffic


class Traffic:
    def __init__(
        self,
        *,
        store: Store,
        logs: LogStore,
        live: LiveRevisions,
        revisions: Revisions,
        secrets: SecretValues,
    ) -> None:
        self._store = store
        self._logs = logs
        self._live = live
        self._revisions = revisions
        self._secrets = secrets

    def update(self, service: str, update: TrafficUpdate) -> None:
        """All checks first, then one write, then the new routing table; any error leaves the
        traffic as it was."""
        record = self._store.service(service)
        revisions = self._store.revisions(service)
        edited = update_traffic(
            record.traffic,
            update,
            service=service,
            revisions={revision.name: revision.status for revision in revisions},
        )
        latest = self._store.latest_ready(service)
        for target in resolve(edited, latest.name if latest else None):
            if target.revision is None:
                raise InvalidSpec(
                    f"LATEST: {service} has no ready revision to send traffic or a tag to"
                )
        for name in {target.revision for target in resolve(edited, None) if target.revision}:
            self._secrets.check(self._store.revision(name).spec)
        self._store.set_traffic(service, edited)
        self.changed(service)
        summary = ", ".join(
            f"{target.percent}% {target.revision}" + (f" (tag {target.tag})" if target.tag else "")
            for target in resolved_traffic(self._store, service)
        )
        self._logs.emit(platform_entry(service, f"Traffic set: {summary}"))

    def changed(self, service: str) -> None:
        """After the service's traffic block changed in the store: route by it, and delete
        revisions it left idle past the retention count."""
        self._live.rebuild()
        self._revisions.collect_garbage(service)
