"""`homerun domain-mappings`: a domain of the user's routed to a service, as gcloud's `run
domain-mappings` and Knative's DomainMapping do. The router answers the domain as it answers
the service's own host (its traffic split, its access check); a mapping outlives its service's
deletion (it is then not ready and the router answers 404), as on Cloud Run.

HTTPS for the domain comes from the certificates the HTTPS listener already has: a certificate
in config.yaml's `tls-certificates-dir` that names the domain, else the default one
(`tls-cert-file`), else one homerun's local authority issues at the first handshake (as it
does for services' own hosts). Certificates from a public authority by ACME are not made here:
docs/guide.md says how they would fit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from homerun.access.certificates import certificate_covering
from homerun.config import Paths, Settings
from homerun.errors import InvalidSpec
from homerun.mapping_store import DomainMappingRecord, MappingStore
from homerun.model.domains import validate_domain
from homerun.model.views import DomainMappingView
from homerun.observe.logs import LogStore, platform_entry
from homerun.routing.hosts import router_address
from homerun.store import Store


class DomainMappings:
    def __init__(
        self,
        *,
        settings: Settings,
        paths: Paths,
        mappings: MappingStore,
        store: Store,
        logs: LogStore,
        routes_changed: Callable[[], None],
        wall_clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._paths = paths
        self._mappings = mappings
        self._store = store
        self._logs = logs
        self._routes_changed = routes_changed
        self._wall_clock = wall_clock

    def close(self) -> None:
        self._mappings.close()

    def create(
        self, domain: str, service: str, *, force_override: bool = False
    ) -> DomainMappingView:
        domain = validate_domain(domain, self._settings.domain)
        self._store.service(service)  # NotFound, with a suggestion, for a service not there
        existing = self._mappings.find(domain)
        if existing is not None and existing.service != service and not force_override:
            raise InvalidSpec(
                f"domain {domain} is already mapped to service {existing.service}; pass "
                f"--force-override to map it to {service} instead, or "
                f"`homerun domain-mappings delete --domain {domain}` first"
            )
        if existing is None or existing.service != service:
            self._mappings.put(domain, service, self._wall_clock())
            self._routes_changed()
            moved = f" (it was mapped to {existing.service})" if existing else ""
            self._logs.emit(platform_entry(service, f"Domain {domain} mapped to {service}{moved}"))
        return self.describe(domain)

    def describe(self, domain: str) -> DomainMappingView:
        return self._view(self._mappings.mapping(_lookup(domain)))

    def list(self, service: str | None = None) -> list[DomainMappingView]:
        return [
            self._view(record)
            for record in self._mappings.mappings()
            if service is None or record.service == service
        ]

    def delete(self, domain: str) -> None:
        record = self._mappings.mapping(_lookup(domain))
        self._mappings.delete(record.domain)
        self._routes_changed()
        self._logs.emit(platform_entry(record.service, f"Domain mapping {record.domain} deleted"))

    def _view(self, record: DomainMappingRecord) -> DomainMappingView:
        settings = self._settings
        reason = ""
        if not self._store.has_service(record.service):
            reason = f"service {record.service} does not exist (it was deleted)"
        elif self._store.latest_ready(record.service) is None:
            reason = f"service {record.service} has no ready revision yet"
        https_url = None
        if settings.https_port:
            https_url = f"https://{record.domain}" + _port(settings.https_port, 443)
        address = router_address(settings.listen)
        return DomainMappingView(
            domain=record.domain,
            service=record.service,
            created_at=record.created_at,
            ready=not reason,
            reason=reason,
            url=f"http://{record.domain}" + _port(settings.port, 80),
            https_url=https_url,
            certificate=self._certificate(record.domain),
            reach=(
                f"the router listens on {settings.listen}:{settings.port}: point "
                f"{record.domain} at this machine (a DNS A/AAAA record, or a line "
                f"'{address} {record.domain}' in /etc/hosts), or ask with curl --resolve "
                f"{record.domain}:{settings.port}:{address}"
            ),
        )

    def _certificate(self, domain: str) -> str:
        settings = self._settings
        if not settings.https_port:
            return "none: no HTTPS listener (set https-port in config.yaml)"
        if settings.tls_certificates_dir:
            folder = Path(settings.tls_certificates_dir).expanduser()
            found = certificate_covering(folder, domain)
            if found is not None:
                return f"{found} (tls-certificates-dir)"
        if settings.tls_cert_file:
            return (
                f"the default certificate {settings.tls_cert_file} (tls-cert-file), which "
                f"may not name {domain}: put a certificate for it in tls-certificates-dir"
            )
        return (
            f"issued for {domain} by homerun's local authority at the first handshake: "
            f"clients verify it once they trust {self._paths.tls / 'ca.crt'}"
        )


def _lookup(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def _port(port: int, default: int) -> str:
    return "" if port == default else f":{port}"
