"""The hosts file that makes every service host resolve to the router, in /etc/hosts form: read
by instances' Python (runtime/_site/sitecustomize.py), and fit to be a sandbox's /etc/hosts."""

from __future__ import annotations

from collections.abc import Iterable

from homerun.routing.table import RoutingTable
from homerun.traffic import TAG_SEPARATOR

# Where a router listening on every address is reached from this machine.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
# Names per line: glibc reads a line of any length, but some readers stop at 1024 bytes.
_NAMES_PER_LINE = 8


def service_hosts(table: RoutingTable) -> list[str]:
    """Every host the table answers at: each service's, each of its tags', each mapped domain."""
    hosts = []
    for name in sorted(table.services):
        hosts.append(f"{name}.{table.domain}")
        tags = sorted({target.tag for target in table.services[name].traffic if target.tag})
        hosts += [f"{tag}{TAG_SEPARATOR}{name}.{table.domain}" for tag in tags]
    return hosts + sorted(table.domains)


def router_address(listen: str) -> str:
    """The address a local client reaches the router at, given its `listen` setting."""
    return _WILDCARDS.get(listen, listen)


def hosts_text(hosts: Iterable[str], address: str, router: str) -> str:
    """/etc/hosts lines: localhost as usual, then every host at `address`."""
    names = list(hosts)
    lines = [
        f"# Written by homerun: service hosts -> the router at {router}. Rewritten (renamed",
        "# over) whenever services or tags come and go.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    for start in range(0, len(names), _NAMES_PER_LINE):
        lines.append(f"{address}\t" + " ".join(names[start : start + _NAMES_PER_LINE]))
    return "\n".join(lines) + "\n"
