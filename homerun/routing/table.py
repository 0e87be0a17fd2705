"""Pure request routing: Host header -> service -> tag -> revision, by traffic percent. A host is a
service's own (`svc.localhost`, `tag---svc.localhost`) or a domain mapped to a service
(`app.example.com`, which routes as the service's own host does)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from homerun.traffic import TAG_SEPARATOR


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
    # Domain mappings: a domain of the user's (lowercase, no trailing dot) -> the service.
    domains: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    service: str
    revision: str | None  # None: the service exists but nothing serves it yet
    tag: str | None = None
    # False when a roll chose among a split: the same host may get another revision next time.
    fixed: bool = True


class InvalidPort(ValueError):
    """A Host value whose port is not a TCP port (`svc.localhost:99999`, `svc.localhost:`)."""


def split_port(host: str) -> tuple[str, int | None]:
    """`svc.localhost:8080` -> ('svc.localhost', 8080); no port (`svc.localhost`, `[::1]`):
    None. InvalidPort when what follows the colon is not a port from 1 to 65535."""
    if host.endswith("]"):
        return host, None  # an IPv6 literal alone: its colons are not a port's
    name, separator, port = host.rpartition(":")
    if not separator:
        return host, None
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise InvalidPort(f"{port!r} is not a port (1-65535)")
    return name, int(port)


def parse_host(host: str, domain: str) -> tuple[str, str | None] | None:
    """`tag---svc.localhost:8080` -> ('svc', 'tag'); None when the host is not ours, or names
    no valid port. Whether a valid port is the router's is for the router to say (it alone
    knows where it listens)."""
    try:
        name, _ = split_port(host)
    except InvalidPort:
        return None
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


def mapped_host(host: str, domains: Mapping[str, str]) -> tuple[str, None] | None:
    """`app.example.com:443` -> (the service it is mapped to, None); None when no mapping
    names it (or its port is not a port). A mapped domain has no tag URLs, as on Cloud Run."""
    if not domains:
        return None
    try:
        name, _ = split_port(host)
    except InvalidPort:
        return None
    service = domains.get(name.rstrip(".").lower())
    return None if service is None else (service, None)


def select(
    table: RoutingTable, host: str, roll: float | Callable[[str], float]
) -> Selection | None:
    """Pick the revision for a request; `roll` is uniform in [0, 1) (injected randomness), or
    a function of the service name that gives one (asked only when a split is to be rolled)."""
    parsed = parse_host(host, table.domain) or mapped_host(host, table.domains)
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
    serving = [target for target in service.traffic if target.percent > 0]
    if len(serving) <= 1:
        return Selection(service_name, serving[0].revision if serving else None)
    point = (roll(service_name) if callable(roll) else roll) * 100
    cumulative = 0
    chosen = None
    for target in serving:
        cumulative += target.percent
        chosen = target.revision
        if point < cumulative:
            break
    return Selection(service_name, chosen, fixed=False)


class SelectionMemo:
    """select(), remembering per table the selections that needed no roll (a service not split,
    a tag): most requests then skip parsing the host and walking the table.

    Clients choose the Host values (case, a port), so at most `limit` are remembered per
    table; past that a host is selected every time.
    """

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._table: RoutingTable | None = None
        self._fixed: dict[str, Selection] = {}

    def select(
        self, table: RoutingTable, host: str, roll: float | Callable[[str], float]
    ) -> Selection | None:
        if table is not self._table:
            self._table = table  # a new snapshot: what was remembered may have changed
            self._fixed = {}
        selection = self._fixed.get(host)
        if selection is None:
            selection = select(table, host, roll)
            if selection is not None and selection.fixed and len(self._fixed) < self._limit:
                self._fixed[host] = selection
        return selection


SPLIT_STRATA = 100  # percentages are whole numbers: 100 strata fit every split exactly


class StratifiedRolls:
    """Rolls for traffic splits: per service, a shuffled bag of the 100 one-percent strata.

    Each request still lands at random, but every 100 consecutive requests to a service follow
    its percentages exactly, where independent rolls drift: with 2000 requests at 50/50 an
    independent roll misses by more than 3 points about once in 135 runs. The generator is
    injected (a seeded one in tests).
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._bags: dict[str, list[int]] = {}

    def __call__(self, service: str) -> float:
        bag = self._bags.get(service)
        if not bag:
            bag = list(range(SPLIT_STRATA))
            self._rng.shuffle(bag)
            self._bags[service] = bag
        stratum = bag.pop()
        return (stratum + self._rng.random()) / SPLIT_STRATA

    def forget(self, service: str) -> None:
        self._bags.pop(service, None)
