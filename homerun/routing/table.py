"""Pure request routing: Host header -> service -> tag -> revision, by traffic percent."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrafficTarget:
    revision: str
    percent: int
    tag: str | None = None


@dataclass(frozen=True)
class ServiceRoutes:
    name: str
    traffic: tuple[TrafficTarget, ...] = ()


@dataclass(frozen=True)
class RoutingTable:
    """An immutable snapshot; the daemon swaps in a new one whenever traffic changes."""

    domain: str
    services: dict[str, ServiceRoutes] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    service: str
    revision: str | None  # None: the service exists but nothing serves it yet
    tag: str | None = None


TAG_SEPARATOR = "---"


def parse_host(host: str, domain: str) -> tuple[str, str | None] | None:
    """`tag---svc.localhost:8080` -> ('svc', 'tag'); None when the host is not ours."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.rstrip(".").lower()
    suffix = "." + domain.lower()
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    if not label or "." in label:
        return None
    tag, sep, service = label.partition(TAG_SEPARATOR)
    if sep:
        return (service, tag) if service and tag else None
    return (label, None)


def select(table: RoutingTable, host: str, roll: float) -> Selection | None:
    """Pick the revision for a request; `roll` is uniform in [0, 1) (injected randomness)."""
    parsed = parse_host(host, table.domain)
    if parsed is None:
        return None
    service_name, tag = parsed
    service = table.services.get(service_name)
    if service is None:
        return None
    if tag is not None:
        for target in service.traffic:
            if target.tag == tag:
                return Selection(service_name, target.revision, tag)
        return None
    point = roll * 100
    cumulative = 0
    chosen = None
    for target in service.traffic:
        if target.percent <= 0:
            continue
        cumulative += target.percent
        chosen = target.revision
        if point < cumulative:
            break
    return Selection(service_name, chosen)
