"""A loopback port that a NAT rule redirects (as a removed container's leftover rule does) is
given to no instance: asked for as the container port, the instance gets another, and answers.

The rule is this test's own: a chain of its own in the nat table, jumped to from OUTPUT for one
free port, redirecting to a closed loopback port; both go at the end, whatever happens."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import free_port

from .harness import APPS, running_platform

pytestmark = pytest.mark.e2e


def iptables(*arguments: str) -> None:
    subprocess.run(["iptables", "-w", "-t", "nat", *arguments], check=True, capture_output=True)


@pytest.fixture
def redirected_port() -> Iterator[int]:
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.skip("adding a NAT rule needs root and iptables")
    port, closed = free_port(), free_port()
    chain = f"HOMERUN-TEST-{uuid.uuid4().hex[:8].upper()}"
    jump = ["OUTPUT", "-d", "127.0.0.1/32", "-p", "tcp", "--dport", str(port), "-j", chain]
    iptables("-N", chain)
    try:
        iptables("-A", chain, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(closed))
        iptables("-A", *jump)
        try:
            yield port
        finally:
            iptables("-D", *jump)
    finally:
        iptables("-F", chain)
        iptables("-X", chain)


def test_a_redirected_container_port_is_not_given_to_an_instance(
    tmp_path: Path, venv_cache: Path, redirected_port: int
) -> None:
    # Without the sandbox: the instance shares the host's loopback, which the rule catches.
    with running_platform(tmp_path / "home", venv_cache, {"sandbox": "off"}) as own:
        own.deploy_ok("nat-avoided", APPS / "streaming", "--port", str(redirected_port))
        report = own.env_of("nat-avoided")
        assert report["PORT"] != str(redirected_port), report
        logged = own.run("logs", "read", "nat-avoided", check=True).stdout
        assert f"connections to 127.0.0.1:{redirected_port} are sent elsewhere" in logged, logged
