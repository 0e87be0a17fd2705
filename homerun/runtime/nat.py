"""Loopback ports whose connections a NAT rule sends elsewhere, so that no instance is given one.

A container engine publishes a container's port with a DNAT rule in the nat table (podman's
netavark: `-d 127.0.0.1/32 --dport P -j DNAT --to-destination 10.88.0.X:8080`). When a
container goes in a way its engine's cleanup misses (podman issue 27516), the rule stays:
every later connection to 127.0.0.1:P goes to an address where nothing answers, and an
instance given P listens but is never reached ("did not listen on $PORT"). Such ports are
read from `iptables-save -t nat` (root only; elsewhere, or without iptables, there are none)
and avoided. The rules are the engine's: homerun leaves them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import Callable

_READ_SECONDS = 10.0
# Destinations a connection to 127.0.0.1 matches: loopback, or any (no -d).
_LOOPBACK = ("127.0.0.1/32", "127.0.0.0/8", "127.0.0.1")


def redirected_ports(rules: str) -> frozenset[int]:
    """The TCP ports that rules of `iptables-save` output send elsewhere on 127.0.0.1: a rule
    for the port (destination loopback or any) whose target is DNAT or REDIRECT, or a chain
    that leads to one (podman's rules for a port jump to a chain of the container's)."""
    parsed = [_options(line) for line in rules.splitlines() if line.startswith("-A ")]
    redirecting = {"DNAT", "REDIRECT"}
    while True:  # chains with a rule that redirects, or jumps to one that does
        more = {rule["-A"] for rule in parsed if rule.get("-j") in redirecting} - redirecting
        if not more:
            break
        redirecting |= more
    ports: set[int] = set()
    for rule in parsed:
        if rule.get("-j") not in redirecting or rule.get("-p", "tcp") != "tcp":
            continue
        destination = rule.get("-d")
        if "!-d" in rule or (destination is not None and destination not in _LOOPBACK):
            continue
        for spec in (rule.get("--dport"), rule.get("--dports")):
            if spec:
                ports |= _port_list(spec)
    return frozenset(ports)


def _options(line: str) -> dict[str, str]:
    """A rule's options and their values; a negated one (`! -d ADDRESS`) is kept as `!-d`."""
    words = line.split()
    return {
        ("!" + word if index and words[index - 1] == "!" else word): value
        for index, (word, value) in enumerate(zip(words, words[1:], strict=False))
    }


def _port_list(spec: str) -> set[int]:
    """`8080`, `8080:8090` or `80,443,8000:8002` as ports (at most 65,535 of them)."""
    ports: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition(":")
        with contextlib.suppress(ValueError):
            first, last = int(low), int(high or low)
            ports.update(range(max(first, 1), min(last, 65535) + 1))
    return ports


def read_nat_rules() -> str:
    """`iptables-save -t nat`, or "" where it cannot be read (no iptables, not root)."""
    program = shutil.which("iptables-save")
    if program is None:
        return ""
    try:
        done = subprocess.run(
            [program, "-t", "nat"],
            capture_output=True,
            text=True,
            timeout=_READ_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def unredirected_server(host: str, redirected: frozenset[int]) -> socket.socket:
    """A listening TCP socket on `host` at a port the kernel picked that none of `redirected`
    is (an ephemeral bind may be given a port a leftover rule sends elsewhere, where no client
    of ours would ever reach it)."""
    while True:
        server = socket.create_server((host, 0))
        if server.getsockname()[1] not in redirected:
            return server
        server.close()


class RedirectedPorts:
    """The redirected ports as last read: `ports()` answers at once (the supervisor asks when
    it picks a port), `refresh()` reads again off the event loop."""

    def __init__(self, read: Callable[[], str] = read_nat_rules) -> None:
        self._read = read
        self._ports: frozenset[int] = frozenset()

    def ports(self) -> frozenset[int]:
        return self._ports

    async def refresh(self) -> None:
        self._ports = redirected_ports(await asyncio.to_thread(self._read))

    async def keep_fresh(self, interval: float) -> None:
        """Read every `interval` seconds until cancelled (the daemon stops)."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval)
